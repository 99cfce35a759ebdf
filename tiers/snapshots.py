"""The published snapshots: where they live, which months exist, and publishing one atomically.

    <warehouse>/snapshots/program=<program>/as_of=<YYYY-MM-DD>/data.parquet

A month's snapshot is one file, replaced with one rename(2) of a file that was written and fsynced
under <warehouse>/staging (same filesystem, outside the snapshot tree). Readers therefore see the old
complete file or the new complete file, never a partial one, whatever moment a crash happens at.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from datetime import date
from pathlib import Path

from tiers.months import Month
from tiers.warehouse import Warehouse

SNAPSHOT_FILE = "data.parquet"
# Beside the data: what went in, with which rules and code, and how long each stage took.
MANIFEST_FILE = "manifest.json"
_AS_OF = re.compile(r"^as_of=(\d{4}-\d{2}-\d{2})$")


def program_dir(warehouse: Warehouse, program: str) -> Path:
    return warehouse.snapshots / f"program={program}"


def snapshot_path(warehouse: Warehouse, program: str, month: Month) -> Path:
    return program_dir(warehouse, program) / f"as_of={month.last_day.isoformat()}" / SNAPSHOT_FILE


def published_months(warehouse: Warehouse, program: str) -> list[Month]:
    """Months of ``program`` with a published snapshot, oldest first."""
    folder = program_dir(warehouse, program)
    if not folder.is_dir():
        return []
    months = []
    for child in folder.iterdir():
        match = _AS_OF.match(child.name)
        if match and (child / SNAPSHOT_FILE).is_file():
            months.append(Month.of(date.fromisoformat(match.group(1))))
    return sorted(months)


# Folders a writing run stages: a partitioned evaluation's inputs and parts, and the Dask storage check.
STAGED_RUN_FOLDERS = ("partitioned-*", "dask-probe-*")


def clear_staging(warehouse: Warehouse) -> None:
    """Remove snapshot and manifest files (and partitioned-evaluation folders) staged by a run that was
    killed before its rename. Call it holding the writer lock: only a writing run stages these (reports
    stage their own, under report-*)."""
    for pattern in ("snapshot-*.parquet", "manifest-*.json"):
        for orphan in warehouse.staging.glob(pattern):
            orphan.unlink(missing_ok=True)
    for pattern in STAGED_RUN_FOLDERS:
        for orphan in warehouse.staging.glob(pattern):
            if orphan.is_dir():
                shutil.rmtree(orphan, ignore_errors=True)


def published_programs(warehouse: Warehouse, month: Month | None = None) -> list[str]:
    """Programs with a published snapshot (of ``month``, when given), by name."""
    if not warehouse.snapshots.is_dir():
        return []
    names = sorted(p.name.removeprefix("program=") for p in warehouse.snapshots.glob("program=*") if p.is_dir())
    return [name for name in names
            if (months := published_months(warehouse, name)) and (month is None or month in months)]


def staging_file(warehouse: Warehouse) -> Path:
    warehouse.staging.mkdir(parents=True, exist_ok=True)
    return warehouse.staging / f"snapshot-{uuid.uuid4().hex}.parquet"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def manifest_path(warehouse: Warehouse, program: str, month: Month) -> Path:
    return snapshot_path(warehouse, program, month).with_name(MANIFEST_FILE)


def publish_manifest(warehouse: Warehouse, target: Path, manifest: dict) -> None:
    """Written after the data it describes, also by one rename; it names the data's SHA-256, so a
    manifest left from an older run (a crash between the two renames) is recognisable."""
    staged = warehouse.staging / f"manifest-{uuid.uuid4().hex}.json"
    staged.write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    publish(staged, target)


def publish(staged: Path, target: Path) -> None:
    """Move a fully written file into place with one atomic rename, durable across a power cut."""
    _fsync(staged)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, target)
    _fsync(target.parent)
