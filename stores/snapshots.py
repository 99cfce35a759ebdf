"""The published snapshots: where they live, which months exist, and publishing a run's months as one change.

    <warehouse>/snapshots/program=<program>/as_of=<YYYY-MM-DD>/data.parquet
    <warehouse>/manifests/program=<program>/as_of=<YYYY-MM-DD>/manifest.json

The snapshot tree holds Parquet files only, so any Parquet reader's default call reads a folder of it;
each snapshot's manifest lives in the same layout under manifests/.

A month's snapshot is one file, replaced with one rename(2) of a file that was written and fsynced
under <warehouse>/staging (same filesystem, outside the snapshot tree). Readers therefore see the old
complete file or the new complete file, never a partial one, whatever moment a crash happens at.

A writing run stages every month it evaluates under ``staging/run-<run_id>/`` (a month's evaluation
reads the month before from there when the run staged it) and publishes them all at the end
(``commit_run``): first a journal, ``<warehouse>/publishing.json``, that lists the moves, then the
renames, then the journal goes. A crash before the journal leaves the published months as they were;
a crash after it is finished by the next writing run (``recover``), which repeats the moves still to
do. Each month's manifest names the run that made it, so until then a reader can tell which months
belong to which run. ``cascade.json`` remembers which programs a run set out to re-evaluate from which
month; a run killed before its journal leaves it behind, and the next run re-evaluates from there too
(its ingestion may already have replaced the data those months were computed from).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from datetime import date, datetime, timezone
from pathlib import Path

from ground.checksums import sha256_file
from ground.errors import StateError, TiersError
from ground.months import Month
from stores.warehouse import Warehouse

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


# Folders a writing run stages: its months, a partitioned evaluation's inputs and parts, and the Dask
# storage check.
STAGED_RUN_FOLDERS = ("run-*", "partitioned-*", "dask-probe-*")
JOURNAL_FILE = "publishing.json"
CASCADE_FILE = "cascade.json"


def clear_staging(warehouse: Warehouse) -> None:
    """Remove snapshot and manifest files (and run folders) staged by a run that stopped before its
    journal. Call it holding the writer lock, after ``recover``: only a writing run stages these (reports
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


def new_run_id() -> str:
    """Sorts by start time; the suffix tells apart runs started in the same second."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def run_dir(warehouse: Warehouse, run_id: str) -> Path:
    return warehouse.staging / f"run-{run_id}"


def staged_path(warehouse: Warehouse, run_id: str, published: Path) -> Path:
    """Where run ``run_id`` stages the file it will publish at ``published`` (the warehouse's layout,
    under the run's folder)."""
    return run_dir(warehouse, run_id) / published.relative_to(warehouse.root)


def staged_snapshot_path(warehouse: Warehouse, run_id: str, program: str, month: Month) -> Path:
    return staged_path(warehouse, run_id, snapshot_path(warehouse, program, month))


def _write_atomically(path: Path, content: dict) -> None:
    staged = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    staged.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    publish(staged, path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as error:
        raise StateError(f"{path}: not readable ({error}); it records an unfinished run: restore it, or "
                         "delete it and backfill every published month again") from None


def unfinished_cascades(warehouse: Warehouse) -> dict[str, Month]:
    """Programs a run set out to re-evaluate, from which month, and did not publish."""
    record = _read_json(warehouse.root / CASCADE_FILE) or {}
    return {program: Month.parse(first) for program, first in record.get("programs", {}).items()}


def record_cascade(warehouse: Warehouse, run_id: str, firsts: dict[str, Month]) -> None:
    """Before a run ingests anything: the months from which it will re-publish each program (merged with
    what an unfinished run left, which this run takes over)."""
    merged = unfinished_cascades(warehouse)
    for program, first in firsts.items():
        merged[program] = min(first, merged.get(program, first))
    _write_atomically(warehouse.root / CASCADE_FILE,
                      {"run_id": run_id, "programs": {p: str(m) for p, m in sorted(merged.items())}})


def _clear_cascade(warehouse: Warehouse, completed: dict[str, Month]) -> None:
    """Forget the cascades a published run covered: those of its programs from its first month on."""
    remaining = {program: first for program, first in unfinished_cascades(warehouse).items()
                 if program not in completed or first < completed[program]}
    path = warehouse.root / CASCADE_FILE
    if remaining:
        record = _read_json(path) or {}
        _write_atomically(path, {**record, "programs": {p: str(m) for p, m in sorted(remaining.items())}})
    else:
        path.unlink(missing_ok=True)
        _fsync(warehouse.root)


def note_in_manifests(warehouse: Warehouse, run_id: str, notes: dict) -> None:
    """Add what the whole run says (e.g. the programs it skipped) to each manifest it staged."""
    for manifest in run_dir(warehouse, run_id).rglob(MANIFEST_FILE):
        write_manifest(manifest, {**json.loads(manifest.read_text(encoding="utf-8")), **notes})


def commit_run(warehouse: Warehouse, run_id: str, firsts: dict[str, Month]) -> None:
    """Publish every file run ``run_id`` staged, as one change (see the module's doc). ``firsts``: each
    program's first evaluated month, whose cascade this completes."""
    staged_root = run_dir(warehouse, run_id)
    # Month by month, each month's data and then its manifest: a crash between two moves leaves at most
    # one month whose manifest does not yet describe its data (its SHA-256 tells).
    files = [p.relative_to(staged_root) for p in staged_root.rglob("*") if p.is_file()]
    moves = [str(p) for p in sorted(files, key=lambda p: (p.parts[1:], p.parts[0] != "snapshots"))]
    for relative in moves:
        _fsync(staged_root / relative)
    for folder in {(staged_root / relative).parent for relative in moves}:
        _fsync(folder)
    _write_atomically(warehouse.root / JOURNAL_FILE, {
        "run_id": run_id, "moves": moves, "completes": {p: str(m) for p, m in sorted(firsts.items())},
    })
    _finish(warehouse)


def journaled(warehouse: Warehouse, run_id: str) -> bool:
    """Whether run ``run_id`` has written its journal (its months are then published, now or by the next run)."""
    journal = _read_json(warehouse.root / JOURNAL_FILE)
    return journal is not None and journal["run_id"] == run_id


def _finish(warehouse: Warehouse) -> str | None:
    """Carry out the journal's moves still to do, then drop it; returns the run it finished, if any."""
    journal_path = warehouse.root / JOURNAL_FILE
    journal = _read_json(journal_path)
    if journal is None:
        return None
    try:
        run_id, moves = journal["run_id"], journal["moves"]
        completes = {p: Month.parse(m) for p, m in journal.get("completes", {}).items()}
    except (KeyError, TypeError, AttributeError, TiersError):
        raise StateError(f"{journal_path}: not a journal this project wrote; restore it, or delete it and backfill "
                         "every published month again") from None
    for relative in moves:
        parts = Path(relative).parts
        if not parts or parts[0] not in ("snapshots", "manifests") or ".." in parts or Path(relative).is_absolute():
            raise StateError(f"{journal_path}: a move outside the snapshots and manifests ({relative!r}); "
                             "restore the journal, or delete it and backfill every published month again")
    staged_root = run_dir(warehouse, run_id)
    for relative in moves:
        staged, target = staged_root / relative, warehouse.root / relative
        if staged.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target)
            _fsync(target.parent)
        elif not target.is_file():
            raise StateError(f"{journal_path}: run {run_id} staged {staged}, which is gone and was never published; "
                             "backfill the months of that run again")
    _clear_cascade(warehouse, completes)
    journal_path.unlink()
    _fsync(warehouse.root)
    shutil.rmtree(staged_root, ignore_errors=True)
    return run_id


def recover(warehouse: Warehouse) -> str | None:
    """At the start of a writing run (holding the lock): finish publishing a run that stopped during its
    moves, then clear whatever else a stopped run staged. Returns the run finished, if any."""
    finished = _finish(warehouse)
    clear_staging(warehouse)
    # Warehouses written before manifests moved out of the snapshot tree: move them to manifests/.
    for old_manifest in warehouse.snapshots.glob(f"program=*/as_of=*/{MANIFEST_FILE}"):
        target = manifest_of(warehouse, old_manifest.with_name(SNAPSHOT_FILE))
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(old_manifest, target)
    # Half-written records (a kill before their rename): the record in place is the one that counts.
    for leftover in warehouse.root.iterdir():
        if leftover.name.startswith((f".{JOURNAL_FILE}.", f".{CASCADE_FILE}.")):
            leftover.unlink(missing_ok=True)
    return finished


def staging_file(warehouse: Warehouse) -> Path:
    warehouse.staging.mkdir(parents=True, exist_ok=True)
    return warehouse.staging / f"snapshot-{uuid.uuid4().hex}.parquet"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def manifest_of(warehouse: Warehouse, snapshot: Path) -> Path:
    """The manifest of a published snapshot file: the same layout under manifests/."""
    return warehouse.root / "manifests" / snapshot.parent.relative_to(warehouse.snapshots) / MANIFEST_FILE


def manifest_path(warehouse: Warehouse, program: str, month: Month) -> Path:
    return manifest_of(warehouse, snapshot_path(warehouse, program, month))


def verify_published(warehouse: Warehouse, snapshot: Path) -> None:
    """Before a published snapshot is read back as last month's state: it must be the file its manifest
    describes (SHA-256), so a snapshot replaced outside a run is refused, never built on."""
    if warehouse.snapshots not in snapshot.parents:
        return  # staged by this run
    manifest_file = manifest_of(warehouse, snapshot)
    try:
        expected = json.loads(manifest_file.read_text(encoding="utf-8"))["snapshot"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        raise StateError(f"{snapshot}: its manifest {manifest_file} is missing or unreadable, so it cannot be told "
                         "to be the published snapshot; re-run that month (tiers backfill) to publish it again") from None
    if sha256_file(snapshot) != expected:
        raise StateError(f"{snapshot} is not the file its manifest describes (SHA-256 differs): it was changed "
                         "after it was published; re-run that month (tiers backfill) to publish it again")


def write_manifest(path: Path, manifest: dict) -> None:
    """Beside the staged data it describes; it names the data's SHA-256 and the run that made it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")


def publish(staged: Path, target: Path) -> None:
    """Move a fully written file into place with one atomic rename, durable across a power cut."""
    _fsync(staged)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, target)
    _fsync(target.parent)
