"""Operational failures are plain (issue 11, point 8) and customer data stays private (point 10).

CI runs as root, where file modes deny nothing, so faults are injected where the run meets the machine:
a listing that is refused, a staging folder on a read-only file system, a disk that fills while a
snapshot is written. Each gives one line naming the path and the cause, a non-zero exit, nothing
published and nothing left staged. Signals and a damaged database go through the installed command.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from test_reliability import PROGRAM, TIERS, cli_env, copy_landing, published_bytes, published_rows
from stores import snapshots
from interfaces.cli import app

MONTHS = ["2025-05", "2025-06"]


@pytest.fixture(scope="module")
def published(prefect_harness, tmp_path_factory):
    """A warehouse with 2025-05..2025-06 published, to copy for each fault."""
    from flows.runs import backfill

    base = tmp_path_factory.mktemp("faults").resolve()
    landing = copy_landing(base / "landing")
    backfill.fn(str(landing), MONTHS[0], MONTHS[-1], str(base / "warehouse"), [PROGRAM])
    return landing, base / "warehouse"


def _copy(published, tmp_path) -> tuple[Path, Path]:
    landing, warehouse = published
    shutil.copytree(warehouse, tmp_path / "warehouse")
    return landing, tmp_path / "warehouse"


def _rerun(landing: Path, warehouse: Path):
    return CliRunner().invoke(app, ["run", "--input", str(landing), "--month", MONTHS[0], "--program", PROGRAM,
                                    "--warehouse", str(warehouse)])


def _refused_listing(path):
    def fault(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
    return fault


def _read_only_staging(warehouse):
    def fault(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(warehouse / "staging"))
    return fault


def _disk_full(*args, **kwargs):
    raise duckdb.IOException(f'IO Error: Could not write file "data.parquet": {os.strerror(errno.ENOSPC)}')


@pytest.mark.parametrize("fault", ["permission denied", "read-only file system", "disk full"])
def test_an_operational_fault_is_one_plain_line_and_publishes_nothing(published, tmp_path, monkeypatch, fault):
    from transforms import evaluate, landing as landing_module

    landing, warehouse = _copy(published, tmp_path)
    before = published_bytes(warehouse)
    if fault == "permission denied":
        monkeypatch.setattr(landing_module, "month_source", _refused_listing(landing / "balances"))
        words = [str(landing / "balances"), "Permission denied"]
    elif fault == "read-only file system":
        monkeypatch.setattr(snapshots, "commit_run", _read_only_staging(warehouse))
        words = [str(warehouse / "staging"), "Read-only file system"]
    else:
        monkeypatch.setattr(evaluate, "write_snapshot", _disk_full)
        words = ["data.parquet", "No space left on device"]

    done = _rerun(landing, warehouse)

    assert done.exit_code == 1, done.output
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert all(word in lines[0] for word in words) and "internal error" not in lines[0], lines[0]
    assert published_bytes(warehouse) == before
    assert not list((warehouse / "staging").glob("run-*"))
    assert not (warehouse / "publishing.json").exists()


def test_a_warehouse_that_is_a_file_is_refused_plainly(tiers_cli, tmp_path):
    landing = copy_landing(tmp_path / "landing")
    not_a_folder = tmp_path / "warehouse"
    not_a_folder.write_text("")
    done = tiers_cli("run", "--input", str(landing), "--month", "2025-06", "--warehouse", str(not_a_folder))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: {not_a_folder}: --warehouse names a file; expected a folder (it is created when missing)"]


@pytest.mark.slow
@pytest.mark.parametrize("sent, code, word", [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                               (signal.SIGINT, 130, "interrupted (SIGINT)")])
def test_a_signal_mid_run_stops_it_plainly_with_nothing_published(published, prefect_harness, tmp_path, sent, code,
                                                                   word):
    from prefect.settings import PREFECT_API_URL

    landing, warehouse = _copy(published, tmp_path)
    before = published_bytes(warehouse)
    env = cli_env(tmp_path / "prefect-home", PREFECT_API_URL=PREFECT_API_URL.value())
    proc = subprocess.Popen([str(TIERS), "run", "--input", str(landing), "--month", MONTHS[0], "--program", PROGRAM,
                             "--warehouse", str(warehouse)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    # Once it ingests, the run holds the lock and has recorded its cascade: stop it there.
    for line in proc.stdout:
        if line.startswith("ingest 2/"):
            break
    proc.send_signal(sent)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(word), stderr
    assert published_bytes(warehouse) == before
    assert not list((warehouse / "staging").glob("run-*"))


def test_a_damaged_database_is_reported_with_how_to_rebuild_it(published, tiers_cli, tmp_path):
    """The database holds nothing the landing folder and the snapshots cannot rebuild: moved aside, the
    next run re-ingests what it needs and publishes what a warehouse that never lost it publishes."""
    landing, warehouse = _copy(published, tmp_path)
    reference = published_rows(published[1], MONTHS)
    database = warehouse / "tiers.duckdb"
    database.write_bytes(b"not a database" * 1000)

    done = tiers_cli("run", "--input", str(landing), "--month", MONTHS[-1], "--program", PROGRAM,
                     "--warehouse", str(warehouse))
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {database}: the warehouse database is damaged") and "mv " in line, line

    database.unlink()
    Path(f"{database}.wal").unlink(missing_ok=True)
    rebuilt = tiers_cli("run", "--input", str(landing), "--month", MONTHS[-1], "--program", PROGRAM,
                        "--warehouse", str(warehouse))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert published_rows(warehouse, MONTHS) == reference


def test_warehouse_files_are_not_readable_by_other_users(tiers_cli, tmp_path):
    landing = copy_landing(tmp_path / "landing")
    warehouse = tmp_path / "warehouse"
    done = tiers_cli("backfill", "--input", str(landing), "--from", "2025-06", "--to", "2025-06", "--program", PROGRAM,
                     "--warehouse", str(warehouse))
    assert done.returncode == 0, done.stderr
    paths = [warehouse, *warehouse.rglob("*")]
    assert any(p.suffix == ".parquet" for p in paths) and (warehouse / "tiers.duckdb") in paths
    readable = [f"{p} {oct(p.stat().st_mode)}" for p in paths if p.stat().st_mode & 0o007]
    assert readable == []


def test_prefect_keeps_no_customer_data(prefect_harness, tmp_path):
    """A real flow run, its logs read back from Prefect's API: no line holds a customer id, no task keeps a
    persisted result; a failing run's logged error names no customer either."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from flows import runs, tasks
    from flows.runs import month_end
    from ground.errors import BadRowsError

    landing = copy_landing(tmp_path / "landing")
    customers = [line.split(",")[0] for line in (landing / "customers.csv").read_text().splitlines()[1:]]
    assert len(customers) >= 5
    state = month_end(str(landing), "2025-06", str(tmp_path / "warehouse"), [PROGRAM], return_state=True)
    assert state.is_completed()
    # A failing one: a duplicate balance row of a known customer.
    balances = landing / "balances" / "2025-06.csv"
    lines = balances.read_text().splitlines()
    balances.write_text("\n".join([*lines, lines[1]]) + "\n")
    failed = month_end(str(landing), "2025-06", str(tmp_path / "warehouse"), [PROGRAM], return_state=True)
    assert failed.is_failed()
    with pytest.raises(BadRowsError):
        failed.result()

    async def logs(flow_run_id):
        async with get_client() as client:
            return await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))

    messages = [log.message for run in (state, failed) for log in asyncio.run(logs(run.state_details.flow_run_id))]
    assert messages, "the flow runs logged nothing: the check would prove nothing"
    leaked = [m for m in messages for c in customers if c in m]
    assert leaked == []
    for task in (tasks.ingest_reference, tasks.ingest_month, tasks.evaluate, tasks.export_buckets,
                 tasks.stage_buckets):
        assert task.persist_result is False, task.name
    for flow in (runs.month_end, runs.backfill):
        assert flow.persist_result is False, flow.name
