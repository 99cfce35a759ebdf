"""Small read-only views of the published snapshots for the terminal."""

from __future__ import annotations

from pathlib import Path

import duckdb
from rich.table import Table

from ground.paths import duckdb_path
from stores.snapshots import program_dir
from stores.warehouse import Warehouse


def tier_counts(warehouse_dir: Path, program: str) -> Table:
    """Customers per tier (columns) per month-end (rows) for one program."""
    folder = program_dir(Warehouse(Path(warehouse_dir)), program)
    rows = duckdb.sql(
        "SELECT as_of, tier, tier_name, count(*) AS customers "
        "FROM read_parquet($glob, hive_partitioning = true) GROUP BY ALL ORDER BY as_of, tier DESC",
        params={"glob": duckdb_path(folder) + "/*/*.parquet"},  # the folder literally, its files by pattern
    ).fetchall()
    tiers = sorted({(tier, name) for _, tier, name, _ in rows}, reverse=True)
    # Tier numbers as headers keep the table narrow enough for an 80-column log; the caption names them.
    table = Table(
        title=f"{program}: customers per tier", title_justify="left",
        caption=", ".join(f"{tier} = {name}" for tier, name in tiers), caption_justify="left",
    )
    table.add_column("as_of", no_wrap=True)
    for tier, _ in tiers:
        table.add_column(str(tier), justify="right", no_wrap=True)
    by_month: dict = {}
    for as_of, tier, _, customers in rows:
        by_month.setdefault(as_of, {})[tier] = customers
    for as_of, counts in by_month.items():
        table.add_row(str(as_of), *(f"{counts.get(tier, 0):,}" for tier, _ in tiers))
    return table
