"""``--executor dask``: the customers of each program-month evaluated in buckets on a Dask cluster of two
worker processes publish the same snapshots as a single-process run, row for row, in the same order.

- Through the command, on the temporary local cluster: a synthetic bank of 3,000 customers, every
  program, 2025-05..2025-07 (ICBC's June review with its downgrades and buffers, then held until the
  next review; Bohai's and Bank of China's monthly buffers; credit caps), compared with a
  single-process run; no worker process outlives the command.
- In-process, on a cluster the test starts (``--dask-address``): 8 buckets for 6 customers, so some
  buckets are empty; a failing bucket is one plain error, whole, with its cause; a cluster without
  workers, or one that loses every worker while buckets are pending, fails after
  TIERS_DASK_WORKER_TIMEOUT naming the scheduler. (A real `dask scheduler` and `dask worker`
  processes, and a served deployment: tests/test_deployments.py.)
- An unreachable ``--dask-address`` is one plain line on stderr.
- ``transforms.partitioned`` alone, without Dask: any number of buckets gives the published file.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import time
import uuid
from pathlib import Path

import duckdb
import psutil
import pytest

from stores import snapshots
from ground.errors import TiersError
from ground.months import Month
from stores.warehouse import Warehouse
from transforms import runner

GOLDEN = Path(__file__).resolve().parent / "golden"
# Every shipped program: the generated landing carries the data of each (card points and scores, USD rates).
PROGRAMS = ["boc_vip", "bohai_wealth", "cgb_card_star", "icbc_star",
            "private_banking_8m", "private_banking_cbrc", "private_banking_ubs"]


# -- helpers ----------------------------------------------------------------------------------------

def icbc_run(warehouse: Warehouse):
    """A run's context for evaluating icbc_star in ``warehouse`` (its months already ingested)."""
    from flows import tasks

    return tasks.run_context(warehouse, tasks.rules_dir_programs(["icbc_star"]), GOLDEN / "icbc_buffers" / "landing")


def snapshot_files(warehouse: Path) -> dict[str, Path]:
    """program=P/as_of=D -> the published data file."""
    return {str(p.parent.relative_to(warehouse / "snapshots")): p
            for p in sorted((warehouse / "snapshots").rglob(snapshots.SNAPSHOT_FILE))}


def assert_same_snapshots(expected: Path, actual: Path) -> int:
    """Every published snapshot of ``actual`` equals ``expected``'s: the same files, columns, types, rows and
    row order. Returns the rows compared."""
    want, got = snapshot_files(expected), snapshot_files(actual)
    assert sorted(got) == sorted(want) and want
    compared = 0
    con = duckdb.connect()
    for key in want:
        a, b = str(want[key]), str(got[key])
        describe = "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet($f))"
        assert con.execute(describe, {"f": b}).fetchall() == con.execute(describe, {"f": a}).fetchall(), key
        [(only_a, only_b, count_a, count_b)] = con.execute(
            "SELECT (SELECT count(*) FROM (FROM read_parquet($a) EXCEPT ALL FROM read_parquet($b))), "
            "(SELECT count(*) FROM (FROM read_parquet($b) EXCEPT ALL FROM read_parquet($a))), "
            "(SELECT count(*) FROM read_parquet($a)), (SELECT count(*) FROM read_parquet($b))",
            {"a": a, "b": b},
        ).fetchall()
        assert (only_a, only_b, count_b) == (0, 0, count_a), key
        # The same rows in the same order (NULLs included): the file as read, row by row.
        assert con.execute("FROM read_parquet($f)", {"f": b}).fetchall() == \
            con.execute("FROM read_parquet($f)", {"f": a}).fetchall(), key
        compared += count_a
    return compared


def reasons(warehouse: Path, program: str) -> set[str]:
    files = [str(p) for key, p in snapshot_files(warehouse).items() if key.startswith(f"program={program}/")]
    return {r for (r,) in duckdb.execute("SELECT DISTINCT reason FROM read_parquet($f)", {"f": files}).fetchall()}


def processes_marked(marker: str) -> list[psutil.Process]:
    """Live processes whose environment carries ``marker`` (the command and everything it started)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("TIERS_TEST_MARKER") == marker and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def user_environment(monkeypatch):
    """The command as a user runs it (see test_cli_errors.py), marked so that its processes can be found."""
    monkeypatch.delenv("PREFECT_LOGGING_LEVEL", raising=False)
    marker = uuid.uuid4().hex
    monkeypatch.setenv("TIERS_TEST_MARKER", marker)
    return marker


# -- the command, on its temporary local cluster --------------------------------------------------------

@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """3,000 customers from 2024-06 (Bank of China's 12-month window) to 2025-07, as Parquet."""
    from data.generator import generate_landing

    landing = tmp_path_factory.mktemp("dask-synthetic") / "landing"
    generate_landing(landing, customers=3000, first_month="2024-06", months=14, file_format="parquet")
    return landing


def test_backfill_on_two_workers_equals_a_single_process_run(synthetic, prefect_harness, tiers_cli, tmp_path,
                                                              user_environment):
    from flows.runs import backfill

    single, dask = tmp_path / "single", tmp_path / "dask"
    backfill.fn(str(synthetic), "2025-05", "2025-07", str(single))
    # What the months carry from one to the next: June's downgrades and buffers, credit caps, and so on.
    assert {"initial", "downgrade", "buffer", "held_until_review", "credit_cap", "upgrade"} <= reasons(single, "icbc_star")
    assert "buffer" in reasons(single, "bohai_wealth") and "buffer" in reasons(single, "boc_vip")

    done = tiers_cli("backfill", "--input", str(synthetic), "--from", "2025-05", "--to", "2025-07",
                     "--warehouse", str(dask), "--executor", "dask", check=True)
    assert done.stderr.strip() == "", done.stderr  # Dask and Prefect stay quiet on the command line

    assert sorted({key.split("/")[0].removeprefix("program=") for key in snapshot_files(dask)}) == PROGRAMS
    assert assert_same_snapshots(single, dask) == 3000 * 3 * len(PROGRAMS)
    manifest = json.loads(snapshots.manifest_path(Warehouse(dask), "icbc_star", Month.parse("2025-06")).read_text())
    assert manifest["executor"]["name"] == "dask" and manifest["executor"]["partitions"] == 4  # 2 x 2 worker threads
    assert manifest["rows_out"] == 3000
    assert list((dask / "staging").glob("partitioned-*")) == [] and list((dask / "staging").glob("dask-probe-*")) == []

    # The temporary cluster's scheduler and worker processes ended with the command.
    deadline = time.monotonic() + 10
    while (left := processes_marked(user_environment)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == [], [p.cmdline() for p in left]


def test_an_unreachable_scheduler_is_one_plain_line(tiers_cli, tmp_path, monkeypatch, user_environment):
    monkeypatch.setenv("TIERS_DASK_TIMEOUT", "1")
    address = f"tcp://127.0.0.1:{closed_port()}"
    warehouse = tmp_path / "warehouse"
    done = tiers_cli("run", "--input", str(GOLDEN / "icbc_money" / "landing"), "--month", "2025-06",
                     "--program", "icbc_star", "--warehouse", str(warehouse), "--executor", "dask",
                     "--dask-address", address)
    assert done.returncode == 1 and "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: --dask-address {address}: cannot reach a Dask scheduler there")
    assert not list((warehouse / "snapshots").rglob("*.parquet"))  # nothing published, nothing ingested
    assert not warehouse.joinpath("tiers.duckdb").exists()


# -- in-process, on a cluster started here (--dask-address) ----------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    import distributed

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                  silence_logs=logging.ERROR) as local:
        yield local.scheduler_address


@pytest.fixture(scope="module")
def buffers_single(prefect_harness, tmp_path_factory):
    """icbc_buffers (6 customers) from 2024-12 to 2025-06, single-process."""
    from flows.runs import backfill

    warehouse = tmp_path_factory.mktemp("dask-buffers") / "single"
    backfill.fn(str(GOLDEN / "icbc_buffers" / "landing"), "2024-12", "2025-06", str(warehouse), ["icbc_star"])
    return warehouse


def test_more_buckets_than_customers(cluster, buffers_single, tmp_path):
    """Re-running 2025-05 on a copy re-evaluates it and June (the cascade) from the published April, in
    8 buckets for 6 customers: at least two buckets are empty, and the snapshots are the same."""
    from flows.runs import month_end

    warehouse = tmp_path / "dask"
    shutil.copytree(buffers_single, warehouse)
    result = month_end.fn(str(GOLDEN / "icbc_buffers" / "landing"), "2025-05", str(warehouse), ["icbc_star"],
                          executor="dask", dask_address=cluster, partitions=8)
    assert [(e.month, e.customers, e.initial) for e in result["evaluated"]] == [
        ("2025-05", 6, False), ("2025-06", 6, False)]
    assert assert_same_snapshots(buffers_single, warehouse) == 6 * 7
    for month in ("2025-05", "2025-06"):
        manifest = json.loads(snapshots.manifest_path(Warehouse(warehouse), "icbc_star", Month.parse(month)).read_text())
        executor = manifest["executor"]
        assert (executor["name"], executor["scheduler"], executor["partitions"]) == ("dask", cluster, 8)
        assert manifest["rows_out"] == 6


def test_a_failing_bucket_is_one_plain_error(cluster, buffers_single, tmp_path, monkeypatch):
    """A bucket that fails on a worker fails the month with a sentence, and nothing of it is published."""
    from flows import fanout, tasks

    warehouse = Warehouse(tmp_path / "dask")
    shutil.copytree(buffers_single, warehouse.root)
    published = {key: path.read_bytes() for key, path in snapshot_files(warehouse.root).items()}
    export = tasks.export_buckets

    def lost_files(*args, **kwargs):
        run = export(*args, **kwargs)
        shutil.rmtree(Path(run.run_dir) / "schema")
        return run

    with fanout.dask_cluster(cluster, warehouse, partitions=3) as fan:
        monkeypatch.setattr(tasks, "export_buckets", lost_files)
        with pytest.raises(TiersError, match=rf"icbc_star 2025-06: bucket 0 of 3 failed on the Dask cluster at {cluster} "
                                             r"\(IOException: .*\); nothing was published for this month$"):
            fan.evaluate(icbc_run(warehouse), "icbc_star", "2025-06", "test-run")
    assert {key: path.read_bytes() for key, path in snapshot_files(warehouse.root).items()} == published
    assert list(warehouse.staging.glob("partitioned-*")) == []


def test_one_line_keeps_the_whole_error_and_its_cause():
    from flows.fanout import one_line

    try:
        try:
            raise ModuleNotFoundError("No module named 'runs'")
        except ModuleNotFoundError as cause:
            raise RuntimeError("Error during deserialization of the task graph. This frequently\n"
                               "occurs if the Scheduler and Client have different environments.\n") from cause
    except RuntimeError as error:
        assert one_line(error) == ("RuntimeError: Error during deserialization of the task graph. This frequently "
                                   "occurs if the Scheduler and Client have different environments.; caused by "
                                   "ModuleNotFoundError: No module named 'runs'")


def test_a_cluster_without_workers_fails_after_the_worker_timeout(tmp_path, monkeypatch):
    """A scheduler with no worker: the run fails after TIERS_DASK_WORKER_TIMEOUT, naming the scheduler,
    before anything is ingested."""
    import distributed

    from flows import fanout

    monkeypatch.setenv("TIERS_DASK_WORKER_TIMEOUT", "1.5")
    warehouse = Warehouse(tmp_path / "warehouse")
    warehouse.prepare()
    with distributed.LocalCluster(n_workers=0, processes=True, host="127.0.0.1", dashboard_address=None,
                                  scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                  silence_logs=logging.ERROR) as empty:
        address = empty.scheduler_address
        started = time.monotonic()
        with pytest.raises(TiersError) as failed:
            with fanout.dask_cluster(address, warehouse):
                pass
        waited = time.monotonic() - started
    assert str(failed.value) == (f"the Dask scheduler at {address} has had no workers for 1.5 s "
                                 f"(TIERS_DASK_WORKER_TIMEOUT); start some with `dask worker {address}` (docs/dask.md)")
    assert 1.5 <= waited < 15
    assert not warehouse.root.joinpath("tiers.duckdb").exists()


def test_losing_every_worker_fails_the_month_after_the_worker_timeout(buffers_single, tmp_path, monkeypatch):
    """Every worker gone while the buckets wait (Dask would wait for new ones forever, silently): after
    TIERS_DASK_WORKER_TIMEOUT the month fails, naming the scheduler; nothing of it is published."""
    import distributed

    from flows import fanout, tasks

    monkeypatch.setenv("TIERS_DASK_WORKER_TIMEOUT", "2")
    warehouse = Warehouse(tmp_path / "dask")
    shutil.copytree(buffers_single, warehouse.root)
    published = {key: path.read_bytes() for key, path in snapshot_files(warehouse.root).items()}
    export = tasks.export_buckets
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                  silence_logs=logging.ERROR) as local:
        address = local.scheduler_address

        def then_lose_the_workers(*args, **kwargs):
            run = export(*args, **kwargs)
            local.scale(0)
            with distributed.Client(address, set_as_default=False) as client:
                deadline = time.monotonic() + 20
                while client.nthreads() and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert not client.nthreads()
            return run

        with fanout.dask_cluster(address, warehouse, partitions=2) as fan:
            monkeypatch.setattr(tasks, "export_buckets", then_lose_the_workers)
            started = time.monotonic()
            with pytest.raises(TiersError) as failed:
                fan.evaluate(icbc_run(warehouse), "icbc_star", "2025-06", "test-run")
            waited = time.monotonic() - started
    assert str(failed.value) == (
        f"icbc_star 2025-06: 0 of 2 buckets done, and the Dask scheduler at {address} has had no workers for 2 s "
        f"(TIERS_DASK_WORKER_TIMEOUT); nothing was published for this month; start some with "
        f"`dask worker {address}` (docs/dask.md)")
    assert 2 <= waited < 30
    assert {key: path.read_bytes() for key, path in snapshot_files(warehouse.root).items()} == published
    assert list(warehouse.staging.glob("partitioned-*")) == []


def test_a_worker_that_cannot_see_the_staging_folder_is_refused(tmp_path):
    """The storage check's verdict, as a worker on another machine without the shared folder reports it."""
    from flows import fanout

    report = fanout.worker_check(str(tmp_path / "elsewhere" / "coordinator"), "token", None)
    assert report["storage"].startswith(f"cannot read and write {tmp_path / 'elsewhere'}")

    class Client:
        def run(self, function, *args):
            return {"tcp://10.0.0.7:40000": report}

    warehouse = Warehouse(tmp_path / "warehouse")
    warehouse.prepare()
    with pytest.raises(TiersError, match=r"Dask worker tcp://10.0.0.7:40000: cannot read and write .*; the warehouse's "
                                         r"staging folder .* must be on storage every worker reads and writes"):
        fanout._check_workers(Client(), "tcp://10.0.0.1:8786", warehouse, None)
    assert list(warehouse.staging.glob("dask-probe-*")) == []


# -- the buckets alone -----------------------------------------------------------------------------------

@pytest.mark.parametrize("partitions", [1, 5, 16])
def test_buckets_combine_into_the_published_snapshot(buffers_single, tmp_path, partitions):
    """Export, evaluate every bucket in this process, combine: the single-process file's rows, in order."""
    from rules import load_programs, load_vocabularies
    from transforms import partitioned

    warehouse = Warehouse(tmp_path / "warehouse")
    shutil.copytree(buffers_single, warehouse.root)
    [loaded] = load_programs(["icbc_star"])
    month = Month.parse("2025-06")
    run_dir = partitioned.new_run_dir(warehouse)
    with runner.connect(warehouse) as con:
        exported = partitioned.export(con, warehouse, loaded, month, run_dir, partitions, "test-run")
        assert exported.rows["customers"] == 6 and not exported.initial
        results = [partitioned.evaluate_bucket(run_dir, bucket, loaded, load_vocabularies(), month, 2**30)
                   for bucket in range(partitions)]
        assert sum(r["rows"] for r in results) == 6
        assert partitioned.undefined_tiers(results) == (0, None)
        staged, rows = partitioned.combine(con, warehouse, run_dir, partitions)
    assert rows == 6
    published = snapshots.snapshot_path(warehouse, "icbc_star", month)
    con = duckdb.connect()
    for query in ("FROM read_parquet($f, hive_partitioning = false)",
                  "DESCRIBE FROM read_parquet($f, hive_partitioning = false)"):
        assert con.execute(query, {"f": str(staged)}).fetchall() == con.execute(query, {"f": str(published)}).fetchall()


def test_memory_sizes_in_duckdb_units():
    from transforms.partitioned import memory_bytes

    assert memory_bytes("4GB") == 4_000_000_000 and memory_bytes("512MiB") == 512 * 2**20
    assert memory_bytes("1.5 GB") == 1_500_000_000
    with pytest.raises(ValueError):
        memory_bytes("lots")
