"""`tiers sql`: the published snapshots as DuckDB views, for a query or an interactive shell.

Views: `snapshots` (every program, hive columns program and as_of), one view per program named after
it (e.g. `icbc_star`), and `quarantine` (every quarantined row) when there is one. All read the
Parquet files directly, in an in-memory database: nothing touches the warehouse's DuckDB file, so
this works while a run is writing.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import duckdb

from tiers.errors import TiersError
from tiers.snapshots import published_programs
from tiers.warehouse import Warehouse
from transforms.runner import literal


def view_statements(warehouse_dir: Path) -> list[str]:
    warehouse = Warehouse(Path(warehouse_dir))
    programs = published_programs(warehouse)
    if not programs:
        raise TiersError(f"{warehouse.snapshots}: no published snapshots to query")
    # union_by_name: programs add different explanatory columns (pts_*, fig_*).
    statements = [
        f"CREATE OR REPLACE VIEW snapshots AS SELECT * FROM read_parquet("
        f"{literal(warehouse.snapshots / '*' / '*' / 'data.parquet')}, hive_partitioning = true, union_by_name = true)"
    ]
    for program in programs:
        folder = warehouse.snapshots / f"program={program}"
        statements.append(
            f'CREATE OR REPLACE VIEW "{program}" AS SELECT * FROM read_parquet('
            f"{literal(folder / '*' / 'data.parquet')}, hive_partitioning = true)"
        )
    if any(warehouse.quarantine.rglob("*.parquet")):
        statements.append(
            f"CREATE OR REPLACE VIEW quarantine AS SELECT * FROM read_parquet("
            f"{literal(warehouse.quarantine / '*' / '*.parquet')}, union_by_name = true)"
        )
    return statements


def connect(warehouse_dir: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for statement in view_statements(warehouse_dir):
        con.execute(statement)
    return con


def run_query(warehouse_dir: Path, query: str, max_rows: int) -> None:
    con = connect(warehouse_dir)
    try:
        relation = con.sql(query)
    except duckdb.Error as error:
        raise TiersError(f"query failed: {str(error).strip().splitlines()[0]}") from None
    if relation is not None:
        relation.show(max_rows=max_rows, max_width=10_000)


def open_shell(warehouse_dir: Path) -> None:
    """The DuckDB command-line shell with the views, when one is installed (`pip install duckdb-cli`);
    otherwise statements are read from standard input, one per `;`."""
    statements = view_statements(warehouse_dir)
    shell = shutil.which("duckdb")
    if shell:
        arguments = [shell]
        for statement in statements:
            arguments += ["-cmd", statement + ";"]
        os.execv(shell, arguments)
    con = duckdb.connect()
    for statement in statements:
        con.execute(statement)
    interactive = sys.stdin.isatty()
    if interactive:
        print("DuckDB (no shell installed: statements end with ';', Ctrl-D quits). Views: snapshots, "
              "one per program, quarantine.")
    pending = ""
    for line in sys.stdin:
        pending += line
        if pending.strip().endswith(";"):
            try:
                relation = con.sql(pending)
                if relation is not None:
                    relation.show(max_width=10_000)
            except duckdb.Error as error:
                print(f"error: {str(error).strip().splitlines()[0]}", file=sys.stderr)
            pending = ""
