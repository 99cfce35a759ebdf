"""One program-month evaluated in buckets of customers, each bucket on its own in-memory DuckDB.

Customers are independent: every per-customer step of the evaluation (figure_measures ->
tier_decisions -> snapshot) reads only that customer's rows. So the coordinator, the one process that
opens the warehouse's DuckDB file, exports what one evaluation reads, split by
``hash(customer_id) % partitions``, into a run folder under the warehouse's staging folder:

    <warehouse>/staging/partitioned-<id>/
        schema/<table>.parquet              no rows: the table's columns and types
        inputs/<table>/bucket=<k>/*.parquet  the bucket's rows (no folder when the bucket has none)
        parts/part-<k>.parquet              the bucket's snapshot rows, written by whoever evaluated it

``evaluate_bucket`` (run by a Dask worker, or any process that sees the folder at the same path) loads
one bucket into ``duckdb.connect()`` and runs ``evaluate.write_snapshot`` on it, the same SQL as the
single-process path. ``combine`` concatenates the parts ORDER BY customer_id into one file, which is
published with the same rename and manifest as the single-process path: the same columns, types,
rows and order.

Only the window's months of the stored monthly sums go out, and only this program's transaction figures.
Tables of no customer (fx_rates, for figures valued in another currency) go to every bucket whole.
Which bucket a customer falls in does not matter for the result; the hash is computed once, here.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb

from rules.loader import LoadedProgram, Vocabularies
from stores import snapshots
from ground.months import Month, window
from ground.paths import duckdb_path, path_literal
from stores.warehouse import Warehouse
from transforms import evaluate as evaluation
from rules import sources
from transforms import runner

RUN_PREFIX = "partitioned-"
# A memory size as TIERS_DUCKDB_MEMORY_LIMIT spells it, in DuckDB's units (KB = 1000 bytes, KiB = 1024).
_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*([KMGT])(i?)B$")



def _export_query(source: sources.DataSource) -> str:
    """What one evaluation reads of a source's warehouse table: a monthly one's window of months (and for
    transactions, this program's figures), a reference table whole."""
    if not source.monthly:
        return f"SELECT * FROM {source.table}"
    program = " AND program = $program" if source.per_program else ""
    return f"SELECT * FROM {source.table} WHERE month BETWEEN ${source.name}_from AND $month_start{program}"


@dataclass(frozen=True)
class Exported:
    run_dir: Path
    partitions: int
    initial: bool  # no snapshot of the month before: an initial evaluation
    rows: dict[str, int]  # rows exported per input table


def new_run_dir(warehouse: Warehouse) -> Path:
    """A fresh folder under staging (cleared by the next writing run if this one is killed)."""
    run_dir = warehouse.staging.resolve() / f"{RUN_PREFIX}{uuid.uuid4().hex}"
    run_dir.mkdir(parents=True)
    return run_dir


def memory_bytes(size: str) -> int:
    """``4GB`` -> 4_000_000_000, ``512MiB`` -> 536_870_912 (what a bucket's ``SET memory_limit`` gets, in bytes)."""
    match = _SIZE.match(size.strip())
    if not match:
        raise ValueError(f"not a memory size: {size!r}")
    number, unit, binary = match.groups()
    base = 1024 if binary else 1000
    return int(float(number) * base ** ("KMGT".index(unit) + 1))


def _first_month(loaded: LoadedProgram, month: Month, dataset: str) -> Month:
    months = window(month, loaded.rules.history_months.get(dataset, 0))
    # A program with no figure of this source reads none of it: an empty range.
    return months[0] if months else month.plus(1)


def export(con: duckdb.DuckDBPyConnection, warehouse: Warehouse, loaded: LoadedProgram, month: Month,
           run_dir: Path, partitions: int, run_id: str) -> Exported:
    """Write the inputs of one evaluation of ``loaded`` at ``month``, in ``partitions`` buckets, under ``run_dir``.

    ``con`` is the warehouse's connection; last month's state comes from the snapshot run ``run_id``
    staged or the published one, as in the single-process path (and the same chain checks apply)."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    prev_path = evaluation.predecessor(warehouse, loaded.name, month, run_id)
    if prev_path is not None:
        snapshots.verify_published(warehouse, prev_path)
    evaluation.valuation_rates(con, loaded, month)  # a missing rate fails here, not in every bucket
    prev_query, prev_params = evaluation.prev_snapshot_query(prev_path)
    params = {
        "program": loaded.name,
        "month_start": month.first_day,
        **{f"{source.name}_from": _first_month(loaded, month, source.name).first_day for source in sources.monthly()},
        **prev_params,
    }
    queries = {source.table: _export_query(source) for source in sources.evaluation_tables()}
    shared = {source.table for source in sources.evaluation_tables() if not source.per_customer}
    queries["prev_snapshot"] = prev_query
    assert set(queries) == set(evaluation.INPUT_TABLES)
    (run_dir / "schema").mkdir(parents=True, exist_ok=True)
    (run_dir / "inputs").mkdir(exist_ok=True)
    (run_dir / "parts").mkdir(exist_ok=True)
    rows = {}
    for table, query in queries.items():
        bound = runner.bind(query, params)
        con.execute(f"COPY (SELECT * FROM ({query}) LIMIT 0) TO {path_literal(schema_file(run_dir, table))} "
                    "(FORMAT parquet)", bound)
        if table in shared:  # no customer_id: every bucket reads the whole table
            folder = run_dir / "inputs" / table / "all"
            folder.mkdir(parents=True, exist_ok=True)
            [(rows[table],)] = con.execute(
                f"COPY ({query}) TO {path_literal(folder / 'data.parquet')} (FORMAT parquet)", bound).fetchall()
            continue
        # PARTITION_BY writes inputs/<table>/bucket=<k>/ for each bucket with rows, without the bucket column.
        [(count,)] = con.execute(
            f"COPY (SELECT *, CAST(hash(customer_id) % CAST($partitions AS UBIGINT) AS INTEGER) AS bucket "
            f"FROM ({query})) TO {path_literal(run_dir / 'inputs' / table)} "
            "(FORMAT parquet, PARTITION_BY (bucket), OVERWRITE)",
            {**bound, "partitions": partitions},
        ).fetchall()
        rows[table] = count
    return Exported(run_dir, partitions, prev_path is None, rows)


def schema_file(run_dir: Path, table: str) -> Path:
    return run_dir / "schema" / f"{table}.parquet"


def bucket_files(run_dir: Path, table: str, bucket: int) -> list[Path]:
    """The bucket's files of ``table``, after the table's empty schema file (so an empty bucket has its columns)."""
    folder = run_dir / "inputs" / table / f"bucket={bucket}"
    shared = run_dir / "inputs" / table / "all"  # a table without customer_id, whole in every bucket
    return [schema_file(run_dir, table), *sorted(folder.glob("*.parquet")), *sorted(shared.glob("*.parquet"))]


def part_file(run_dir: Path, bucket: int) -> Path:
    return run_dir / "parts" / f"part-{bucket}.parquet"


def load_bucket(con: duckdb.DuckDBPyConnection, run_dir: Path, bucket: int) -> None:
    """Create the evaluation's input tables on ``con`` from one bucket's files."""
    for table in evaluation.INPUT_TABLES:
        files = [duckdb_path(path) for path in bucket_files(run_dir, table, bucket)]
        con.execute(
            f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM read_parquet($files, hive_partitioning = false)",
            {"files": files},
        )


def evaluate_bucket(run_dir: Path, bucket: int, loaded: LoadedProgram, vocab: Vocabularies, month: Month,
                    memory_limit_bytes: int) -> dict:
    """Evaluate one bucket in a new in-memory DuckDB and write its part; returns small values only.

    The part is written beside its final name and renamed, so a retried or repeated bucket never leaves
    half a file. ``undefined`` counts customers whose tier the rule file no longer defines (then no part
    is written and the coordinator refuses the month, as the single-process path does)."""
    started = time.perf_counter()
    spill = Path(tempfile.mkdtemp(prefix="tiers-bucket-"))  # local disk: spilling over NFS is slow
    try:
        with duckdb.connect() as con:
            con.execute("SET memory_limit = $limit", {"limit": f"{int(memory_limit_bytes)}B"})
            con.execute("SET temp_directory = $dir", {"dir": str(spill)})
            load_bucket(con, run_dir, bucket)
            seconds = {"load": time.perf_counter() - started}
            target = part_file(run_dir, bucket)
            staged = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
            written = evaluation.write_snapshot(con, loaded, vocab, month, staged)
            if not written.undefined[0]:
                os.replace(staged, target)
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    return {"bucket": bucket, "rows": written.rows, "undefined": list(written.undefined),
            "seconds": {**seconds, **written.seconds}}


def undefined_tiers(results: list[dict]) -> tuple[int, int | None]:
    """The buckets' counts of customers holding a tier no longer defined, as one evaluation would count them."""
    found = [r["undefined"] for r in results if r["undefined"][0]]
    if not found:
        return 0, None
    return sum(f[0] for f in found), min(f[1] for f in found)


def combine(con: duckdb.DuckDBPyConnection, warehouse: Warehouse, run_dir: Path, partitions: int) -> tuple[Path, int]:
    """Every bucket's part, ORDER BY customer_id, in one staged snapshot file; returns it and its rows."""
    parts = [part_file(run_dir, bucket) for bucket in range(partitions)]
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: a bucket's part is missing ({len(missing)} of {partitions})")
    staged = snapshots.staging_file(warehouse)
    [(rows,)] = con.execute(
        f"COPY ({evaluation.all_nullable('SELECT * FROM read_parquet($parts, hive_partitioning = false)')} "
        "ORDER BY customer_id) "
        f"TO {path_literal(staged)} (FORMAT parquet, COMPRESSION zstd)",
        {"parts": [duckdb_path(p) for p in parts]},
    ).fetchall()
    return staged, rows
