"""The snapshots read with each client's default call (data contract section 3; issue 13, point 1).

One program's folder: `pandas.read_parquet(dir)`, `pyarrow.dataset.dataset(dir, partitioning="hive")`,
`polars.scan_parquet(dir, hive_partitioning=True)` and DuckDB's `read_parquet(..., hive_partitioning =
true)`, each with all its columns; the whole tree with the call docs/queries.md shows for each client.
Every month computed with the same rule file has one schema (all columns nullable), `points` is an
exact decimal, and `as_of` is a date where the client infers partition types (DuckDB, polars).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from test_reliability import copy_landing
from ground.paths import duckdb_path

PROGRAMS = ["icbc_star", "bohai_wealth"]


@pytest.fixture(scope="module")
def warehouse(prefect_harness, tmp_path_factory) -> Path:
    """Three months of two programs whose columns differ; the first month of each is initial, so
    previous_tier is all NULL there and set later."""
    from flows.runs import backfill

    base = tmp_path_factory.mktemp("readers").resolve()
    landing = copy_landing(base / "landing")
    backfill.fn(str(landing), "2025-04", "2025-06", str(base / "warehouse"), PROGRAMS)
    return base / "warehouse"


def _files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.parquet"))


def _rows(folder: Path) -> list[dict]:
    """The snapshots' rows as written, with the hive columns from the path."""
    rows = []
    for path in _files(folder):
        program, as_of = (part.split("=", 1)[1] for part in path.parts[-3:-1])
        rows += [{**row, "program": program, "as_of": as_of} for row in pq.read_table(path).to_pylist()]
    return sorted(rows, key=lambda r: (r["program"], r["as_of"], r["customer_id"]))


def test_the_snapshot_tree_holds_parquet_files_only(warehouse):
    files = [p for p in (warehouse / "snapshots").rglob("*") if p.is_file()]
    assert files and all(p.suffix == ".parquet" for p in files)


@pytest.mark.parametrize("program", PROGRAMS)
def test_every_month_of_a_program_has_one_schema(warehouse, program):
    schemas = {pq.read_schema(p).remove_metadata() for p in _files(warehouse / "snapshots" / f"program={program}")}
    assert len(schemas) == 1
    [schema] = schemas
    assert all(field.nullable for field in schema)
    assert schema.field("points").type == pa.decimal128(18, 2)


@pytest.mark.parametrize("program", PROGRAMS)
def test_one_program_folder_reads_whole_by_each_client_default_call(warehouse, program):
    folder = warehouse / "snapshots" / f"program={program}"
    expected = [{k: v for k, v in row.items() if k != "program"} for row in _rows(folder)]
    columns = set(pq.read_schema(_files(folder)[0]).names) | {"as_of"}
    key = lambda r: (str(r["as_of"]), r["customer_id"])  # noqa: E731

    relation = duckdb.sql(f"SELECT * FROM read_parquet('{duckdb_path(folder)}/*/*.parquet', hive_partitioning = true)")
    pandas_frame = pd.read_parquet(folder)
    # Each client's own values (not a conversion through another library's types).
    read = {
        "pandas": (set(pandas_frame.columns),
                   pandas_frame.astype(object).where(pandas_frame.notna(), None).to_dict("records")),
        "pyarrow": (set(ds.dataset(folder, partitioning="hive").schema.names),
                    ds.dataset(folder, partitioning="hive").to_table().to_pylist()),
        "polars": (set(pl.scan_parquet(folder, hive_partitioning=True).collect_schema().names()),
                   pl.scan_parquet(folder, hive_partitioning=True).collect().to_dicts()),
        "duckdb": (set(relation.columns), [dict(zip(relation.columns, row)) for row in relation.fetchall()]),
    }
    for client, (names, records) in read.items():
        # DuckDB also reads `program` from the folder's own name (program=...): a column more, not fewer.
        assert columns <= names <= columns | {"program"}, client
        rows = sorted(records, key=key)
        assert len(rows) == len(expected), client
        for got, want in zip(rows, sorted(expected, key=key)):
            assert str(got["as_of"])[:10] == want["as_of"], client
            assert {k: v for k, v in got.items() if k not in ("as_of", "program")} == {
                k: v for k, v in want.items() if k != "as_of"}, client
    # Exact decimals, and as_of a date where the client types partitions.
    assert pl.scan_parquet(folder, hive_partitioning=True).collect_schema()["as_of"] == pl.Date
    assert pl.scan_parquet(folder, hive_partitioning=True).collect_schema()["points"] == pl.Decimal(18, 2)
    described = {
        row[0]: row[1] for row in duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{duckdb_path(folder)}/*/*.parquet', "
                                             "hive_partitioning = true)").fetchall()}
    assert described["as_of"] == "DATE" and described["points"] == "DECIMAL(18,2)"
    assert all(isinstance(r["points"], Decimal) for r in expected if r["points"] is not None)


def test_the_whole_tree_reads_with_the_documented_calls(warehouse):
    """docs/queries.md: DuckDB unions by name; pyarrow and polars are given the union of the schemas."""
    root = warehouse / "snapshots"
    expected = _rows(root)
    every_column = set().union(*(pq.read_schema(p).names for p in _files(root))) | {"program", "as_of"}

    in_duckdb = duckdb.sql(f"SELECT * FROM read_parquet('{duckdb_path(root)}/*/*/*.parquet', hive_partitioning = true, "
                           "union_by_name = true)").df()
    schema = pa.unify_schemas([pq.read_schema(p) for p in _files(root)])
    in_pyarrow = ds.dataset(root, partitioning="hive", schema=schema.append(pa.field("program", pa.string()))
                            .append(pa.field("as_of", pa.string()))).to_table().to_pandas()
    in_polars = pl.concat([pl.scan_parquet(folder, hive_partitioning=True)
                           .with_columns(program=pl.lit(folder.name.removeprefix("program=")))
                           for folder in sorted(root.glob("program=*"))], how="diagonal_relaxed").collect().to_pandas()
    for client, frame in {"duckdb": in_duckdb, "pyarrow": in_pyarrow, "polars": in_polars}.items():
        assert set(frame.columns) == every_column, client
        assert len(frame) == len(expected), client
        assert sorted(frame["program"].astype(str).unique()) == sorted(PROGRAMS), client
