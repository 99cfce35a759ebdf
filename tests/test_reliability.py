"""Reliability of the month-end run (data-contract.md sections 2-4, docs/decisions.md "Output" and
"Running"): snapshots are published whole or not at all even under ``kill -9``; one writing run per
warehouse; re-runs are reproducible; a re-run cascades over later months; the run summary accounts
for every row.

Subprocesses (the installed ``tiers`` command) are used only where the process boundary is the point:
SIGKILL and concurrent runs. Everything else calls the flow bodies in-process under the session's
temporary Prefect API.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from interfaces.cli import app
from ground.errors import BadRowsError, InputError
from ground.months import Month, month_range

GOLDEN = Path(__file__).resolve().parent / "golden"
TIERS = Path(sys.executable).with_name("tiers")
PROGRAM = "icbc_star"
AS_OF_DIR = re.compile(r"^as_of=\d{4}-\d{2}-\d{2}$")
# Prefect's own background-service logger ("EventsWorker") is not under the `prefect` logger that the
# CLI quiets, so it can add this line after the error (see test_prefect_service_warnings_...).
PREFECT_NOISE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \| WARNING \| EventsWorker - Still processing items")


# -- helpers ----------------------------------------------------------------------------------------

def copy_landing(target: Path, scenario: str = "icbc_buffers") -> Path:
    shutil.copytree(GOLDEN / scenario / "landing", target)
    return target.resolve()


def scale_balances(landing: Path, customer: str, factor: int, months: list[str]) -> None:
    """The bank resends ``months``: ``customer`` held ``factor`` times as much every day."""
    for month in months:
        path = landing / "balances" / f"{month}.csv"
        header, *rows = path.read_text().splitlines()
        column = header.split(",").index("balance")
        changed = []
        for row in rows:
            cells = row.split(",")
            if cells[1] == customer:
                cells[column] = f"{Decimal(cells[column]) * factor:.2f}"
            changed.append(",".join(cells))
        assert changed != rows, f"{customer} has no balances in {month}"
        path.write_text("\n".join([header, *changed]) + "\n")


def snapshot_file(warehouse: Path, month: str, program: str = PROGRAM) -> Path:
    return warehouse / "snapshots" / f"program={program}" / f"as_of={Month.parse(month).last_day}" / "data.parquet"


def rows_of(path: Path) -> list[dict]:
    """Every row of one snapshot file; reading it whole also proves it is a complete Parquet file."""
    return pq.read_table(path).to_pylist()


def published_rows(warehouse: Path, months: list[str]) -> dict[str, list[dict] | None]:
    return {m: rows_of(snapshot_file(warehouse, m)) if snapshot_file(warehouse, m).exists() else None for m in months}


def published_bytes(warehouse: Path) -> dict[str, bytes]:
    return {str(p.relative_to(warehouse)): p.read_bytes() for p in (warehouse / "snapshots").rglob("*.parquet")}


def stamp(path: Path) -> tuple[int, int] | None:
    """Which version of a file is in place: a published file is a new inode (rename) with its own mtime."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def assert_only_snapshot_files(warehouse: Path, program: str = PROGRAM) -> None:
    """Under snapshots/ nothing but program=P/as_of=D/data.parquet (manifests live under manifests/)."""
    root = warehouse / "snapshots"
    for path in root.rglob("*"):
        parts = path.relative_to(root).parts
        assert parts[0] == f"program={program}", f"stray path under snapshots/: {path}"
        if len(parts) >= 2:
            assert AS_OF_DIR.match(parts[1]), f"stray path under snapshots/: {path}"
        if path.is_file():
            assert len(parts) == 3 and parts[2] == "data.parquet", f"stray file: {path}"
        else:
            assert len(parts) <= 2, f"stray folder: {path}"


def cli_env(prefect_home: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PREFECT_LOGGING_LEVEL", "PREFECT_API_URL")}
    return {**env, "PREFECT_HOME": str(prefect_home), **extra}


def error_lines(stderr: str) -> tuple[list[str], list[str]]:
    """(the tool's own non-empty stderr lines, Prefect's EventsWorker noise lines)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    noise = [line for line in lines if PREFECT_NOISE.match(line)]
    return [line for line in lines if not PREFECT_NOISE.match(line)], noise


# -- atomic publish under kill -9 -------------------------------------------------------------------

KILL_FROM, KILL_TO = "2024-12", "2025-06"
KILL_MONTHS = [str(m) for m in month_range(Month.parse(KILL_FROM), Month.parse(KILL_TO))]
# Every balance month that the windows of 2024-12..2025-06 read (six months each).
WINDOW_MONTHS = [str(m) for m in month_range(Month.parse("2024-07"), Month.parse(KILL_TO))]


def _backfill_argv(landing: Path, warehouse: Path) -> list[str]:
    return [str(TIERS), "backfill", "--input", str(landing), "--from", KILL_FROM, "--to", KILL_TO,
            "--program", PROGRAM, "--warehouse", str(warehouse)]


def _start(argv: list[str], env: dict, cwd: Path, stderr_path: Path) -> subprocess.Popen:
    with stderr_path.open("w") as stderr:
        return subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=stderr,
                                start_new_session=True)


def kill_group(proc: subprocess.Popen) -> bool:
    """SIGKILL a run started in its own session (its whole process group) and reap it; whether it had
    already exited by itself."""
    exited = proc.poll() is not None
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)
    return exited


def _open_files(pid: int) -> list[str]:
    """What a process has open right now (Linux /proc), to tell which stage a kill interrupted."""
    opened = []
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                opened.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                pass
    except OSError:
        pass
    return opened


def _stage(opened: list[str], warehouse: Path, landing: Path, replaced: int, months: int) -> str:
    if replaced == months:
        return "after publishing"
    if replaced:
        return "between renames"  # evaluating or publishing the later months
    if any(path.startswith(str(warehouse / "staging")) for path in opened):
        return "writing a snapshot"
    if str(warehouse / "tiers.lock") not in opened:  # the run holds its lock file open from start to end
        return "start-up"
    if any(path.startswith(str(landing)) for path in opened):
        return "ingestion (reading a landing file)"
    return "holding the lock, before any rename"  # ingestion, or the first month's evaluation


def _timed_run(argv: list[str], env: dict, cwd: Path, warehouse: Path, stderr_path: Path) -> dict:
    """One full run, watched: when the database first shows up and when each snapshot is replaced."""
    files = [snapshot_file(warehouse, m) for m in KILL_MONTHS]
    before = [stamp(f) for f in files]
    wal = warehouse / "tiers.duckdb.wal"
    database_existed = (warehouse / "tiers.duckdb").exists()
    marks: dict[str, float] = {}
    published: dict[int, float] = {}
    started = time.monotonic()
    proc = _start(argv, env, cwd, stderr_path)
    while proc.poll() is None:
        now = time.monotonic() - started
        if "database" not in marks and (wal.exists() or (not database_existed and (warehouse / "tiers.duckdb").exists())):
            marks["database"] = now
        for index, path in enumerate(files):
            if index not in published and stamp(path) != before[index]:
                published[index] = now
        time.sleep(0.005)
    marks["end"] = time.monotonic() - started
    assert proc.returncode == 0, stderr_path.read_text()
    assert len(published) == len(files), "a full run must replace every month's snapshot"
    marks["first_publish"], marks["last_publish"] = min(published.values()), max(published.values())
    marks.setdefault("database", marks["first_publish"] / 2)
    return marks


@pytest.fixture(scope="module")
def kill_references(prefect_harness, tmp_path_factory):
    """Two landing folders that differ for the climber in every window month, and the correct rows of
    a clean backfill of each into its own warehouse."""
    from flows.runs import backfill

    base = tmp_path_factory.mktemp("kill").resolve()
    landings = {"A": copy_landing(base / "landing-a"), "B": copy_landing(base / "landing-b")}
    scale_balances(landings["B"], "climber", 3, WINDOW_MONTHS)
    references = {}
    for key, landing in landings.items():
        warehouse = base / f"reference-{key}"
        backfill.fn(str(landing), KILL_FROM, KILL_TO, str(warehouse), [PROGRAM])
        references[key] = published_rows(warehouse, KILL_MONTHS)
    # The two versions differ in every month, so a kill that leaves a mix of them would show.
    assert all(references["A"][m] != references["B"][m] for m in KILL_MONTHS)
    assert all(len(references["A"][m]) == 6 for m in KILL_MONTHS)
    return base, landings, references


@pytest.mark.slow
def test_kill_9_at_any_moment_leaves_each_snapshot_old_or_new_and_whole(kill_references, prefect_harness):
    """SIGKILL a real ``tiers backfill`` (its whole process group) at random moments, 20 times, into one
    warehouse. Each run re-runs every month with the other landing folder, so every month's file is
    replaced by a different version. After each kill, every month's file is a whole Parquet file whose
    rows are the previous version or the new correct one, and nothing else is under snapshots/.

    Most kills use the session's Prefect API (PREFECT_API_URL), so the process skips starting its own
    temporary server and a kill reaches ingestion and publishing sooner; a few use the temporary server
    as a user's run does and are killed while it starts."""
    from prefect.settings import PREFECT_API_URL

    base, landings, references = kill_references
    warehouse = base / "warehouse"
    logs = base / "logs"
    logs.mkdir()
    own_server = cli_env(base / "prefect-home")
    shared_api = cli_env(base / "prefect-home", PREFECT_API_URL=PREFECT_API_URL.value())
    rng = random.Random(20250630)

    # Measure two full runs first: a cold one on its own temporary server (landing A), then one on
    # the shared API that replaces every month with landing B.
    cold = _timed_run(_backfill_argv(landings["A"], warehouse), own_server, base, warehouse, logs / "cold.err")
    assert published_rows(warehouse, KILL_MONTHS) == references["A"]
    warm = _timed_run(_backfill_argv(landings["B"], warehouse), shared_api, base, warehouse, logs / "warm.err")
    assert published_rows(warehouse, KILL_MONTHS) == references["B"]
    assert_only_snapshot_files(warehouse)
    publish_span = max(warm["last_publish"] - warm["first_publish"], 0.05)

    # (mode, phase): where to draw the kill moment.
    # 20 kills (tests/test_cascade_atomic.py adds 20 more, aimed at a cascade's publishing).
    plan = ([("own", "prefect start-up")] * 4 + [("shared", "before publishing")] * 9
            + [("shared", "publishing")] * 6 + [("shared", "after publishing")] * 1)
    rng.shuffle(plan)
    previous = published_rows(warehouse, KILL_MONTHS)
    landing_key = "B"
    outcomes = []
    for iteration, (mode, phase) in enumerate(plan):
        landing_key = "A" if landing_key == "B" else "B"
        new = references[landing_key]
        files = [snapshot_file(warehouse, m) for m in KILL_MONTHS]
        before = [stamp(f) for f in files]
        env = own_server if mode == "own" else shared_api
        if phase == "prefect start-up":
            # The cold run's start-up also set up Prefect's database; a warm one starts sooner.
            at = rng.uniform(0.2, cold["database"] * 0.6)
        elif phase == "before publishing":
            at = rng.uniform(0.0, warm["first_publish"])
        elif phase == "after publishing":
            at = rng.uniform(warm["last_publish"], warm["end"])
        else:
            at = rng.uniform(0.0, publish_span)  # after the run's own first rename, seen below

        started = time.monotonic()
        proc = _start(_backfill_argv(landings[landing_key], warehouse), env, base, logs / f"kill-{iteration}.err")
        if phase == "publishing":
            while proc.poll() is None and all(stamp(f) == b for f, b in zip(files, before)):
                assert time.monotonic() - started < 120, "the run never published"
                time.sleep(0.002)
            deadline = time.monotonic() + at
        else:
            deadline = started + at
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        opened = _open_files(proc.pid)
        exited_by_itself = kill_group(proc)
        if exited_by_itself:
            # A run that finished before its kill moment must have succeeded (an earlier kill must not
            # have left the warehouse in a state that breaks the next run).
            assert proc.returncode == 0, (iteration, (logs / f"kill-{iteration}.err").read_text())

        # The invariant: whole files, each the previous version or the new correct one.
        assert_only_snapshot_files(warehouse)
        current = {}
        for month in KILL_MONTHS:
            path = snapshot_file(warehouse, month)
            assert path.exists(), f"iteration {iteration}: {month} disappeared"
            rows = rows_of(path)
            # A kill while a run publishes leaves its journal, which the next run finishes first: a month
            # may then hold the killed run's version (the other landing folder's), whole.
            # tests/test_cascade_atomic.py checks that the next run leaves no mix.
            earlier = references["A" if landing_key == "B" else "B"][month]
            assert rows in (previous[month], new[month], earlier), (
                f"iteration {iteration} ({mode}, {phase}, killed at {at:.2f}s): {month} is neither the previous "
                f"nor the new version"
            )
            current[month] = rows
        glob = str(warehouse / "snapshots" / "**" / "*.parquet")
        assert duckdb.sql(
            f"SELECT count(*), count(DISTINCT as_of) FROM read_parquet('{glob}', hive_partitioning = true)"
        ).fetchall() == [(6 * len(KILL_MONTHS), len(KILL_MONTHS))]
        if exited_by_itself:
            assert current == new
        replaced = sum(stamp(f) != b for f, b in zip(files, before))
        stage = "exited" if exited_by_itself else _stage(opened, warehouse, landings[landing_key], replaced,
                                                         len(KILL_MONTHS))
        outcomes.append((mode, phase, round(at, 2), replaced, stage))
        previous = current

    report = "\n".join(
        [f"calibration: cold {cold}, warm {warm}",
         "kills (mode, drawn from, seconds, months replaced, stage the kill interrupted):"]
        + [f"  {outcome}" for outcome in outcomes])
    print("\n" + report)
    # The kills landed where they were meant to: during start-up (before the run took the warehouse
    # lock; with its own server, while Prefect starts), during ingestion before any snapshot was
    # replaced, and between the renames of one run.
    stages = [o[4] for o in outcomes]
    assert stages.count("start-up") >= 3, report
    assert any(o[0] == "own" and o[4] == "start-up" for o in outcomes), report
    assert stages.count("holding the lock, before any rename") + stages.count("ingestion (reading a landing file)") >= 3, \
        report
    # A run's renames now happen together at its end, in milliseconds, behind a journal: kills aimed at them
    # mostly land just after, and tests/test_cascade_atomic.py waits for the journal to aim at them.
    assert stages.count("after publishing") + stages.count("between renames") >= 3, report

    # A clean run afterwards, as a user would start it, succeeds and gives the reference row for row.
    final_key = "A" if landing_key == "B" else "B"
    done = subprocess.run(_backfill_argv(landings[final_key], warehouse), env=own_server, cwd=base,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert published_rows(warehouse, KILL_MONTHS) == references[final_key]
    assert_only_snapshot_files(warehouse)


# -- one writing run per warehouse ------------------------------------------------------------------

CONCURRENT = 5
RACE_MONTH = "2025-01"  # its predecessor 2024-12 is published first


@pytest.fixture(scope="module")
def race_base(prefect_harness, tmp_path_factory):
    """icbc_buffers with 2024-12 published through the command (which also sets up Prefect's home, as
    on a machine that has run tiers before), and the correct rows of 2025-01."""
    from flows.runs import backfill

    base = tmp_path_factory.mktemp("race").resolve()
    landing = copy_landing(base / "landing")
    home = base / "prefect-home"
    done = subprocess.run(
        [str(TIERS), "backfill", "--input", str(landing), "--from", "2024-12", "--to", "2024-12", "--program", PROGRAM,
         "--warehouse", str(base / "chain")],
        env=cli_env(home), cwd=base, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    backfill.fn(str(landing), "2024-12", RACE_MONTH, str(base / "reference"), [PROGRAM])
    return base, landing, home, rows_of(snapshot_file(base / "reference", RACE_MONTH))


def _race(race_base, tmp_path: Path, wait: int) -> tuple[Path, list[subprocess.CompletedProcess], list]:
    """Five `tiers run` of the same month into one warehouse at once; watch the month's snapshot."""
    base, landing, home, _ = race_base
    warehouse = tmp_path / "warehouse"
    shutil.copytree(base / "chain", warehouse, ignore=shutil.ignore_patterns("tiers.lock"))
    target = snapshot_file(warehouse, RACE_MONTH)
    argv = [str(TIERS), "run", "--input", str(landing), "--month", RACE_MONTH, "--program", PROGRAM,
            "--warehouse", str(warehouse)] + (["--wait", str(wait)] if wait else [])
    seen: list = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            current = stamp(target)
            if current is not None and (not seen or seen[-1] != current):
                seen.append(current)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    procs = [subprocess.Popen(argv, env=cli_env(home), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(CONCURRENT)]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    time.sleep(0.05)
    stop.set()
    watcher.join()
    return warehouse, done, seen


def _check_race_result(warehouse: Path, expected: list[dict], predecessor: bytes) -> None:
    assert_only_snapshot_files(warehouse)
    month_dir = snapshot_file(warehouse, RACE_MONTH).parent
    assert sorted(p.name for p in month_dir.iterdir()) == ["data.parquet"]
    assert rows_of(snapshot_file(warehouse, RACE_MONTH)) == expected
    assert snapshot_file(warehouse, "2024-12").read_bytes() == predecessor
    assert sorted(p.parent.name for p in (warehouse / "snapshots").rglob("*.parquet")) == [
        "as_of=2024-12-31", "as_of=2025-01-31"]


@pytest.mark.slow
def test_concurrent_runs_without_wait_fail_plainly_on_the_lock(race_base, tmp_path):
    base, _, _, expected = race_base
    predecessor = snapshot_file(base / "chain", "2024-12").read_bytes()

    warehouse, done, publications = _race(race_base, tmp_path, wait=0)

    winners = [d for d in done if d.returncode == 0]
    losers = [d for d in done if d.returncode != 0]
    noise = []
    for loser in losers:
        assert loser.returncode == 1, loser.stderr
        assert "Traceback" not in loser.stderr
        lines, extra = error_lines(loser.stderr)
        noise += extra
        assert len(lines) == 1, loser.stderr
        assert lines[0] == (
            f"error: another tiers run is writing to {warehouse} (lock {warehouse / 'tiers.lock'}); "
            "wait for it to finish or pass --wait SECONDS"
        )
    for winner in winners:
        assert "Traceback" not in winner.stderr and not error_lines(winner.stderr)[0], winner.stderr
    # Some runs met a held lock (five at once on a run of seconds); the others each published once:
    # exactly the runs that got the lock succeeded, and each of them replaced the snapshot.
    assert losers and winners
    assert len(publications) == len(winners)
    _check_race_result(warehouse, expected, predecessor)
    if noise:
        warnings.warn(f"Prefect log lines on stderr beside the error: {noise[:2]}")


@pytest.mark.slow
def test_concurrent_runs_with_wait_all_succeed_in_turn(race_base, tmp_path):
    base, _, _, expected = race_base
    predecessor = snapshot_file(base / "chain", "2024-12").read_bytes()

    warehouse, done, publications = _race(race_base, tmp_path, wait=120)

    for run in done:
        assert run.returncode == 0, run.stderr
        assert "Traceback" not in run.stderr and not error_lines(run.stderr)[0], run.stderr
    # Five runs, one after the other: five publications of the month (none lost to a clash).
    assert len(publications) == CONCURRENT
    _check_race_result(warehouse, expected, predecessor)


def test_prefect_service_warnings_stay_off_the_command_line(tmp_path):
    # What `tiers run` does before a flow starts: the CLI callback (quiet Prefect), then the flows
    # import Prefect; then the warning Prefect's EventsWorker logs when it exits with events queued.
    script = (
        "import logging\n"
        "from interfaces import cli\n"
        "cli.main(ctx=None, debug=False)\n"
        "import flows.runs\n"
        "logging.getLogger('EventsWorker').warning('Still processing items: 1 items remaining...')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=cli_env(tmp_path / "prefect-home"), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == ""


# -- re-runs: reproducible, and cascading over later months -------------------------------------------

CHAIN = ["2024-12", "2025-01", "2025-02", "2025-03"]


@pytest.fixture(scope="module")
def chain(prefect_harness, tmp_path_factory):
    """icbc_buffers backfilled 2024-12..2025-03 in-process; tests work on copies."""
    from flows.runs import backfill

    base = tmp_path_factory.mktemp("chain").resolve()
    landing = copy_landing(base / "landing")
    backfill.fn(str(landing), CHAIN[0], CHAIN[-1], str(base / "warehouse"), [PROGRAM])
    return base


@pytest.fixture
def workspace(chain, tmp_path):
    landing = copy_landing(tmp_path / "landing")
    warehouse = tmp_path / "warehouse"
    shutil.copytree(chain / "warehouse", warehouse, ignore=shutil.ignore_patterns("tiers.lock"))
    return landing, warehouse.resolve()


def _clean_backfill(landing: Path, warehouse: Path) -> dict[str, list[dict] | None]:
    from flows.runs import backfill

    backfill.fn(str(landing), CHAIN[0], CHAIN[-1], str(warehouse), [PROGRAM])
    return published_rows(warehouse, CHAIN)


def test_rerun_with_same_inputs_rewrites_byte_identical_snapshots(workspace, chain, tmp_path):
    from flows.runs import month_end

    landing, warehouse = workspace
    before_bytes = published_bytes(warehouse)
    before_stamps = {m: stamp(snapshot_file(warehouse, m)) for m in CHAIN}
    assert len(before_bytes) == len(CHAIN)

    # Re-running the first month re-evaluates (and re-publishes) all four, in order.
    result = month_end.fn(str(landing), CHAIN[0], str(warehouse), [PROGRAM])

    assert [(e.month, e.initial) for e in result["evaluated"]] == [(m, m == CHAIN[0]) for m in CHAIN]
    assert all(stamp(snapshot_file(warehouse, m)) != before_stamps[m] for m in CHAIN), "not rewritten"
    assert published_bytes(warehouse) == before_bytes  # same rows, and the very same bytes

    # A fresh warehouse fed from another copy of the landing folder writes the same bytes too.
    other = _clean_backfill(copy_landing(tmp_path / "other-landing"), tmp_path / "other")
    assert other == published_rows(warehouse, CHAIN)
    assert published_bytes(tmp_path / "other") == before_bytes


def test_rerun_of_the_first_month_after_a_window_change_equals_a_clean_backfill(workspace, tmp_path):
    """September 2024 is only in the windows of 2024-12, 2025-01 and 2025-02 (not 2025-03). Re-running
    the first published month after September is resent recomputes all four months, in order, from the
    new September: exactly what a clean backfill of the new files gives."""
    from flows.runs import month_end

    landing, warehouse = workspace
    before = published_rows(warehouse, CHAIN)
    stamps = {m: stamp(snapshot_file(warehouse, m)) for m in CHAIN}
    scale_balances(landing, "climber", 50, ["2024-09"])

    result = month_end.fn(str(landing), CHAIN[0], str(warehouse), [PROGRAM])

    assert [(e.month, e.initial) for e in result["evaluated"]] == [(m, m == CHAIN[0]) for m in CHAIN]
    assert [(i.dataset, i.month) for i in result["ingested"] if i.read_now] == [("balances", "2024-09")]
    after = published_rows(warehouse, CHAIN)
    assert after == _clean_backfill(landing, tmp_path / "clean")
    # Published in month order, each file replaced.
    mtimes = [snapshot_file(warehouse, m).stat().st_mtime_ns for m in CHAIN]
    assert mtimes == sorted(mtimes) and len(set(mtimes)) == len(CHAIN)
    assert all(stamp(snapshot_file(warehouse, m)) != stamps[m] for m in CHAIN)
    # The climber's points moved in the three months whose window holds September, not in March.
    points = {m: ({r["customer_id"]: r["points"] for r in before[m]}["climber"],
                  {r["customer_id"]: r["points"] for r in after[m]}["climber"]) for m in CHAIN}
    assert all(new > old for old, new in (points[m] for m in CHAIN[:3])), points
    assert points["2025-03"][0] == points["2025-03"][1]
    assert {r["reason"] for r in after["2024-12"]} == {"initial"}


def test_backfill_of_a_sub_range_cascades_over_later_published_months(workspace, tmp_path):
    from flows.runs import backfill

    landing, warehouse = workspace
    scale_balances(landing, "climber", 200, ["2025-01"])

    result = backfill.fn(str(landing), "2025-01", "2025-02", str(warehouse), [PROGRAM])

    assert [e.month for e in result["evaluated"]] == ["2025-01", "2025-02", "2025-03"]
    assert published_rows(warehouse, CHAIN) == _clean_backfill(landing, tmp_path / "clean")


def test_cascade_lacking_a_later_window_file_publishes_nothing(workspace):
    """The cascade's later months are part of the run: a file missing from 2025-03's window fails the
    re-run of 2025-01 before anything, so 2025-01 is not republished on its own either."""
    from flows.runs import month_end

    landing, warehouse = workspace
    before = published_bytes(warehouse)
    scale_balances(landing, "climber", 200, ["2025-01"])
    missing = landing / "transactions" / "2025-03.csv"
    missing.unlink()

    with pytest.raises(InputError) as raised:
        month_end.fn(str(landing), "2025-01", str(warehouse), [PROGRAM])

    message = str(raised.value)
    assert str(missing) in message and "2025-03" in message and "\n" not in message
    assert published_bytes(warehouse) == before


# -- the run summary accounts for every row ------------------------------------------------------------

def _break_money_landing(landing: Path) -> dict[str, int]:
    """Bad rows in four files of icbc_money; returns path -> bad rows."""
    def append(rel: str, *lines: str) -> None:
        path = landing / rel
        newline = "\r\n" if b"\r\n" in path.read_bytes() else "\n"
        with path.open("a", newline="") as handle:
            handle.write("".join(line + newline for line in lines))

    append("balances/2025-06.csv", "b1,borrower,yacht,CNY,2025-06-03,5.00,", "b2,borrower,mortgage,CNY,2025-06-03,-5.00,")
    append("transactions/2025-05.csv", "t1,spender-card,spender,2025-05-11,card_pos,0.00,CNY,5411,")
    append("products.csv", "borrower,wealth_card,2025-01-01,", "borrower,yacht_club,2025-01-01,")
    append("customers.csv", ",retail")
    return {str(landing / rel): count for rel, count in
            [("balances/2025-06.csv", 2), ("transactions/2025-05.csv", 1), ("products.csv", 1), ("customers.csv", 1)]}


def _data_rows(path: str) -> int:
    return len(Path(path).read_text().splitlines()) - 1


def _quarantined_by_file(warehouse: Path) -> dict[str, int]:
    files = [str(p) for p in (warehouse / "quarantine").rglob("*.parquet")]
    return dict(duckdb.sql("SELECT source_file, count(*) FROM read_parquet($f) GROUP BY ALL",
                           params={"f": files}).fetchall())


def test_run_summary_reconciles_rows_read_used_and_quarantined_per_file(prefect_harness, tmp_path):
    from flows.runs import month_end

    landing = copy_landing(tmp_path / "landing", "icbc_money")
    bad = _break_money_landing(landing)
    warehouse = tmp_path / "warehouse"

    with pytest.raises(BadRowsError, match="^5 bad rows, more than --max-bad-rows 4"):
        month_end.fn(str(landing), "2025-06", str(warehouse), [PROGRAM], max_bad_rows=4)
    results = [month_end.fn(str(landing), "2025-06", str(warehouse), [PROGRAM], max_bad_rows=5) for _ in range(2)]

    expected_files = {str(landing / f) for f in ("customers.csv", "products.csv", "credit_events.csv", "fx_rates.csv")}
    expected_files |= {str(landing / d / f"{m}.csv") for d in ("balances", "transactions")
                       for m in ("2025-01", "2025-02", "2025-03", "2025-04", "2025-05", "2025-06")}
    quarantined = _quarantined_by_file(warehouse)
    for result in results:
        files = [f for ingested in result["ingested"] for f in ingested.files]
        assert {f.path for f in files} == expected_files  # every input file of the run is in the summary
        for f in files:
            assert f.rows_read == f.rows_used + f.rows_quarantined, f
            assert f.rows_read == _data_rows(f.path), f
            assert f.rows_quarantined == quarantined.get(f.path, 0) == bad.get(f.path, 0), f
        assert sum(f.rows_quarantined for f in files) == 5
    # The first successful run read nothing new (the failed one had ingested everything); the second
    # neither: its counts are the stored ones.
    assert not [i for result in results for i in result["ingested"] if i.read_now]
    assert len(results[1]["evaluated"]) == 1

    # The command's printed summary shows the same reconciliation, one line per file.
    printed = CliRunner().invoke(
        app,
        ["run", "--input", str(landing), "--month", "2025-06", "--program", PROGRAM, "--warehouse", str(warehouse),
         "--max-bad-rows", "5"],
    )
    assert printed.exit_code == 0, printed.output
    table = [[cell.strip() for cell in line.split("│")[1:-1]] for line in printed.stdout.splitlines()
             if line.count("│") == 7]
    counts = [(row[1], int(row[2]), int(row[3]), int(row[4])) for row in table if row[2].isdigit()]
    assert len(counts) == len(expected_files)
    assert all(read == used + bad_rows for _, read, used, bad_rows in counts)
    assert sum(bad_rows for *_, bad_rows in counts) == 5
