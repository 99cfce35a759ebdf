"""The warehouse folder: the DuckDB database, snapshots, quarantine, staging, and its writer lock."""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import duckdb
from filelock import FileLock, Timeout

from ground.errors import TiersError, WarehouseBusyError

DEFAULT_WAREHOUSE = Path("data/warehouse")
# DuckDB spills to disk past this; the month-end run shares its machine with other jobs. 3 GB keeps the
# whole process (DuckDB, Python, Prefect's client) under 4 GB resident.
DEFAULT_MEMORY_LIMIT = os.environ.get("TIERS_DUCKDB_MEMORY_LIMIT", "3GB")
_MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?\s*[KMGT]i?B$")


def keep_private() -> None:
    """Files and folders this process creates from now on (DuckDB's included) are not readable by other
    users of the machine: the warehouse holds customer data."""
    os.umask(os.umask(0o077) | 0o007)


def database_error(database: Path, error: duckdb.Error) -> TiersError:
    """DuckDB's error about the warehouse database, as one sentence a user can act on."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if "lock" in text.lower():
        return WarehouseBusyError(f"{database}: the warehouse database is open in another process ({text})")
    if any(cause in text for cause in ("Permission denied", "Read-only file system", "No space left")):
        return TiersError(f"{database}: cannot use the warehouse database ({text})")
    # It holds only what the landing folder rebuilds (ingested months and their fingerprints); the
    # published snapshots carry the state from month to month.
    return TiersError(
        f"{database}: the warehouse database is damaged ({text}); it holds nothing the landing folder cannot "
        f"rebuild: move it aside (mv '{database}' '{database}.damaged'; likewise its .wal file) and run the "
        "month again (tiers run --input DIR --month YYYY-MM), which re-ingests what it needs"
    )


@dataclass(frozen=True)
class Warehouse:
    root: Path

    @property
    def database(self) -> Path:
        return self.root / "tiers.duckdb"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def staging(self) -> Path:
        # Outside snapshots/: DuckDB globs over snapshots/** would also read staged files.
        return self.root / "staging"

    @property
    def lock_file(self) -> Path:
        return self.root / "tiers.lock"

    def prepare(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise TiersError(f"{self.root}: --warehouse names a file; expected a folder (it is created when missing)")
        if "?" in str(self.database.resolve()):
            # DuckDB reads '?' in a database path as the start of options: it would put the write-ahead
            # log at another path (wh.wal?x/...), outside the warehouse. Refused before anything is written.
            raise TiersError(f"{self.root}: a warehouse path with '?' cannot hold DuckDB's database (DuckDB reads "
                             "'?' as the start of options); choose a folder whose path has no '?'")
        keep_private()
        for folder in (self.root, self.snapshots, self.quarantine, self.staging):
            folder.mkdir(parents=True, exist_ok=True)
            # Customer data: owner and group only, also for a folder made before this rule.
            if folder.stat().st_mode & 0o007:
                folder.chmod(folder.stat().st_mode & ~0o007)

    def connect(self, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        """A connection to the warehouse database (its tables are the pipeline's: ``transforms.runner.connect``)."""
        self.prepare()
        try:
            con = duckdb.connect(str(self.database), read_only=read_only)
        except duckdb.Error as error:
            raise database_error(self.database, error) from None
        if not _MEMORY.match(DEFAULT_MEMORY_LIMIT):
            raise TiersError(f"TIERS_DUCKDB_MEMORY_LIMIT={DEFAULT_MEMORY_LIMIT!r}: expected a size such as 4GB or 512MB")
        con.execute("SET memory_limit = $limit", {"limit": DEFAULT_MEMORY_LIMIT})
        con.execute("SET temp_directory = $dir", {"dir": str(self.staging / "duckdb_spill")})
        return con

    @contextmanager
    def writer_lock(self, wait_seconds: float = 0) -> Iterator[None]:
        """One writing run per warehouse: a second one waits up to ``wait_seconds``, then fails plainly."""
        self.prepare()
        lock = FileLock(str(self.lock_file))
        try:
            lock.acquire(timeout=wait_seconds)
        except Timeout:
            raise WarehouseBusyError(
                f"another tiers run is writing to {self.root} (lock {self.lock_file}); "
                "wait for it to finish or pass --wait SECONDS"
            ) from None
        try:
            yield
        finally:
            lock.release()
