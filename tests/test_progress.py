"""Progress of long runs: plain lines when not a terminal, bars per stage in one."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from ground import progress

GOLDEN = Path(__file__).resolve().parent / "golden"


def test_a_run_reports_every_ingest_and_evaluation_as_plain_lines(prefect_harness, tmp_path):
    from flows.runs import backfill

    buffer = io.StringIO()
    with progress.reporting(Console(file=buffer, force_terminal=False, width=200)):
        backfill.fn(str(GOLDEN / "icbc_money" / "landing"), "2025-06", "2025-06", str(tmp_path / "wh"), ["icbc_star"])
    lines = buffer.getvalue().splitlines()

    # One reference step, six months of balances and of transactions, one evaluation.
    assert lines[0] == "ingest 1/13 reference files"
    assert "ingest 2/13 balances/2025-01" in lines and "ingest 13/13 transactions/2025-06" in lines
    assert lines[-1] == "evaluate 1/1 icbc_star 2025-06"
    assert len(lines) == 14


def test_a_terminal_gets_a_bar_per_stage():
    buffer = io.StringIO()
    with progress.reporting(Console(file=buffer, force_terminal=True, width=100)):
        reporter = progress.current()
        assert isinstance(reporter, progress.BarProgress)
        reporter.stage("ingest", 2)
        reporter.stage("evaluate", 1)
        reporter.advance("ingest", "balances/2025-06")
        reporter.advance("ingest", "transactions/2025-06")
        reporter.advance("evaluate", "icbc_star 2025-06")
    shown = buffer.getvalue()
    assert "ingest" in shown and "2/2" in shown and "evaluate" in shown and "1/1" in shown
    assert isinstance(progress.current(), progress.PlainProgress)  # restored after the command
