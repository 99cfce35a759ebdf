"""The explanatory columns of a snapshot: fig_<figure> (the figure's CNY value, cut to the cent)
and pts_<figure> (its points), after the contract's columns."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq

from stores import snapshots
from ground.months import Month
from stores.warehouse import Warehouse

GOLDEN = Path(__file__).resolve().parent / "golden"
CONTRACT = ["customer_id", "points", "computed_tier", "floor_tier", "capped", "previous_tier", "tier", "tier_name",
            "reason", "failed_reviews", "buffer_since", "at_risk", "next_review", "effective_from", "rules_version"]
ICBC_FIGURES = ["short_term_assets", "long_term_assets", "mortgage", "other_loans", "card_overdraft", "investment",
                "card_spend", "settlement"]


def test_icbc_snapshot_shows_each_figure_and_its_points(prefect_harness, tmp_path):
    from flows.runs import backfill

    warehouse = Warehouse(tmp_path / "warehouse")
    backfill.fn(str(GOLDEN / "icbc_money" / "landing"), "2025-06", "2025-06", str(warehouse.root), ["icbc_star"])
    table = pq.read_table(snapshots.snapshot_path(warehouse, "icbc_star", Month.parse("2025-06")))
    rows = {row["customer_id"]: row for row in table.to_pylist()}

    assert table.column_names == CONTRACT + [f"pts_{f}" for f in ICBC_FIGURES] + [f"fig_{f}" for f in ICBC_FIGURES]
    # Loans every day of the window: the average daily balance is the balance itself.
    assert (rows["borrower"]["fig_mortgage"], rows["borrower"]["fig_other_loans"]) == (
        Decimal("500000.00"), Decimal("100000.00"))
    assert (rows["borrower"]["pts_mortgage"], rows["borrower"]["pts_other_loans"]) == (
        Decimal("5000.00"), Decimal("2000.00"))
    # Six card purchases of 12,345.67; remittances counted 5,000 (cap) + 4,000 (x0.8) + 1,500.05 (x0.5).
    assert rows["spender"]["fig_card_spend"] == Decimal("74074.02")
    assert rows["remitter"]["fig_settlement"] == Decimal("10500.05")
    assert rows["remitter"]["pts_settlement"] == Decimal("210.00")
    # The points of a figure follow from its exact value: 135 per 10,000 of average daily balance.
    dollars = rows["dollars"]
    assert dollars["fig_short_term_assets"] * 135 / 10000 - dollars["pts_short_term_assets"] < Decimal("0.02")
    assert all(rows[c][f"fig_{f}"] == 0 for c in ("spender", "remitter") for f in ("short_term_assets", "mortgage"))
