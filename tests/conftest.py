"""Shared fixtures. Prefect: one temporary API for the whole session, quiet and offline."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
# Tests call flow bodies with .fn(): their tasks then run outside a flow run, which is expected here.
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

PROJECT = Path(__file__).resolve().parent.parent
TIERS = Path(sys.executable).with_name("tiers")


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """A session-wide temporary Prefect API, for tests that call flows in-process."""
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with temporary_settings({PREFECT_RESULTS_LOCAL_STORAGE_PATH: tmp_path_factory.mktemp("prefect-results")}):
        with prefect_test_harness(server_startup_timeout=90):
            yield


@pytest.fixture
def tiers_cli(tmp_path):
    """Run the installed ``tiers`` console command in a subprocess, as a user would."""
    import subprocess

    def run(*args: str, cwd: Path | None = None, check: bool = False) -> subprocess.CompletedProcess:
        env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
        done = subprocess.run(
            [str(TIERS), *args], cwd=cwd or tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        if check and done.returncode != 0:
            raise AssertionError(f"tiers {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    return run
