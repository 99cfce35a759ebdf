"""Timing a `tiers` command as a child process: wall time, and its resident memory per stage.

The child prints one plain progress line per finished step (`ingest 3/13 balances/2025-03`,
`evaluate 1/1 icbc_star 2025-06`) when its output is not a terminal. A sampler reads the child's
VmRSS from /proc every 50 ms and charges each sample to the stage under way: `start-up` (Prefect's
temporary server, planning, the reference files) until the first line, then `ingest` until the last
ingest line, then `evaluate` (with the publish) until the last evaluate line, then `finish`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

TIERS = Path(sys.executable).with_name("tiers")
_STEP = re.compile(r"^(ingest|evaluate) (\d+)/(\d+) ")


@dataclass
class StageUse:
    seconds: float = 0.0
    peak_mb: float = 0.0


@dataclass
class Measured:
    seconds: float
    peak_mb: float  # the child's own peak (getrusage), which sampling can miss by a few ms
    stages: dict[str, StageUse] = field(default_factory=dict)


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_tiers(*arguments: str, env: dict[str, str] | None = None) -> Measured:
    """Run `tiers ARGUMENTS` (with ``env`` added to the environment); fails loudly if the command fails."""
    started = time.perf_counter()
    child = subprocess.Popen([str(TIERS), *arguments], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, **(env or {})})
    stage = {"name": "start-up", "since": started}
    stages: dict[str, StageUse] = {}

    def enter(name: str) -> None:
        now = time.perf_counter()
        stages.setdefault(stage["name"], StageUse()).seconds += now - stage["since"]
        stage.update(name=name, since=now)

    def sample() -> None:
        while child.poll() is None:
            use = stages.setdefault(stage["name"], StageUse())
            use.peak_mb = max(use.peak_mb, _rss_mb(child.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for line in child.stdout:
        step = _STEP.match(line)
        if step:
            name, done, total = step.group(1), int(step.group(2)), int(step.group(3))
            if stage["name"] != name and stage["name"] in ("start-up", "ingest"):
                enter(name)
            if done == total:
                enter("evaluate" if name == "ingest" else "finish")
    _, status, usage = os.wait4(child.pid, 0)  # this child's rusage, not every child's so far
    seconds = time.perf_counter() - started
    enter("finish")
    sampler.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"tiers {' '.join(arguments)} failed with exit status {child.returncode}")
    return Measured(seconds, usage.ru_maxrss / 1024, stages)
