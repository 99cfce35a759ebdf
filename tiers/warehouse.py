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

from tiers.errors import TiersError, WarehouseBusyError
from transforms import runner

DEFAULT_WAREHOUSE = Path("data/warehouse")
# DuckDB spills to disk past this; the month-end run shares its machine with other jobs. 3 GB keeps the
# whole process (DuckDB, Python, Prefect's client) under 4 GB resident.
DEFAULT_MEMORY_LIMIT = os.environ.get("TIERS_DUCKDB_MEMORY_LIMIT", "3GB")
_MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?\s*[KMGT]i?B$")


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
        for folder in (self.root, self.snapshots, self.quarantine, self.staging):
            folder.mkdir(parents=True, exist_ok=True)

    def connect(self, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        """A connection with the warehouse schema in place."""
        self.prepare()
        con = duckdb.connect(str(self.database), read_only=read_only)
        if not _MEMORY.match(DEFAULT_MEMORY_LIMIT):
            raise TiersError(f"TIERS_DUCKDB_MEMORY_LIMIT={DEFAULT_MEMORY_LIMIT!r}: expected a size such as 4GB or 512MB")
        con.execute(f"SET memory_limit = '{DEFAULT_MEMORY_LIMIT}'")  # SET takes no parameters; checked above
        con.execute("SET temp_directory = $dir", {"dir": str(self.staging / "duckdb_spill")})
        if not read_only:
            runner.run(con, "warehouse_schema")
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
