"""Timing a `tiers` command as a child process: wall time and that child's own peak resident memory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

TIERS = Path(sys.executable).with_name("tiers")


def run_tiers(*arguments: str) -> tuple[float, float]:
    """Run `tiers ARGUMENTS`; return (seconds, peak RSS in MB). Fails loudly if the command fails."""
    started = time.perf_counter()
    child = subprocess.Popen([str(TIERS), *arguments], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)  # this child's rusage, not every child's so far
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"tiers {' '.join(arguments)} failed with exit status {child.returncode}")
    return seconds, usage.ru_maxrss / 1024
