"""What-if runs (flows/whatif.py): a changed rule file is evaluated over past months in a scratch
warehouse and compared with the published snapshots; the published warehouse is never written.

icbc_buffers is published once per module (2024-12..2025-06). The trial rule file makes five-star
cheaper (1,000 points instead of 2,000) and shorter-lived (it falls after one failed review instead
of two). From expected/icbc_star.csv, that moves exactly three customers:
- climber, 2025-03: 1,104.94 points now earn five-star: four-star -> five-star (both upgrades);
  from 2025-04 it is five-star either way.
- five-star (522.09 points) and recovers (453.59), 2025-06: the review they survived in their buffer
  now drops them to what they earn: five-star -> four-star and five-star -> three-star.
"""

from __future__ import annotations

import csv
import shutil
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from rules.loader import RULES_DIR
from stores import snapshots
from ground.errors import BadRowsError
from ground.months import Month
from stores.warehouse import Warehouse

LANDING = Path(__file__).resolve().parent / "golden" / "icbc_buffers" / "landing"
PROGRAM = "icbc_star"
SHIPPED = RULES_DIR / f"{PROGRAM}.yaml"
EXPECTED_MOVERS = [
    # customer, month, published tier -> what-if tier, published reason -> what-if reason, what-if points
    ("climber", "2025-03", 4, 5, "upgrade", "upgrade", Decimal("1104.94")),
    ("five-star", "2025-06", 5, 4, "buffer", "downgrade", Decimal("522.09")),
    ("recovers", "2025-06", 5, 3, "buffer", "downgrade", Decimal("453.59")),
]


@pytest.fixture(scope="module")
def published(prefect_harness, tmp_path_factory) -> Path:
    from flows.runs import backfill

    warehouse = tmp_path_factory.mktemp("whatif") / "warehouse"
    backfill.fn(str(LANDING), "2024-12", "2025-06", str(warehouse), [PROGRAM])
    return warehouse


@pytest.fixture
def trial_rules(tmp_path) -> Path:
    text = SHIPPED.read_text(encoding="utf-8")
    for old, new in (("at_least: 2000}", "at_least: 1000}"), ("{7: 5, 6: 3, 5: 2}", "{7: 5, 6: 3, 5: 1}")):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp_path / "icbc_star_trial.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def warehouse_state(warehouse: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of the published warehouse outside scratch/ (DuckDB file, snapshots, manifests...)."""
    return {
        str(path.relative_to(warehouse)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in warehouse.rglob("*")
        if path.is_file() and path.relative_to(warehouse).parts[0] != "scratch"
    }


def test_a_changed_rule_file_shows_who_would_move_and_why(published, trial_rules):
    from flows.whatif import whatif

    before = warehouse_state(published)
    assert "tiers.duckdb" in before and len([p for p in before if p.endswith("data.parquet")]) == 7

    result = whatif.fn(str(trial_rules), str(LANDING), "2025-03", "2025-06", str(published))

    assert warehouse_state(published) == before  # bytes and mtimes: nothing published was written
    scratch = Path(result["scratch"])
    assert scratch.parent == published / "scratch" and scratch.name.startswith("whatif-")
    # 2025-03 continued from the published 2025-02, not from an initial evaluation.
    february = snapshots.snapshot_path(Warehouse(published), PROGRAM, Month.parse("2025-02"))
    assert (result["initial"], result["seeded_from"]) == (False, str(february))
    assert snapshots.published_months(Warehouse(scratch), PROGRAM) == [
        Month.parse(m) for m in ("2025-02", "2025-03", "2025-04", "2025-05", "2025-06")
    ]
    assert result["months_unpublished"] == [] and result["customers_compared"] == 6
    assert (result["customers_moved"], result["customer_months_compared"]) == (3, 6 * 4)

    movers = duckdb.sql(
        "SELECT * FROM read_parquet($file) ORDER BY month, customer_id", params={"file": result["movers_parquet"]}
    )
    rows = [dict(zip(movers.columns, row)) for row in movers.fetchall()]
    assert [(r["customer_id"], r["month"], r["from_tier"], r["to_tier"], r["from_reason"], r["to_reason"],
             r["to_points"]) for r in rows] == EXPECTED_MOVERS
    # The what-if figures and points explain the move: the long-term assets alone.
    climber = rows[0]
    assert (climber["fig_long_term_assets"], climber["pts_long_term_assets"]) == (Decimal("110494.50"),
                                                                                  Decimal("1104.94"))
    assert {f"fig_{f}" for f in ("card_spend", "settlement")} <= climber.keys()
    with open(result["movers_csv"], newline="") as handle:
        assert [(r["customer_id"], r["month"], r["to_tier_name"]) for r in csv.DictReader(handle)] == [
            ("climber", "2025-03", "five-star"), ("five-star", "2025-06", "four-star"),
            ("recovers", "2025-06", "three-star"),
        ]
    assert Path(result["movers_parquet"]).parent == scratch and Path(result["movers_csv"]).parent == scratch

    assert [(c["month"], c["from_tier"], c["to_tier"], c["customers"]) for c in result["counts"]] == [
        ("2025-03", 4, 5, 1), ("2025-06", 5, 4, 1), ("2025-06", 5, 3, 1)
    ]
    assert result["movers"] == 3


def test_the_shipped_rules_move_nobody(published):
    from flows.whatif import whatif

    result = whatif.fn(str(SHIPPED), str(LANDING), "2025-03", "2025-07", str(published))

    assert (result["movers"], result["counts"], result["customers_compared"]) == (0, [], 6)
    assert result["months_unpublished"] == ["2025-07"] and result["initial"] is False
    from flows.whatif import summary_table

    assert summary_table(result).caption.splitlines()[0] == "nobody would move (6 customers, 24 customer-months compared)"
    movers = duckdb.sql("SELECT count(*) FROM read_parquet($f)", params={"f": result["movers_parquet"]})
    assert movers.fetchall() == [(0,)]


def test_bad_rows_stop_the_what_if_as_they_stop_a_run(published, tmp_path):
    from flows.whatif import whatif

    landing = shutil.copytree(LANDING, tmp_path / "landing")
    with open(landing / "balances" / "2025-06.csv", "a") as balances:
        balances.write("stray-account,five-star,time_deposit,CNY,2025-06-15,abc,\n")
    before = warehouse_state(published)

    with pytest.raises(BadRowsError, match=r"1 bad rows, more than --max-bad-rows 0") as raised:
        whatif.fn(str(SHIPPED), str(landing), "2025-06", "2025-06", str(published))

    assert str(published / "scratch") in str(raised.value)  # the scratch quarantine, not the published one
    assert warehouse_state(published) == before


def _write_snapshot(warehouse: Warehouse, month: str, rows: str) -> None:
    path = snapshots.snapshot_path(warehouse, "p", Month.parse(month))
    path.parent.mkdir(parents=True)
    columns = "customer_id, tier, tier_name, reason, points, computed_tier, pts_x, fig_x"
    duckdb.sql(f"COPY (SELECT * FROM (VALUES {rows}) AS t({columns})) TO '{path}' (FORMAT parquet)")


def test_compare_reports_tier_changes_and_customers_on_one_side_only(tmp_path):
    from flows.whatif import compare

    published, scratch = Warehouse(tmp_path / "published"), Warehouse(tmp_path / "scratch")
    _write_snapshot(published, "2025-01", "('a', 5, 'five', 'meets', 2500.00, 5, 2500.00, 25000.00), "
                                          "('b', 4, 'four', 'meets', 900.00, 4, 900.00, 9000.00), "
                                          "('c', 3, 'three', 'meets', 60.00, 3, 60.00, 600.00)")
    _write_snapshot(scratch, "2025-01", "('a', 5, 'five', 'meets', 2500.00, 5, 2500.00, 25000.00), "
                                        "('b', 5, 'five', 'upgrade', 900.00, 5, 900.00, 9000.00), "
                                        "('d', 1, 'quasi', 'initial', 1.00, 1, 1.00, 10.00)")

    result = compare(scratch, published, "p", [Month.parse("2025-01")])

    movers = duckdb.sql("SELECT customer_id, from_tier, to_tier, from_reason, to_reason, fig_x "
                        "FROM read_parquet($f) ORDER BY customer_id", params={"f": result["movers_parquet"]}).fetchall()
    assert movers == [("b", 4, 5, "meets", "upgrade", Decimal("9000.00")), ("c", 3, None, "meets", None, None),
                      ("d", None, 1, None, "initial", Decimal("10.00"))]
    assert [(c["from_tier"], c["to_tier"]) for c in result["counts"]] == [(4, 5), (3, None), (None, 1)]
    assert (result["movers"], result["customers_compared"]) == (3, 4)
    assert (result["customers_moved"], result["customer_months_compared"]) == (3, 4)


def test_customers_and_customer_months_are_counted_apart(tmp_path):
    """One customer moving in two months is two moves by one customer (the summary once said
    "4641 moves among 10000 customers" of 635 customers moving)."""
    from flows.whatif import compare, summary_table

    published, scratch = Warehouse(tmp_path / "published"), Warehouse(tmp_path / "scratch")
    for month in ("2025-01", "2025-02"):
        _write_snapshot(published, month, "('a', 5, 'five', 'meets', 2500.00, 5, 2500.00, 25000.00), "
                                          "('b', 4, 'four', 'meets', 900.00, 4, 900.00, 9000.00)")
        _write_snapshot(scratch, month, "('a', 4, 'four', 'downgrade', 2500.00, 4, 2500.00, 25000.00), "
                                        "('b', 4, 'four', 'meets', 900.00, 4, 900.00, 9000.00)")
    _write_snapshot(published, "2025-03", "('a', 5, 'five', 'meets', 2500.00, 5, 2500.00, 25000.00)")
    _write_snapshot(scratch, "2025-03", "('a', 5, 'five', 'meets', 2500.00, 5, 2500.00, 25000.00)")

    result = compare(scratch, published, "p", [Month.parse(m) for m in ("2025-01", "2025-02", "2025-03")])

    assert (result["movers"], result["customers_moved"]) == (2, 1)
    assert (result["customers_compared"], result["customer_months_compared"]) == (2, 5)
    result.update(program="p", rules_file="trial.yaml", first="2025-01", last="2025-03", initial=False,
                  months_unpublished=[])
    assert summary_table(result).caption.splitlines()[0] == "1 of 2 customers would move, in 2 of 5 customer-months compared"


def test_whatif_command_prints_the_moves(published, trial_rules, tiers_cli, tmp_path, monkeypatch):
    warehouse = shutil.copytree(published, tmp_path / "warehouse", ignore=shutil.ignore_patterns("scratch"))
    monkeypatch.setenv("COLUMNS", "250")  # one line per note, so the movers path can be matched

    # A writer holding the main DuckDB file locks other processes out: the what-if never opens it.
    with duckdb.connect(str(warehouse / "tiers.duckdb")):
        done = tiers_cli("whatif", "--rules", str(trial_rules), "--input", str(LANDING), "--from", "2024-12",
                         "--to", "2025-03", "--warehouse", str(warehouse), check=True)

    lines = [" ".join(line.strip("│ ").split()) for line in done.stdout.splitlines()]
    assert "2025-03 │ 4 four-star │ 5 five-star │ 1" in lines
    assert "1 of 6 customers would move, in 1 of 24 customer-months compared" in lines
    assert "2024-12 is an initial evaluation: no published snapshot of the month before" in lines
    [scratch] = (warehouse / "scratch").iterdir()
    assert f"who and why: {scratch / 'movers.csv'}" in lines
    assert (scratch / "movers.csv").is_file()


def test_compare_reads_a_bracketed_warehouse_literally(tmp_path):
    """DuckDB globs the paths it reads: `wh[1]` would match the decoy `wh1` unless taken literally."""
    from flows.whatif import compare

    published, decoy = Warehouse(tmp_path / "wh[1]"), Warehouse(tmp_path / "wh1")
    scratch = Warehouse(tmp_path / "wh[1]" / "scratch" / "whatif-x")
    _write_snapshot(published, "2025-01", "('a', 5, 'five', 'meets', 2500.00, 5, 2500.00, 25000.00)")
    _write_snapshot(decoy, "2025-01", "('a', 1, 'quasi', 'meets', 1.00, 1, 1.00, 10.00)")
    _write_snapshot(scratch, "2025-01", "('a', 4, 'four', 'downgrade', 900.00, 4, 900.00, 9000.00)")

    result = compare(scratch, published, "p", [Month.parse("2025-01")])

    assert [(c["from_tier"], c["to_tier"]) for c in result["counts"]] == [(5, 4)]
