"""The manifest beside each snapshot: inputs with checksums, versions, row counts, stage timings."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from stores import snapshots
from ground.months import Month
from stores.warehouse import Warehouse

GOLDEN = Path(__file__).resolve().parent / "golden"


def test_manifest_describes_the_snapshot_beside_it(prefect_harness, tmp_path):
    from flows.runs import backfill

    landing = tmp_path / "landing"
    shutil.copytree(GOLDEN / "icbc_money" / "landing", landing)
    # One bad row, tolerated, so the quarantined count is visible in the manifest.
    june = landing / "balances" / "2025-06.csv"
    june.write_text(june.read_text() + "dollars-demand_deposit,dollars,demand_deposit,USD,2025-06-31,1.00,\n")
    warehouse = Warehouse(tmp_path / "warehouse")

    backfill.fn(str(landing), "2025-06", "2025-06", str(warehouse.root), ["icbc_star"], max_bad_rows=1)

    month = Month.parse("2025-06")
    data = snapshots.snapshot_path(warehouse, "icbc_star", month)
    manifest = json.loads(snapshots.manifest_path(warehouse, "icbc_star", month).read_text())
    table = pq.read_table(data)

    assert manifest["program"] == "icbc_star" and manifest["as_of"] == "2025-06-30"
    assert manifest["snapshot"]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert manifest["snapshot"]["rows"] == manifest["rows_out"] == table.num_rows == 4
    assert set(table.column("rules_version").to_pylist()) == {manifest["rules_version"]}
    assert manifest["code_version"].startswith("0.1.0+")

    inputs = {(i["dataset"], i["month"]): i for i in manifest["inputs"]}
    window = [f"2025-0{m}" for m in range(1, 7)]
    assert set(inputs) == {(d, None) for d in ("customers", "fx_rates", "products", "credit_events")} | {
        (d, m) for d in ("balances", "transactions") for m in window}
    for entry in manifest["inputs"]:
        path = Path(entry["path"])
        assert path.is_absolute() and entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry["rows_read"] == entry["rows_used"] + entry["rows_quarantined"]
    assert inputs[("balances", "2025-06")]["rows_quarantined"] == 1
    assert inputs[("balances", "2025-06")]["rows_read"] == len(june.read_text().splitlines()) - 1
    assert manifest["rows_quarantined"] == 1
    assert manifest["rows_in"] == sum(i["rows_read"] for i in manifest["inputs"])
    assert set(manifest["stage_seconds"]) == {"ingest", "figures", "decisions", "write", "stage"}
    assert all(seconds >= 0 for seconds in manifest["stage_seconds"].values())
