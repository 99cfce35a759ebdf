"""The readers (data-contract.md section 3, "Who may write"; issue 11 point 1).

`tiers sql` reads the published Parquet only, read-only and locked down: every way out (ATTACH, COPY TO,
INSTALL/LOAD, other files, writes, SET) fails with one plain line and leaves the warehouse as it was.
`explain`, `report`, `sql` and `whatif` never open the writer's `tiers.duckdb`, so none can block or
break a run: the last test loops them through a backfill, which must succeed.

Everything goes through the installed command (`tiers_cli`), as an analyst would run it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from interfaces.sql_shell import EMPTY_SCHEMAS, execute, locked_connection

GOLDEN = Path(__file__).resolve().parent / "golden"
TIERS = Path(sys.executable).with_name("tiers")
PROGRAM = "icbc_star"


@pytest.fixture(scope="module")
def published(prefect_harness, tmp_path_factory) -> Path:
    """icbc_floors_caps, 2025-06..2025-08: a floor (gold-card) and a cap (defaulted)."""
    from flows.runs import backfill

    warehouse = tmp_path_factory.mktemp("readers") / "warehouse"
    backfill.fn(str(GOLDEN / "icbc_floors_caps" / "landing"), "2025-06", "2025-08", str(warehouse), [PROGRAM])
    return warehouse


@pytest.fixture
def warehouse(published, tmp_path) -> Path:
    """A private copy, so a test that (wrongly) wrote could not spoil the others."""
    return Path(shutil.copytree(published, tmp_path / "warehouse"))


def state(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a digest of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def customers_in_database(warehouse: Path) -> int:
    with duckdb.connect(str(warehouse / "tiers.duckdb"), read_only=True) as con:
        return con.execute("SELECT count(*) FROM customers").fetchone()[0]


def one_plain_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


# -- tiers sql: each way out is refused --------------------------------------------------------------

FORBIDDEN = {
    "attach_and_delete": "ATTACH '{db}' AS w; DELETE FROM w.customers",
    "attach_read_only": "ATTACH '{db}' AS w (READ_ONLY); SELECT count(*) FROM w.customers",
    "copy_to_a_file": "COPY (SELECT * FROM snapshots) TO '{outside}'",
    "copy_into_the_snapshots": "COPY (SELECT 1 AS x) TO '{wh}/snapshots/program=icbc_star/as_of=2025-09-30/data.parquet'",
    "export_database": "EXPORT DATABASE '{outside}'",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "read_csv_passwd": "SELECT * FROM read_csv('/etc/passwd')",
    "read_text_passwd": "SELECT * FROM read_text('/etc/passwd')",
    "read_the_writers_database": "SELECT * FROM read_blob('{db}')",
    "read_the_lock_file": "SELECT * FROM read_text('{wh}/tiers.lock')",
    "read_staging": "SELECT * FROM glob('{wh}/staging/*')",
    "escape_by_dotdot": "SELECT * FROM read_blob('{wh}/snapshots/../tiers.duckdb')",
    "create_table": "CREATE TABLE t AS SELECT 1",
    "create_temp_table": "CREATE TEMP TABLE t AS SELECT 1",
    "insert": "INSERT INTO icbc_star (customer_id) VALUES ('intruder')",
    "set_external_access": "SET enable_external_access = true",
    "set_threads": "SET threads = 1",
    "reset_lock": "RESET lock_configuration",
    "pragma_profiling": "PRAGMA enable_profiling",
    "call_logging": "CALL enable_logging()",
    "a_query_then_a_copy": "SELECT 1; COPY (SELECT 1) TO '{outside}'",
    # EXPLAIN ANALYZE runs what it explains; the output folders are where DuckDB lets a COPY write.
    "explain_analyze_copy": "EXPLAIN ANALYZE COPY (SELECT * FROM icbc_star) TO "
                            "'{wh}/snapshots/program=icbc_star/as_of=2025-06-30/data.parquet'",
    "copy_partitioned_into_the_snapshots": "COPY (SELECT * FROM icbc_star) TO '{wh}/snapshots/program=icbc_star' "
                                           "(FORMAT parquet, PARTITION_BY (as_of), OVERWRITE_OR_IGNORE)",
    "copy_into_the_run_log": "COPY (SELECT * FROM runs) TO '{wh}/runs/run-forged.parquet'",
}


@pytest.mark.parametrize("name", FORBIDDEN)
def test_each_way_out_fails_with_one_plain_line(warehouse, tiers_cli, tmp_path, name):
    outside = tmp_path / "outside.csv"
    query = FORBIDDEN[name].format(db=warehouse / "tiers.duckdb", wh=warehouse, outside=outside)
    before, customers = state(warehouse), customers_in_database(warehouse)

    done = tiers_cli("sql", query, "--warehouse", str(warehouse))

    line = one_plain_line(done)
    assert line.startswith("error: query refused: "), line
    assert "/etc/passwd" not in done.stdout and "root:" not in done.stdout
    assert not outside.exists()
    assert state(warehouse) == before and customers_in_database(warehouse) == customers


LOCKED_OUT = {
    "ATTACH '{db}' AS w": "Permission Error",
    "COPY (SELECT 1) TO '{outside}'": "Permission Error",
    "SELECT * FROM read_csv('/etc/passwd')": "Permission Error",
    "SELECT * FROM read_blob('{db}')": "Permission Error",
    "INSTALL httpfs": "Permission Error",
    "LOAD httpfs": "disabled",
    "CREATE TABLE t AS SELECT 1": "read-only",
    "SET enable_external_access = true": "locked",
    "SET allowed_directories = ['/']": "locked",
}


@pytest.mark.parametrize("query", LOCKED_OUT)
def test_the_connection_itself_refuses_without_the_statement_filter(warehouse, tmp_path, query):
    """The statement filter is a second line: DuckDB's own settings already refuse each of these."""
    with locked_connection(warehouse) as con:
        with pytest.raises(duckdb.Error, match=LOCKED_OUT[query]):
            con.execute(query.format(db=warehouse / "tiers.duckdb", outside=tmp_path / "out.csv")).fetchall()
    assert not (tmp_path / "out.csv").exists()


def test_queries_still_work_and_read_the_published_rows(warehouse, tiers_cli):
    done = tiers_cli("sql", "SELECT program, as_of, count(*) AS n FROM snapshots GROUP BY ALL ORDER BY as_of",
                     "--warehouse", str(warehouse), check=True)
    assert "2025-06-30" in done.stdout and "2025-08-31" in done.stdout
    with locked_connection(warehouse) as con:
        assert execute(con, "SELECT count(*) FROM icbc_star").fetchall() == [(12,)]
        assert execute(con, "SELECT DISTINCT reason FROM icbc_star WHERE customer_id = 'defaulted' "
                            "AND as_of = DATE '2025-07-31'").fetchall() == [("credit_cap",)]
        assert execute(con, "SELECT count(*) FROM quarantine").fetchall() == [(0,)]


def test_the_shell_is_locked_too_and_never_execs_an_external_duckdb(warehouse, tmp_path):
    # A `duckdb` on PATH that leaves a mark: the shell must not hand the analyst an unlocked DuckDB.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "external-duckdb-ran"
    fake = bin_dir / "duckdb"
    fake.write_text(f"#!/bin/sh\ntouch '{marker}'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    outside = tmp_path / "outside.csv"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PREFECT_HOME": str(tmp_path / "prefect-home")}
    script = f"COPY (SELECT 1) TO '{outside}';\nSELECT 40 +\n 2 AS answer;\n"
    done = subprocess.run([str(TIERS), "sql", "--warehouse", str(warehouse)], input=script, env=env,
                          capture_output=True, text=True, timeout=120)
    # The refused statement makes the exit non-zero; the query after it still ran.
    assert done.returncode == 1 and not marker.exists() and not outside.exists()
    assert "42" in done.stdout and "Traceback" not in done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.strip()]
    assert line.startswith("error: query refused: ")


# -- views before anything is published --------------------------------------------------------------

def test_views_are_present_and_empty_on_a_fresh_warehouse(tmp_path, tiers_cli):
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for view in ("snapshots", "quarantine", "runs", PROGRAM, "boc_vip"):
        done = tiers_cli("sql", f"SELECT count(*) AS n FROM {view}", "--warehouse", str(fresh), check=True)
        assert "│ 0 │" in " ".join(done.stdout.split()), (view, done.stdout)
    with locked_connection(fresh) as con:
        for view in ("snapshots", "quarantine", "runs"):
            described = con.execute(f"DESCRIBE {view}").fetchall()
            assert [(name, kind) for name, kind, *_ in described] == list(EMPTY_SCHEMAS[view]), view
    assert sorted(p.name for p in fresh.iterdir()) == []  # reading wrote nothing


def test_no_warehouse_is_one_plain_line(tmp_path, tiers_cli):
    line = one_plain_line(tiers_cli("sql", "SELECT 1", "--warehouse", str(tmp_path / "nowhere")))
    assert line.startswith("error: ") and "nowhere" in line


def test_after_a_failed_first_run_the_quarantine_is_queryable(tmp_path, tiers_cli):
    landing = Path(shutil.copytree(GOLDEN / "icbc_money" / "landing", tmp_path / "landing"))
    with open(landing / "balances" / "2025-06.csv", "a") as balances:
        balances.write("stray-account,remitter,time_deposit,CNY,2025-06-15,abc,\n")
    warehouse = tmp_path / "warehouse"
    failed = tiers_cli("backfill", "--input", str(landing), "--from", "2025-06", "--to", "2025-06",
                       "--warehouse", str(warehouse), "--program", PROGRAM)
    assert failed.returncode != 0 and "bad rows" in failed.stderr

    done = tiers_cli("sql", "SELECT (SELECT count(*) FROM snapshots) AS published, dataset, problem_column, "
                     "count(*) AS bad FROM quarantine GROUP BY ALL", "--warehouse", str(warehouse), check=True)
    row = " ".join(done.stdout.split())
    assert "│ 0 │ balances │ balance │ 1 │" in row, done.stdout


def test_run_log_and_equity_files_get_their_views(tmp_path):
    warehouse = tmp_path / "warehouse"
    (warehouse / "runs").mkdir(parents=True)
    (warehouse / "equity").mkdir()
    columns = ", ".join(f"CAST(NULL AS {kind}) AS {name}" for name, kind in EMPTY_SCHEMAS["runs"])
    duckdb.sql(f"COPY (SELECT * REPLACE ('r1' AS run_id, 'succeeded' AS outcome) FROM (SELECT {columns})) "
               f"TO '{warehouse / 'runs' / 'run-r1.parquet'}' (FORMAT parquet)")
    duckdb.sql(f"COPY (SELECT 'c1' AS customer_id, 0.5 AS gap) TO '{warehouse / 'equity' / 'gaps.parquet'}' "
               "(FORMAT parquet)")
    with locked_connection(warehouse) as con:
        assert execute(con, "SELECT run_id, outcome FROM runs").fetchall() == [("r1", "succeeded")]
        assert execute(con, "SELECT customer_id FROM equity_gaps").fetchall() == [("c1",)]


# -- a warehouse whose name is a glob pattern ---------------------------------------------------------

def test_a_bracketed_warehouse_reads_its_own_files_not_the_decoys(published, tmp_path, tiers_cli):
    real = Path(shutil.copytree(published, tmp_path / "wh[1]"))
    decoy = Path(shutil.copytree(published, tmp_path / "wh1"))
    # Same customers, another tier name in every snapshot: whichever is read shows.
    for path in decoy.rglob("data.parquet"):
        duckdb.sql(f"COPY (SELECT * REPLACE ('DECOY' AS tier_name) FROM read_parquet('{path}')) "
                   f"TO '{path}.new' (FORMAT parquet)")
        os.replace(f"{path}.new", path)

    def sql(where: Path) -> str:
        return tiers_cli("sql", "SELECT DISTINCT tier_name FROM snapshots ORDER BY ALL", "--warehouse", str(where),
                         check=True).stdout

    assert "DECOY" in sql(decoy) and "DECOY" not in sql(real) and "five-star" in sql(real)
    explained = tiers_cli("explain", "gold-card", "--month", "2025-08", "--warehouse", str(real), check=True).stdout
    assert "Tier in force: 5 five-star" in explained and "DECOY" not in explained
    assert "DECOY" in tiers_cli("explain", "gold-card", "--month", "2025-08", "--warehouse", str(decoy),
                                check=True).stdout
    tiers_cli("report", "--month", "2025-08", "--warehouse", str(real), check=True)
    html = (real / "reports" / PROGRAM / "2025-08.html").read_text(encoding="utf-8")
    assert "five-star" in html and "DECOY" not in html


# -- never the writer's database ----------------------------------------------------------------------

def test_readers_work_while_another_process_holds_the_database(warehouse, tiers_cli):
    """DuckDB lets one process open a database file for writing and no other process open it at all:
    a reader that opened tiers.duckdb would fail here (and, the other way round, break a run)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
                               "sys.stdin.read()", str(warehouse / "tiers.duckdb")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        tiers_cli("sql", "SELECT count(*) FROM snapshots", "--warehouse", str(warehouse), check=True)
        tiers_cli("explain", "defaulted", "--month", "2025-07", "--warehouse", str(warehouse), check=True)
        tiers_cli("report", "--month", "2025-08", "--warehouse", str(warehouse), check=True)
    finally:
        holder.communicate("", timeout=30)


@pytest.mark.slow
def test_readers_loop_through_a_backfill_and_the_backfill_succeeds(tmp_path):
    landing = Path(shutil.copytree(GOLDEN / "icbc_buffers" / "landing", tmp_path / "landing"))
    warehouse = tmp_path / "warehouse"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    readers = {
        "sql": ["sql", "SELECT program, as_of, count(*) FROM snapshots GROUP BY ALL"],
        "explain": ["explain", "recovers", "--month", "2024-12"],
        "report": ["report", "--month", "2024-12"],
        "whatif": ["whatif", "--rules", str(GOLDEN.parent.parent / "rules" / f"{PROGRAM}.yaml"),
                   "--input", str(landing), "--from", "2024-12", "--to", "2025-01"],
    }
    # A run publishes its months together at its end (one change), so 2024-12 is published first: the
    # readers then have a month to read while the backfill of the rest runs.
    subprocess.run([str(TIERS), "backfill", "--input", str(landing), "--from", "2024-12", "--to", "2024-12",
                    "--warehouse", str(warehouse), "--program", PROGRAM], env=env, check=True, capture_output=True,
                   timeout=300)
    backfill = subprocess.Popen(
        [str(TIERS), "backfill", "--input", str(landing), "--from", "2025-01", "--to", "2025-08",
         "--warehouse", str(warehouse), "--program", PROGRAM],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outcomes: list[tuple[str, subprocess.CompletedProcess]] = []

    def loop(name: str, arguments: list[str]) -> None:
        # Each reader in its own loop: the what-if (a Prefect flow) is slow, the others cycle fast.
        while backfill.poll() is None:
            done = subprocess.run([str(TIERS), *arguments, "--warehouse", str(warehouse)], env=env,
                                  capture_output=True, text=True, timeout=300)
            outcomes.append((name, done))
            # A pause: on a small machine, back-to-back processes would starve the run's Prefect server
            # start (a CPU contest, not a lock, and not what this test is about).
            time.sleep(2)

    threads = [threading.Thread(target=loop, args=item) for item in readers.items()]
    try:
        for thread in threads:
            thread.start()
        stdout, stderr = backfill.communicate(timeout=600)
        for thread in threads:
            thread.join(timeout=600)
    finally:
        if backfill.poll() is None:
            backfill.kill()
    assert backfill.returncode == 0, stderr
    assert "Traceback" not in stdout + stderr
    for name, done in outcomes:
        if done.returncode != 0:
            # Allowed: nothing (or not that month) published yet, said plainly. Never a lock, a traceback, a bug.
            line = one_plain_line(done)
            assert line.startswith("error: ") and "lock" not in line.lower(), (name, line)
    ran = {name: [done.returncode for n, done in outcomes if n == name] for name in readers}
    print(ran)
    # The readers really ran beside the run, and sql answered once the warehouse folder existed.
    assert all(ran.values()) and len(ran["sql"]) >= 5, ran
    sql = [done for name, done in outcomes if name == "sql"]
    assert any(d.returncode == 0 for d in sql) and all(d.returncode == 0 or "no warehouse there" in d.stderr for d in sql)
    assert 0 in ran["explain"] and 0 in ran["report"], ran  # 2024-12 is the run's first month
    # The run published every month, and the readers wrote only their own folders.
    months = sorted(p.name for p in (warehouse / "snapshots" / f"program={PROGRAM}").iterdir())
    assert months[0] == "as_of=2024-12-31" and months[-1] == "as_of=2025-08-31" and len(months) == 9
    assert not list((warehouse / "staging").glob("report-*"))


def test_a_script_piped_into_the_shell_fails_when_a_statement_is_refused(warehouse, tmp_path):
    """Statements from standard input run on the locked connection; one refusal makes the exit non-zero."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    script = "SELECT count(*) AS n FROM icbc_star;\nATTACH '" + str(warehouse / "tiers.duckdb") + "' AS w;\n"
    done = subprocess.run([str(TIERS), "sql", "--warehouse", str(warehouse)], input=script, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "12" in done.stdout  # the query before the refusal ran
    assert done.stderr.strip().startswith("error: query refused")


def test_output_cut_short_by_its_reader_ends_quietly(warehouse, tmp_path):
    """`tiers sql ... | head`: the reader closing the pipe is no error of ours."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    done = subprocess.run(f"'{TIERS}' sql 'SELECT * FROM range(100000)' --max-rows 100000 --warehouse '{warehouse}' "
                          "| head -1; echo \"exit=${PIPESTATUS[0]}\"", shell=True, executable="/bin/bash",
                          env=env, capture_output=True, text=True, timeout=120)
    assert "exit=141" in done.stdout and done.stderr == "", done.stderr
