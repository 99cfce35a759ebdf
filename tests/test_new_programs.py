"""China Guangfa Bank card stars and the private-banking family (programs.md sections 5 and 6, issue 14).

The shipped rule files, evaluated by the real ``evaluate()`` on tiny stored tables (balance_month,
txn_figure_month, card_points_month, credit_scores, fx_rates) as tests/test_rules_engine.py does:
each new figure kind (a ledger summed over the window, the value in force at month-end, a net balance,
a foreign-currency balance valued in USD), the bounds at and beside each threshold, the cap, the
buffers of 3 and 6 reviews, the agreement floor; then which programs apply to a landing folder, a
bank's own copy of the 8M file, and what ``tiers explain`` says about these programs.
"""

from __future__ import annotations

import shutil
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from flows.plan import plan_run
from ground.errors import InputError, RuleError
from ground.months import Month, month_range
from interfaces.cli import app
from interfaces.explain import explain_customer, render_text
from rules.loader import RULES_DIR, load_program, load_programs
from stores import snapshots
from stores.warehouse import Warehouse
from transforms import runner
from test_rules_engine import BOC_TRACKS, VOCAB, Book, story, variant_text

D = Decimal
CGB = load_program(RULES_DIR / "cgb_card_star.yaml", VOCAB)
CBRC = load_program(RULES_DIR / "private_banking_cbrc.yaml", VOCAB)
PB8M = load_program(RULES_DIR / "private_banking_8m.yaml", VOCAB)
UBS = load_program(RULES_DIR / "private_banking_ubs.yaml", VOCAB)
JUNE = Month(2025, 6)


class NewBook(Book):
    """Book with the new programs' stored data."""

    def points(self, month: Month, customer: str, points: int) -> None:
        self.con.execute("INSERT INTO card_points_month VALUES (?, ?, ?)", [month.first_day, customer, points])

    def score(self, customer: str, scored_on: date, score: int) -> None:
        self.con.execute("INSERT INTO credit_scores VALUES (?, ?, ?)", [customer, scored_on, score])

    def installments(self, month: Month, customer: str, amount: str) -> None:
        self.txn_sum("cgb_card_star", "installment", month, customer, amount)

    def day_sum(self, month: Month, customer: str, product: str, day_sum: str, *, foreign: bool = False) -> None:
        self.con.execute(
            "INSERT INTO balance_month (month, customer_id, product_code, risk_class, day_sum, month_end, "
            "foreign_currency) VALUES (?, ?, ?, 'normal', CAST(? AS DECIMAL(38, 2)), 0, ?)",
            [month.first_day, customer, product, day_sum, foreign])

    def rate(self, currency: str, day: date, cny_per_unit: str) -> None:
        self.con.execute("INSERT INTO fx_rates VALUES (?, ?, CAST(? AS DECIMAL(18, 8)))", [currency, day, cny_per_unit])


@pytest.fixture
def book(tmp_path):
    b = NewBook(tmp_path)
    yield b
    b.close()


# =============================================================================================
# cgb_card_star
# =============================================================================================
def cgb_customer(book: NewBook, customer: str, *, installment: str = "0", points: int = 0,
                 score: int | None = 600, month: Month = JUNE) -> None:
    """Installments and points split between the window's first and last months; a score from January."""
    book.customers(customer)
    first = month.plus(-11)
    half = (D(installment) / 2).quantize(D("0.01"), rounding="ROUND_FLOOR")
    book.installments(first, customer, str(half))
    book.installments(month, customer, str(D(installment) - half))
    book.points(first, customer, points // 2)
    book.points(month, customer, points - points // 2)
    if score is not None:
        book.score(customer, date(2025, 1, 15), score)


@pytest.mark.parametrize("installment, points, score, tier", [
    # installments: 10,000 is still three-star ("0 to 10,000" includes it); 10,000.01 is four.
    ("10000.00", 150_000, 600, 3),
    ("10000.01", 150_000, 600, 4),
    # points: 100,000 is three-star, 100,001 four; 20,000 is the three-star floor, 19,999 nothing.
    ("20000.00", 100_000, 600, 3),
    ("20000.00", 100_001, 600, 4),
    ("0", 20_000, 600, 3),
    ("0", 19_999, 600, 0),
    # the score prerequisite: 549 qualifies for nothing, 550 does; no score is none.
    ("60000.00", 500_000, 549, 0),
    ("60000.00", 500_000, 550, 5),
    ("60000.00", 500_000, None, 0),
    # five stars needs both above their bounds: 50,000 and 400,000 exactly are four-star.
    ("50000.00", 500_000, 600, 4),
    ("50000.01", 400_000, 600, 4),
    ("50000.01", 400_001, 600, 5),
    # five-star installments with four-star points: four-star (all of a band's conditions hold).
    ("60000.00", 150_000, 600, 4),
])
def test_cgb_bands_at_and_beside_each_bound(book, installment, points, score, tier):
    cgb_customer(book, "c", installment=installment, points=points, score=score)
    [row] = book.evaluate(CGB, JUNE).values()
    assert (row["computed_tier"], row["tier"]) == (tier, tier)
    assert row["points"] is None
    assert row["fig_installment"] == D(installment) and row["fig_reward_points"] == points
    assert row["fig_credit_score"] == score


def test_cgb_windows_twelve_months_and_takes_the_score_in_force_at_month_end(book):
    book.customers("c")
    # 2024-06 lies outside T-11..T for June 2025; 2024-07 inside.
    book.points(Month(2024, 6), "c", 300_000)
    book.points(Month(2024, 7), "c", 100_001)
    book.installments(Month(2024, 6), "c", "40000.00")
    book.installments(Month(2024, 7), "c", "10000.01")
    book.score("c", date(2025, 1, 1), 800)
    book.score("c", date(2025, 6, 30), 540)   # the latest on or before as_of: 540
    book.score("c", date(2025, 7, 1), 850)    # not yet in force
    [row] = book.evaluate(CGB, JUNE).values()
    assert (row["fig_reward_points"], row["fig_installment"], row["fig_credit_score"]) == (100_001, D("10000.01"), 540)
    assert row["computed_tier"] == 0
    book.con.execute("DELETE FROM credit_scores WHERE score = 540")
    [row] = book.evaluate(CGB, JUNE).values()
    assert (row["fig_credit_score"], row["computed_tier"]) == (800, 4)


def test_cgb_default_caps_to_zero_without_buffer_and_climbs_back(book):
    cgb_customer(book, "c", score=600)
    book.installments(JUNE, "c", "60000.00")
    book.points(JUNE, "c", 500_000)
    book.publish_prev("cgb_card_star", JUNE.plus(-1), [{"customer_id": "c", "tier": 5, "failed_reviews": 0,
                                                        "buffer_since": None}])
    book.event("c", "credit_card_default_11m", date(2025, 6, 20), date(2025, 7, 3))
    [row] = book.evaluate(CGB, JUNE).values()
    assert (row["computed_tier"], row["capped"], row["tier"], row["reason"]) == (5, True, 0, "credit_cap")
    [row] = book.evaluate(CGB, JUNE.plus(1)).values()
    assert (row["capped"], row["tier"], row["reason"]) == (False, 5, "upgrade")


def test_cgb_falls_after_three_failed_monthly_reviews(book):
    cgb_customer(book, "c")
    book.points(JUNE, "c", 30_000)   # earns three-star every month of the story
    book.publish_prev("cgb_card_star", JUNE.plus(-1), [{"customer_id": "c", "tier": 5, "failed_reviews": 0,
                                                        "buffer_since": None}])
    results = [book.evaluate(CGB, month) for month in month_range(JUNE, JUNE.plus(2))]
    assert story(results, "c", "tier", "reason", "failed_reviews", "buffer_since") == [
        (5, "buffer", 1, date(2025, 6, 30)),
        (5, "buffer", 2, date(2025, 6, 30)),
        (3, "downgrade", 0, None),
    ]
    assert [rows["c"]["effective_from"] for rows in results] == [date(2025, 7, 1), date(2025, 8, 1), date(2025, 9, 1)]


# =============================================================================================
# private banking
# =============================================================================================
def test_cbrc_net_assets_day_by_day_at_the_threshold_and_a_loan_that_tips_it(book):
    days = JUNE.days
    book.customers("at", "below", "loan", "mortgage", "negative")
    book.day_sum(JUNE, "at", "fund", str(D(6_000_000) * days))
    book.day_sum(JUNE, "below", "fund", str(D("5999999.99") * days))
    # 6,000,000 of funds and one day's 0.30 of card overdraft: a net average 0.01 short.
    book.day_sum(JUNE, "loan", "time_deposit", str(D(6_000_000) * days))
    book.day_sum(JUNE, "loan", "credit_card_overdraft", "0.30")
    # a mortgage is not deducted
    book.day_sum(JUNE, "mortgage", "wmp", str(D(6_000_000) * days))
    book.day_sum(JUNE, "mortgage", "mortgage", str(D(3_000_000) * days))
    book.day_sum(JUNE, "negative", "demand_deposit", "300.01")
    book.day_sum(JUNE, "negative", "consumer_loan", str(D(1000) * days))
    rows = book.evaluate(CBRC, JUNE)
    assert {c: r["tier"] for c, r in rows.items()} == {"at": 1, "below": 0, "loan": 0, "mortgage": 1, "negative": 0}
    assert rows["loan"]["fig_net_financial_assets"] == D("5999999.99")
    # (300.01 - 30,000.00) / 30 = -989.9996...: cut downwards, as every figure is, to -990.00 (not -989.99)
    assert rows["negative"]["fig_net_financial_assets"] == D("-990.00")


def test_8m_gross_ignores_loans_and_the_agreement_floor_gives_private_banking(book):
    book.customers("gross", "floored")
    book.day_sum(JUNE, "gross", "fund", str(D(8_000_000) * JUNE.days))
    book.day_sum(JUNE, "gross", "consumer_loan", str(D(5_000_000) * JUNE.days))
    book.product("floored", "private_banking_agreement", date(2025, 6, 30))
    rows = book.evaluate(PB8M, JUNE)
    assert (rows["gross"]["computed_tier"], rows["gross"]["tier"]) == (1, 1)
    assert (rows["floored"]["computed_tier"], rows["floored"]["floor_tier"], rows["floored"]["tier"]) == (0, 1, 1)


def test_private_banking_falls_after_six_failed_reviews(book):
    book.customers("c")
    book.publish_prev("private_banking_8m", JUNE.plus(-1), [{"customer_id": "c", "tier": 1, "failed_reviews": 0,
                                                             "buffer_since": None}])
    results = [book.evaluate(PB8M, month) for month in month_range(JUNE, JUNE.plus(5))]
    assert story(results, "c", "tier", "reason", "failed_reviews") == (
        [(1, "buffer", n) for n in range(1, 6)] + [(0, "downgrade", 0)])


def test_ubs_usd_test_is_exact_at_the_rate_in_force_on_as_of(book):
    days = JUNE.days
    # 4.5 CNY per USD: 2,000,000 USD is 9,000,000 CNY, so the USD test decides.
    book.rate("USD", date(2025, 3, 1), "7.00000000")
    book.rate("USD", date(2025, 6, 30), "4.50000000")
    book.rate("USD", date(2025, 7, 1), "9.00000000")   # after as_of: not in force
    book.customers("at", "below", "cny", "mixed")
    book.day_sum(JUNE, "at", "fund", str(D(9_000_000) * days), foreign=True)
    book.day_sum(JUNE, "below", "fund", str(D(9_000_000) * days - D("0.01")), foreign=True)
    book.day_sum(JUNE, "cny", "fund", str(D(9_999_999) * days))   # CNY rows are not foreign-currency assets
    book.day_sum(JUNE, "mixed", "fund", str(D(5_000_000) * days), foreign=True)
    book.day_sum(JUNE, "mixed", "wmp", str(D(5_000_000) * days))  # 10,000,000 in all: the CNY track
    rows = book.evaluate(UBS, JUNE)
    assert {c: r["tier"] for c, r in rows.items()} == {"at": 1, "below": 0, "cny": 0, "mixed": 1}
    assert rows["at"]["fig_foreign_currency_assets_usd"] == D(2_000_000)
    assert rows["below"]["fig_foreign_currency_assets_usd"] == D("1999999.99")
    assert rows["cny"]["fig_foreign_currency_assets_usd"] == 0


def test_ubs_without_a_usd_rate_in_force_names_the_date(book):
    book.customers("c")
    book.rate("USD", date(2025, 7, 1), "7.00000000")
    with pytest.raises(InputError, match="no USD rate in force on 2025-06-30"):
        book.evaluate(UBS, JUNE)


def test_a_bank_on_6m_gross_copies_the_8m_file_with_one_number_changed(tmp_path, book):
    """docs/programs/private_banking.md: CCB's own file, its own name, 8000000 -> 6000000."""
    path = tmp_path / "private_banking_ccb.yaml"
    path.write_text(variant_text("private_banking_8m", ("at_least: 8000000", "at_least: 6000000"),
                                 program="private_banking_ccb"), encoding="utf-8")
    ccb = load_program(path, VOCAB)
    book.customers("six", "short")
    book.day_sum(JUNE, "six", "fund", str(D(6_000_000) * JUNE.days))
    book.day_sum(JUNE, "short", "fund", str(D("5999999.99") * JUNE.days))
    rows = book.evaluate(ccb, JUNE)
    assert {c: r["tier"] for c, r in rows.items()} == {"six": 1, "short": 0}
    assert {r["rules_version"] for r in rows.values()} == {ccb.version}
    assert (book.warehouse.root / "snapshots").rglob("private_banking_ccb*")


# =============================================================================================
# the schema: each new kind validated
# =============================================================================================
@pytest.mark.parametrize("edit, message", [
    (("minus_product_codes: [consumer_loan, business_loan, credit_card_overdraft]",
      "minus_product_codes: [consumer_loan, fund]"), "both added"),
    (("minus_product_codes: [consumer_loan, business_loan, credit_card_overdraft]",
      "minus_product_codes: [consumer_loan, car_loan]"), "minus_product_codes"),
])
def test_net_figure_codes_are_checked(tmp_path, edit, message):
    path = tmp_path / "private_banking_cbrc.yaml"
    path.write_text(variant_text("private_banking_cbrc", edit), encoding="utf-8")
    with pytest.raises(RuleError, match=message):
        load_program(path, VOCAB)


@pytest.mark.parametrize("base, edit, key", [
    ("private_banking_ubs", ("valued_in: USD", "valued_in: usd"), "valued_in"),
    ("private_banking_ubs", ("foreign_currency_only: true", "foreign_currency_only: 1.5"), "foreign_currency_only"),
    ("cgb_card_star", ("source: card_points\n    window_months: 12", "source: card_points\n    window_months: 25"),
     "window_months"),
    ("cgb_card_star", ("source: credit_scores", "source: credit_scores\n    window_months: 1"), "window_months"),
    ("cgb_card_star", ("source: credit_scores", "source: ratings"), "source"),
])
def test_rules_check_refuses_a_malformed_new_figure(tmp_path, base, edit, key):
    path = tmp_path / f"{base}.yaml"
    path.write_text(variant_text(base, edit), encoding="utf-8")
    result = CliRunner().invoke(app, ["rules", "check", str(path)])
    assert result.exit_code != 0
    assert str(path) in result.output and key in result.output


# =============================================================================================
# which programs run
# =============================================================================================
def test_programs_whose_data_is_absent_do_not_apply_and_say_why(tmp_path):
    """boc_tracks is an all-CNY bank with no card data: neither CGB nor the UBS standard applies."""
    jul = Month(2025, 7)
    plan = plan_run(BOC_TRACKS, Warehouse(tmp_path / "warehouse"), load_programs(), jul, jul, programs_named=False)
    assert {name for _, name in plan.evaluations} == {
        "icbc_star", "boc_vip", "bohai_wealth", "private_banking_cbrc", "private_banking_8m"}
    notes = dict(note.split(": ", 1) for note in plan.skipped)
    assert set(notes) == {"cgb_card_star", "private_banking_ubs"}
    assert "no card_points/ folder" in notes["cgb_card_star"] and "no credit_scores file" in notes["cgb_card_star"]
    assert "no USD rate" in notes["private_banking_ubs"]
    # Named, a program without its data is an error, not a skip.
    with pytest.raises(InputError, match="cgb_card_star needs data"):
        plan_run(BOC_TRACKS, Warehouse(tmp_path / "warehouse"), load_programs(["cgb_card_star"]), jul, jul,
                 programs_named=True)


def test_a_usd_rate_in_the_landing_folder_makes_the_ubs_standard_apply(tmp_path):
    landing = tmp_path / "landing"
    shutil.copytree(BOC_TRACKS, landing)
    (landing / "fx_rates.csv").write_text("rate_date,currency,cny_per_unit\n2024-01-02,USD,7.10000000\n",
                                          encoding="utf-8")
    jul = Month(2025, 7)
    plan = plan_run(landing, Warehouse(tmp_path / "warehouse"), load_programs(["private_banking_ubs"]), jul, jul,
                    programs_named=False)
    assert plan.evaluations == [(jul, "private_banking_ubs")] and plan.skipped == []


def test_cgb_first_months_start_with_the_later_of_transactions_and_card_points(tmp_path):
    """Card points land from 2025-02 only: CGB's twelve-month windows before 2026-01 reach before them, so
    CGB is skipped as a bank's first months (not failed as a gap)."""
    landing = tmp_path / "landing"
    shutil.copytree(BOC_TRACKS, landing)
    (landing / "card_points").mkdir()
    for month in month_range(Month(2025, 2), Month(2025, 8)):
        (landing / "card_points" / f"{month}.csv").write_text("entry_id,customer_id,posted_on,points\n")
    (landing / "credit_scores.csv").write_text("customer_id,scored_on,score\n")
    aug = Month(2025, 8)
    plan = plan_run(landing, Warehouse(tmp_path / "warehouse"), load_programs(["cgb_card_star"]), aug, aug,
                    programs_named=False)
    [note] = plan.skipped
    assert plan.evaluations == [] and note.startswith("cgb_card_star: skipped")
    assert str(landing / "card_points" / "2024-09") in note


# =============================================================================================
# explain
# =============================================================================================
def test_explain_shows_the_new_figures_and_the_condition_that_failed(book):
    cgb_customer(book, "noscore", installment="60000.00", points=500_000, score=None)
    cgb_customer(book, "short", installment="10000.00", points=150_000)
    book.evaluate(CGB, JUNE)
    [noscore] = explain_customer(book.warehouse.root, "noscore", JUNE, "cgb_card_star")
    text = render_text(noscore)
    assert "credit_score" in text and "unknown" in text and "reward_points" in text
    assert "credit_score missed" in text
    assert noscore["computed_tier"] == 0
    [short] = explain_customer(book.warehouse.root, "short", JUNE, "cgb_card_star")
    text = render_text(short)
    assert "installment 10,000.00 CNY, needs more than 10,000 for four-star" in text
    assert "reward points 150,000 points >= 20,000" in text and "credit score 600 >= 550" in text


# =============================================================================================
# the Dask path: buckets equal the single process, row for row
# =============================================================================================
@pytest.mark.parametrize("loaded", [CGB, UBS], ids=lambda p: p.name)
def test_buckets_equal_the_single_process_for_the_new_figures(book, loaded):
    from transforms import partitioned

    for i, (installment, points, score) in enumerate([("10000.01", 150_000, 600), ("60000.00", 500_000, None),
                                                      ("0", 20_000, 549), ("50000.01", 400_001, 850)]):
        cgb_customer(book, f"c{i}", installment=installment, points=points, score=score)
        book.day_sum(JUNE, f"c{i}", "fund", str(D(9_000_000) * JUNE.days - i), foreign=bool(i % 2))
    book.rate("USD", date(2025, 6, 1), "4.50000000")
    book.evaluate(loaded, JUNE)
    published = snapshots.snapshot_path(book.warehouse, loaded.name, JUNE)
    book.warehouse.prepare()
    run_dir = partitioned.new_run_dir(book.warehouse)
    exported = partitioned.export(book.con, book.warehouse, loaded, JUNE, run_dir, 3, "test-run")
    assert exported.rows["customers"] == 4 and exported.rows["fx_rates"] == 1
    results = [partitioned.evaluate_bucket(run_dir, bucket, loaded, VOCAB, JUNE, 2**30) for bucket in range(3)]
    staged, rows = partitioned.combine(book.con, book.warehouse, run_dir, 3)
    assert rows == 4 and sum(r["rows"] for r in results) == 4
    con = duckdb.connect()
    query = "FROM read_parquet($f, hive_partitioning = false)"
    assert con.execute(query, {"f": str(staged)}).fetchall() == con.execute(query, {"f": str(published)}).fetchall()


def test_card_installments_are_summed_in_full_by_ingestion(tmp_path):
    """The installment figure is an ordinary transaction figure: every card_installment's principal,
    whatever its fee factor or size, and nothing of other types."""
    from test_rules_engine import ingest, txn, write_landing

    landing = write_landing(tmp_path / "landing", ["c"], transactions={"2025-06": [
        txn("t1", "c", "card_installment", "10000.00", fee="0.5"),
        txn("t2", "c", "card_installment", "250000.01", mcc="8211"),
        txn("t3", "c", "card_pos", "999.00"),
    ]})
    con = duckdb.connect()
    runner.run(con, "warehouse_schema")
    ingest(con, landing, [CGB], ("transactions", "2025-06"))
    assert con.execute("SELECT program, figure, customer_id, counted FROM txn_figure_month").fetchall() == [
        ("cgb_card_star", "installment", "c", D("260000.01"))]
