"""The warehouse's staging area and settings: what a killed run leaves is cleared by the next writer."""

from __future__ import annotations

from pathlib import Path

import pytest

from stores import warehouse as warehouse_module
from ground.errors import TiersError
from stores.warehouse import Warehouse

GOLDEN = Path(__file__).resolve().parent / "golden"


def test_the_next_run_clears_what_a_killed_run_staged(prefect_harness, tmp_path):
    from flows.runs import backfill

    store = Warehouse(tmp_path / "warehouse")
    store.prepare()
    orphans = [store.staging / "snapshot-dead.parquet", store.staging / "manifest-dead.json"]
    report_in_progress = store.staging / "report-live.html"  # reports stage without the writer lock
    for path in orphans + [report_in_progress]:
        path.write_text("left by a killed process")

    backfill.fn(str(GOLDEN / "icbc_money" / "landing"), "2025-06", "2025-06", str(store.root), ["icbc_star"])

    assert not any(path.exists() for path in orphans)
    assert report_in_progress.exists()
    assert list(store.staging.glob("snapshot-*")) == [] and list(store.staging.glob("manifest-*")) == []


def test_a_malformed_memory_limit_is_a_plain_error(tmp_path, monkeypatch):
    monkeypatch.setattr(warehouse_module, "DEFAULT_MEMORY_LIMIT", "4GB'; DROP TABLE customers; --")
    with pytest.raises(TiersError, match="TIERS_DUCKDB_MEMORY_LIMIT"):
        Warehouse(tmp_path / "w").connect()
    monkeypatch.setattr(warehouse_module, "DEFAULT_MEMORY_LIMIT", "512MB")
    with Warehouse(tmp_path / "w").connect() as con:
        [(limit,)] = con.execute("SELECT current_setting('memory_limit')").fetchall()
    assert limit == "488.2 MiB"  # DuckDB shows 512 MB in binary units
