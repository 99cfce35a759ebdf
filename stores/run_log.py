"""The run log: one Parquet file per writing run, ``<warehouse>/runs/run-<run_id>.parquet``.

Readers (``tiers sql``'s ``runs`` view) see every run, failed ones included, without opening the
writer's database. A file is written beside its final name and renamed, so a reader never sees half.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq

from stores.warehouse import Warehouse

SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("command", pa.string()),
    ("started_at", pa.timestamp("us", tz="UTC")),
    ("finished_at", pa.timestamp("us", tz="UTC")),
    ("months", pa.list_(pa.string())),
    ("programs", pa.list_(pa.string())),
    ("outcome", pa.string()),  # succeeded or failed
    ("message", pa.string()),
    ("rows_read", pa.int64()),
    ("rows_used", pa.int64()),
    ("rows_quarantined", pa.int64()),
])


@dataclass
class RunRecord:
    run_id: str
    command: str
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    months: list[str] = field(default_factory=list)
    programs: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_used: int = 0
    rows_quarantined: int = 0


def write(warehouse: Warehouse, record: RunRecord, outcome: str, message: str) -> None:
    folder = warehouse.root / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    row = {**record.__dict__, "finished_at": datetime.now(timezone.utc), "outcome": outcome, "message": message}
    table = pa.Table.from_pylist([row], schema=SCHEMA)
    target = folder / f"run-{record.run_id}.parquet"
    staged = folder / f".{target.name}.{uuid.uuid4().hex}"
    pq.write_table(table, staged)
    os.replace(staged, target)
