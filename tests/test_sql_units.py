"""Unit tests of the SQL on tiny in-memory tables, with exact expected values.

Each test builds an in-memory DuckDB with the warehouse schema, fills the few rows it needs (staged
landing rows for the validated_* SQL, or the stored monthly sums for an evaluation), runs the real
SQL files through ``transforms.runner`` / ``transforms.evaluate.evaluate`` and reads back what they
produce (tables, or the published Parquet snapshot). No Prefect, no CLI.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rules.loader import RULES_DIR, load_program, load_vocabularies
from ground.months import Month, window
from stores.warehouse import Warehouse
from rules import sources
from transforms import landing, runner
from transforms.evaluate import evaluate
from transforms.ingest import Ingestor, validate_month, vocabulary_params

VOCAB = load_vocabularies()
ICBC = load_program(RULES_DIR / "icbc_star.yaml", VOCAB)
BOC = load_program(RULES_DIR / "boc_vip.yaml", VOCAB)
D = Decimal


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def days_of(month: Month) -> list[date]:
    return [month.first_day + timedelta(days=i) for i in range(month.days)]


def window_days(end: str, months: int = 6) -> int:
    return sum(m.days for m in window(Month.parse(end), months))


def cut(value: Fraction) -> Decimal:
    """The shown figure: cut (floor) to the cent."""
    cents = (value * 100).numerator // (value * 100).denominator
    return D(cents) / 100


class Bench:
    """One in-memory warehouse: reference rows, staged month files, stored sums, evaluations."""

    def __init__(self, root: Path):
        self.con = duckdb.connect()
        runner.run(self.con, "warehouse_schema")
        self.warehouse = Warehouse(root)
        # The programs' transaction figures (the macro txn_figure_sums), defined as ingestion does.
        Ingestor(self.con, root / "landing", root / "quarantine", VOCAB, [ICBC, BOC])

    # -- reference data ---------------------------------------------------------------------------
    def customers(self, *ids: str) -> None:
        self.con.executemany("INSERT INTO customers VALUES (?, NULL)", [[i] for i in ids])

    def fx(self, currency: str, day: str, rate: str) -> None:
        self.con.execute("INSERT INTO fx_rates VALUES (?, ?, ?)", [currency, date.fromisoformat(day), D(rate)])

    def product(self, customer: str, code: str, opened: str, closed: str | None = None) -> None:
        self.con.execute(
            "INSERT INTO held_products VALUES (?, ?, ?, ?)",
            [customer, code, date.fromisoformat(opened), date.fromisoformat(closed) if closed else None],
        )

    def event(self, customer: str, code: str, started: str, cured: str | None = None) -> None:
        self.con.execute(
            "INSERT INTO credit_events VALUES (?, ?, ?, ?)",
            [customer, code, date.fromisoformat(started), date.fromisoformat(cured) if cured else None],
        )

    # -- stored monthly sums --------------------------------------------------------------------------
    def balance_sum(self, month: str, customer: str, product: str, day_sum: str, month_end: str = "0",
                    risk_class: str = "normal") -> None:
        self.con.execute(
            "INSERT INTO balance_month VALUES (?, ?, ?, ?, ?, ?, ?)",
            [Month.parse(month).first_day, customer, product, risk_class, D(day_sum), D(month_end), False],
        )

    def txn_sum(self, program: str, figure: str, month: str, customer: str, counted: str) -> None:
        self.con.execute(
            "INSERT INTO txn_figure_month VALUES (?, ?, ?, ?, ?)",
            [program, figure, Month.parse(month).first_day, customer, D(counted)],
        )

    # -- staged landing rows and the validated_* SQL -------------------------------------------------
    def stage(self, dataset: str, rows: list[dict]) -> None:
        """staged_<dataset>: source_file, source_row (from 2, after a header line) and VARCHAR contract columns."""
        columns = list(sources.source(dataset).column_names)
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE staged_{dataset} (source_file VARCHAR, source_row BIGINT, "
            + ", ".join(f"{c} VARCHAR" for c in columns) + ")"
        )
        if rows:
            marks = ", ".join("?" for _ in range(len(columns) + 2))
            self.con.executemany(
                f"INSERT INTO staged_{dataset} VALUES ({marks})",
                [[f"{dataset}.csv", line] + [row.get(c) for c in columns] for line, row in enumerate(rows, start=2)],
            )

    def validate(self, dataset: str, month: str) -> None:
        """Validate staged_<dataset> as ingestion does: a month over the view of its landed rows."""
        m = Month.parse(month)
        if sources.source(dataset).monthly:
            runner.run(self.con, "cell_types")
            landed = landing.landed_from_staged(self.con, dataset, (Path(f"{dataset}.csv"),))
            self.con.execute(f"CREATE OR REPLACE TEMP VIEW landed_{dataset} AS {landed}")
            validate_month(self.con, dataset, m, VOCAB)
        else:
            runner.build(self.con, [f"validated_{dataset}"], **vocabulary_params(VOCAB))

    def ingest(self, dataset: str, month: str, rows: list[dict]) -> None:
        """Stage, validate and store one month as ingestion does (balance_month or txn_figure_month)."""
        self.stage(dataset, rows)
        self.validate(dataset, month)
        m = Month.parse(month)
        table = sources.source(dataset).table
        self.con.execute(f"DELETE FROM {table} WHERE month = ?", [m.first_day])
        runner.run(self.con, table, month_start=m.first_day, month_end=m.last_day)

    def problems(self, dataset: str) -> dict[int, tuple[str | None, str | None]]:
        rows = self.con.execute(
            f"SELECT source_row, problem_column, reason FROM validated_{dataset} ORDER BY source_row"
        ).fetchall()
        return {line: (column, reason) for line, column, reason in rows}

    def query(self, sql: str, params=None) -> list[tuple]:
        return self.con.execute(sql, params or []).fetchall()

    # -- evaluation -------------------------------------------------------------------------------------
    def evaluate(self, loaded, month: str) -> dict[str, dict]:
        """Evaluate and read the published snapshot back, by customer."""
        result = evaluate(self.con, self.warehouse, loaded, VOCAB, Month.parse(month))
        return {row["customer_id"]: row for row in pq.read_table(result.path).to_pylist()}


@pytest.fixture
def bench(tmp_path):
    b = Bench(tmp_path)
    yield b
    b.con.close()


def balance_rows(customer: str, product: str, month: str, amount: str, *, account: str | None = None,
                 days: list[date] | None = None, currency: str | None = None, risk_class: str | None = None):
    """Daily balance rows of one account (every day of the month unless ``days`` is given)."""
    return [
        {"account_id": account or f"{customer}-{product}", "customer_id": customer, "product_code": product,
         "balance_date": day.isoformat(), "balance": amount, "currency": currency, "risk_class": risk_class}
        for day in (days if days is not None else days_of(Month.parse(month)))
    ]


def txn(txn_id: str, customer: str, txn_type: str, amount: str, *, day: str = "2025-06-10",
        currency: str | None = None, mcc: str | None = None, fee: str | None = None) -> dict:
    return {"txn_id": txn_id, "account_id": f"{customer}-acct", "customer_id": customer, "txn_date": day,
            "txn_type": txn_type, "amount": amount, "currency": currency, "merchant_category": mcc,
            "fee_factor": fee}


# ---------------------------------------------------------------------------------------------
# Average daily balance and points (icbc_star)
# ---------------------------------------------------------------------------------------------
def test_adb_threshold_is_exact_over_a_181_day_window(bench):
    """Daily rows Jan..Jun 2025 (181 days) through validation, balance_month and the evaluation."""
    bench.customers("below", "at", "hair")
    for month in (Month(2025, m) for m in range(1, 7)):
        rows = balance_rows("below", "time_deposit", str(month), "199999.99")
        rows += balance_rows("at", "time_deposit", str(month), "200000.00")
        rows += balance_rows("hair", "time_deposit", str(month), "200000.00")
        if month.month == 3:  # one cent short on one day of the 181: ADB = 200,000 - 0.01/181
            rows[-1]["balance"] = "199999.99"
        bench.ingest("balances", str(month), rows)
    assert window_days("2025-06") == 181

    got = bench.evaluate(ICBC, "2025-06")

    assert got["below"]["points"] == D("1999.99")
    assert got["below"]["pts_long_term_assets"] == D("1999.99")
    assert (got["below"]["computed_tier"], got["below"]["tier"], got["below"]["tier_name"]) == (4, 4, "four-star")
    assert got["at"]["points"] == D("2000.00")
    assert (got["at"]["computed_tier"], got["at"]["tier"], got["at"]["tier_name"]) == (5, 5, "five-star")
    # 1999.99999994...: shown 1999.99 and, exactly compared, below the five-star threshold.
    assert got["hair"]["points"] == D("1999.99")
    assert got["hair"]["computed_tier"] == 4


@pytest.mark.parametrize("month, days", [("2025-06", 181), ("2024-06", 182), ("2025-11", 183), ("2025-12", 184)])
def test_adb_divides_by_the_days_of_the_six_month_window(bench, month, days):
    m = Month.parse(month)
    assert window_days(month) == days
    bench.customers("one_month", "steady", "outside")
    # 1,000,000.00 on every day of the evaluated month only: ADB = 1e6 * days(T) / D.
    bench.balance_sum(month, "one_month", "time_deposit", str(D("1000000.00") * m.days))
    # 50,000.00 on every day of the window: ADB 50,000 whatever D is: exactly 500 points, four-star.
    for w in window(m, 6):
        bench.balance_sum(str(w), "steady", "wmp", str(D("50000.00") * w.days))
    # Sums outside the window (the month before it, the month after T) count nothing.
    bench.balance_sum(str(m.plus(-6)), "outside", "time_deposit", "99999999.00")
    bench.balance_sum(str(m.plus(1)), "outside", "time_deposit", "99999999.00")

    got = bench.evaluate(ICBC, month)

    expected = cut(Fraction(100) * Fraction(1_000_000 * m.days, days) / 10_000)
    assert got["one_month"]["points"] == expected
    assert got["one_month"]["pts_long_term_assets"] == expected
    assert got["steady"]["points"] == D("500.00")
    assert got["steady"]["computed_tier"] == 4
    assert got["outside"]["points"] == D("0.00")
    assert got["outside"]["computed_tier"] == 0


def test_points_are_cut_not_rounded_and_cut_once_from_the_exact_sum(bench):
    bench.customers("cut", "sum_then_cut", "short_term")
    # 1.24 CNY of card spending: 400 * 1.24 / 10000 = 0.0496 points, shown 0.04 (rounding would say 0.05).
    bench.txn_sum("icbc_star", "card_spend", "2025-06", "cut", "1.24")
    # 0.0052 + 0.0050 = 0.0102 points: each component shows 0.00, the exact total shows 0.01.
    bench.txn_sum("icbc_star", "card_spend", "2025-06", "sum_then_cut", "0.13")
    bench.txn_sum("icbc_star", "investment", "2025-06", "sum_then_cut", "0.25")
    # 135 points per 10,000 of short-term assets: ADB 3,703.70 -> 49.99995 points, not three-star.
    for w in window(Month(2025, 6), 6):
        bench.balance_sum(str(w), "short_term", "demand_deposit", str(D("3703.70") * w.days))

    got = bench.evaluate(ICBC, "2025-06")

    assert got["cut"]["points"] == D("0.04")
    assert got["cut"]["pts_card_spend"] == D("0.04")
    assert got["sum_then_cut"]["points"] == D("0.01")
    assert got["sum_then_cut"]["pts_card_spend"] == D("0.00")
    assert got["sum_then_cut"]["pts_investment"] == D("0.00")
    assert got["sum_then_cut"]["computed_tier"] == 1
    assert got["short_term"]["points"] == D("49.99")
    assert got["short_term"]["pts_short_term_assets"] == D("49.99")
    assert got["short_term"]["computed_tier"] == 1


def test_a_single_cent_is_quasi_star_and_nothing_is_unrated(bench):
    bench.customers("cent", "cent_spent", "zero", "absent")
    bench.ingest(
        "balances", "2025-06",
        balance_rows("cent", "time_deposit", "2025-06", "0.01", days=[date(2025, 6, 17)])
        + balance_rows("zero", "demand_deposit", "2025-06", "0.00"),
    )
    bench.txn_sum("icbc_star", "card_spend", "2025-06", "cent_spent", "0.01")

    got = bench.evaluate(ICBC, "2025-06")

    for customer in ("cent", "cent_spent"):
        row = got[customer]
        assert (row["points"], row["computed_tier"], row["tier"], row["tier_name"]) == (
            D("0.00"), 1, 1, "quasi-star"), customer
    for customer in ("zero", "absent"):  # every customer is rated every month, with or without rows
        row = got[customer]
        assert (row["points"], row["computed_tier"], row["tier"], row["tier_name"]) == (
            D("0.00"), 0, 0, "unrated"), customer
    assert set(got) == {"cent", "cent_spent", "zero", "absent"}


# ---------------------------------------------------------------------------------------------
# Counted transactions: caps, fee factors, exclusions, windows
# ---------------------------------------------------------------------------------------------
def counted(bench, program: str, figure: str) -> dict[str, Decimal]:
    return dict(bench.query(
        "SELECT customer_id, counted FROM txn_figure_month WHERE program = ? AND figure = ?", [program, figure]
    ))


def test_settlement_cap_and_fee_factor(bench):
    bench.customers("capped", "discount", "half", "half_up", "at_cap", "free", "transfer", "golden")
    bench.ingest("transactions", "2025-06", [
        txn("t1", "capped", "remittance", "20000.00"),
        txn("t2", "discount", "remittance", "20000.00", fee="0.8"),
        txn("t3", "half", "remittance", "3000.10", fee="0.5"),
        txn("t4", "half_up", "remote_cash", "3000.11", fee="0.5"),  # 1500.055 -> 1500.06
        txn("t5", "at_cap", "remote_cash", "5000.00"),
        txn("t6", "free", "remittance", "4999.99", fee="0"),
        txn("t7", "transfer", "transfer", "50000.00"),
        # the golden remitter: 5,000 + 4,000 + 1,500.05, and a transfer that earns nothing
        txn("g1", "golden", "remittance", "20000.00"),
        txn("g2", "golden", "remittance", "20000.00", fee="0.8"),
        txn("g3", "golden", "remittance", "3000.10", fee="0.5"),
        txn("g4", "golden", "transfer", "80000.00"),
    ])
    assert bench.query("SELECT count(*) FROM validated_transactions WHERE reason IS NOT NULL") == [(0,)]

    assert counted(bench, "icbc_star", "settlement") == {
        "capped": D("5000.00"), "discount": D("4000.00"), "half": D("1500.05"), "half_up": D("1500.06"),
        "at_cap": D("5000.00"), "free": D("0.00"), "golden": D("10500.05"),
    }
    # A transfer is no figure's type: no program counts it.
    assert bench.query("SELECT count(*) FROM txn_figure_month WHERE customer_id = 'transfer'") == [(0,)]

    got = bench.evaluate(ICBC, "2025-06")
    assert got["capped"]["pts_settlement"] == D("100.00")  # 200 * 5000 / 10000
    assert got["capped"]["points"] == D("100.00")
    assert got["half"]["pts_settlement"] == D("30.00")  # 200 * 1500.05 / 10000 = 30.001
    assert got["golden"]["points"] == D("210.00")  # 200 * 10500.05 / 10000 = 210.001
    assert got["golden"]["computed_tier"] == 3
    assert got["transfer"]["points"] == D("0.00")
    assert got["transfer"]["computed_tier"] == 0


def test_card_spending_exclusions_are_boc_only(bench):
    bench.customers("big", "limit", "school", "shop", "no_mcc", "fee")
    bench.ingest("transactions", "2025-06", [
        txn("b1", "big", "card_pos", "100000.01", mcc="5511"),
        txn("l1", "limit", "card_pos", "100000.00", mcc="5511"),
        txn("s1", "school", "card_pos", "5000.00", mcc="8211"),
        txn("s2", "shop", "card_pos", "5000.00", mcc="5411"),
        txn("n1", "no_mcc", "card_pos", "123.45"),
        txn("f1", "fee", "card_pos", "1000.01", fee="0.5"),  # BOC takes no fee factor; ICBC 500.005 -> 500.01
    ])
    assert counted(bench, "boc_vip", "card_spending") == {
        "limit": D("100000.00"), "shop": D("5000.00"), "no_mcc": D("123.45"), "fee": D("1000.01"),
    }
    assert counted(bench, "icbc_star", "card_spend") == {
        "big": D("100000.01"), "limit": D("100000.00"), "school": D("5000.00"), "shop": D("5000.00"),
        "no_mcc": D("123.45"), "fee": D("500.01"),
    }


def test_only_good_rows_count_and_the_rest_of_their_customers_month_still_does(bench):
    """Figures are summed per customer in the month's scan; a customer with a row whose txn_id another
    row shares is summed again from the good rows. Each kind of bad row counts for nothing."""
    bench.customers("clean", "shared", "across", "bad_row", "no_rate")
    bench.ingest("transactions", "2025-06", [
        txn("c1", "clean", "card_pos", "100.00"),
        txn("s1", "shared", "card_pos", "10.00"),
        txn("dup", "shared", "card_pos", "20.00"),
        txn("dup", "shared", "card_pos", "30.00"),
        txn("a1", "across", "card_pos", "1.00"),
        txn("dup", "across", "card_pos", "40.00"),  # shares the id with another customer's rows
        txn("b1", "bad_row", "card_pos", "0"),
        txn("b2", "bad_row", "card_pos", "5.00"),
        txn("n1", "no_rate", "card_pos", "7.00", currency="JPY"),
        txn("n2", "no_rate", "card_pos", "3.00"),
        txn("g1", "ghost", "card_pos", "50.00"),  # not a known customer
    ])
    assert dict(bench.query("SELECT reason, count(*) FROM validated_transactions GROUP BY reason")) == {
        None: 5, "duplicate_key": 3, "out_of_range": 1, "no_fx_rate": 1, "unknown_customer": 1}

    expected = {"clean": D("100.00"), "shared": D("10.00"), "across": D("1.00"), "bad_row": D("5.00"),
                "no_rate": D("3.00")}
    assert counted(bench, "icbc_star", "card_spend") == expected
    assert counted(bench, "boc_vip", "card_spending") == expected


def test_boc_card_spending_window_is_the_last_twelve_months(bench):
    bench.customers("exact", "inside", "outside", "over_limit_month")
    bench.txn_sum("boc_vip", "card_spending", "2025-12", "exact", "100000.00")
    bench.txn_sum("boc_vip", "card_spending", "2025-12", "inside", "99999.99")
    bench.txn_sum("boc_vip", "card_spending", "2025-01", "inside", "0.01")  # T-11: in the window
    bench.txn_sum("boc_vip", "card_spending", "2025-12", "outside", "99999.99")
    bench.txn_sum("boc_vip", "card_spending", "2024-12", "outside", "0.01")  # T-12: not
    # ICBC's card figure of the same customer is another program's: it does not count for BOC.
    bench.txn_sum("icbc_star", "card_spend", "2025-12", "over_limit_month", "500000.00")

    got = bench.evaluate(BOC, "2025-12")

    assert {c: got[c]["computed_tier"] for c in got} == {"exact": 1, "inside": 1, "outside": 0, "over_limit_month": 0}
    assert got["exact"]["tier_name"] == "wealth"
    assert all(row["points"] is None for row in got.values())  # a program without points


# ---------------------------------------------------------------------------------------------
# Currency conversion
# ---------------------------------------------------------------------------------------------
def test_fx_conversion_row_by_row_half_up_with_the_latest_rate(bench):
    bench.customers("usd", "weekend", "early", "eur")
    bench.fx("USD", "2025-05-30", "7.00000000")  # Friday before the month
    bench.fx("USD", "2025-06-06", "7.12345000")  # Friday
    bench.fx("USD", "2025-06-09", "7.20000000")  # Monday
    bench.fx("EUR", "2025-06-10", "8.00000000")
    bench.stage("balances", [
        # two rows on Friday, each 712.345 -> 712.35: row by row 1,424.70 (the rounded sum would be 1,424.69)
        *balance_rows("usd", "demand_deposit", "2025-06", "100.00", account="u1", days=[date(2025, 6, 6)],
                      currency="USD"),
        *balance_rows("usd", "demand_deposit", "2025-06", "100.00", account="u2", days=[date(2025, 6, 6)],
                      currency="USD"),
        # Saturday and Sunday use Friday's rate, Monday its own
        *balance_rows("weekend", "demand_deposit", "2025-06", "10000.00", account="w1",
                      days=[date(2025, 6, 7), date(2025, 6, 8), date(2025, 6, 9)], currency="USD"),
        # Sunday June 1st: the rate of Friday May 30th
        *balance_rows("early", "demand_deposit", "2025-06", "0.50", account="e1", days=[date(2025, 6, 1)],
                      currency="USD"),
        # EUR has no rate on or before June 9th; on the 10th it has
        *balance_rows("eur", "demand_deposit", "2025-06", "1.00", account="x1",
                      days=[date(2025, 6, 9), date(2025, 6, 10)], currency="EUR"),
    ])
    bench.validate("balances", "2025-06")

    converted = {
        (account, day.isoformat()): (cny, reason)
        for account, day, cny, reason in bench.query(
            "SELECT account_id, day, balance_cny, reason FROM validated_balances")
    }
    assert converted[("u1", "2025-06-06")] == (D("712.35"), None)
    assert converted[("w1", "2025-06-07")] == (D("71234.50"), None)
    assert converted[("w1", "2025-06-08")] == (D("71234.50"), None)
    assert converted[("w1", "2025-06-09")] == (D("72000.00"), None)
    assert converted[("e1", "2025-06-01")] == (D("3.50"), None)
    assert converted[("x1", "2025-06-09")][1] == "no_fx_rate"
    assert converted[("x1", "2025-06-10")] == (D("8.00"), None)

    runner.run(bench.con, "balance_month", month_start=date(2025, 6, 1), month_end=date(2025, 6, 30))
    sums = dict(bench.query("SELECT customer_id, day_sum FROM balance_month"))
    assert sums == {"usd": D("1424.70"), "weekend": D("214469.00"), "early": D("3.50"), "eur": D("8.00")}


# ---------------------------------------------------------------------------------------------
# Validation of balances and transactions
# ---------------------------------------------------------------------------------------------
def test_validated_balances_reason_codes(bench):
    bench.customers("c1")
    bench.fx("USD", "2025-06-01", "7.10000000")
    good = {"account_id": "a1", "customer_id": "c1", "product_code": "time_deposit",
            "balance_date": "2025-06-10", "balance": "100.00"}
    cases = [
        ({}, (None, None)),
        ({"account_id": "a2", "balance": "-0.01"}, ("balance", "out_of_range")),
        ({"account_id": "a3", "balance": "abc"}, ("balance", "unparseable")),
        ({"account_id": "a4", "balance": "12.345"}, ("balance", "unparseable")),
        ({"account_id": "a5", "balance_date": "2025-06-31"}, ("balance_date", "unparseable")),
        ({"account_id": "a6", "balance_date": "2025-07-01"}, ("balance_date", "outside_month")),
        ({"account_id": "a7", "balance_date": "2025-05-31"}, ("balance_date", "outside_month")),
        ({"account_id": "a8", "product_code": "savings"}, ("product_code", "unknown_code")),
        ({"account_id": "a9", "customer_id": "ghost"}, ("customer_id", "unknown_customer")),
        ({"account_id": "dup"}, ("balance_date", "duplicate_key")),
        ({"account_id": "dup"}, ("balance_date", "duplicate_key")),
        ({"account_id": "a10", "currency": "GBP"}, ("currency", "no_fx_rate")),
        ({"account_id": "a11", "currency": "usd"}, ("currency", "bad_currency")),
        ({"account_id": "a12", "risk_class": "dubious"}, ("risk_class", "unknown_code")),
        ({"account_id": "a13", "balance": None}, ("balance", "missing_value")),
        ({"account_id": "a14", "currency": "USD", "balance": "0.00"}, (None, None)),
        ({"account_id": "a15", "balance": "1234567890123456.78"}, (None, None)),
        ({"account_id": "a16", "balance_date": "2025/06/10"}, ("balance_date", "unparseable")),
    ]
    bench.stage("balances", [{**good, **change} for change, _ in cases])
    bench.validate("balances", "2025-06")

    assert bench.problems("balances") == {line: expected for line, (_, expected) in enumerate(cases, start=2)}

    runner.run(bench.con, "balance_month", month_start=date(2025, 6, 1), month_end=date(2025, 6, 30))
    # Only good rows are summed: 100.00 + the large one in CNY, 0.00 USD apart (foreign_currency).
    assert bench.query("SELECT customer_id, product_code, foreign_currency, day_sum FROM balance_month "
                       "ORDER BY foreign_currency") == [
        ("c1", "time_deposit", False, D("1234567890123556.78")), ("c1", "time_deposit", True, D("0.00"))
    ]


def test_validated_transactions_reason_codes(bench):
    bench.customers("c1")
    good = {"txn_id": None, "account_id": "a1", "customer_id": "c1", "txn_date": "2025-06-10",
            "txn_type": "card_pos", "amount": "10.00"}
    cases = [
        ({}, (None, None)),
        ({"amount": "0"}, ("amount", "out_of_range")),
        ({"amount": "-5.00"}, ("amount", "out_of_range")),
        ({"amount": "5.001"}, ("amount", "unparseable")),
        ({"fee_factor": "1.5"}, ("fee_factor", "out_of_range")),
        ({"fee_factor": "x"}, ("fee_factor", "unparseable")),
        ({"fee_factor": "1"}, (None, None)),
        ({"merchant_category": "82"}, ("merchant_category", "unparseable")),
        ({"txn_type": "gift"}, ("txn_type", "unknown_code")),
        ({"txn_date": "2025-02-29"}, ("txn_date", "unparseable")),
        ({"txn_date": "2025-07-01"}, ("txn_date", "outside_month")),
        ({"customer_id": "ghost"}, ("customer_id", "unknown_customer")),
        ({"txn_id": "dup"}, ("txn_id", "duplicate_key")),
        ({"txn_id": "dup"}, ("txn_id", "duplicate_key")),
        ({"currency": "JPY"}, ("currency", "no_fx_rate")),
    ]
    rows = []
    for n, (change, _) in enumerate(cases):
        rows.append({**good, "txn_id": f"t{n}", **change})
    bench.stage("transactions", rows)
    bench.validate("transactions", "2025-06")
    assert bench.problems("transactions") == {line: expected for line, (_, expected) in enumerate(cases, start=2)}


# ---------------------------------------------------------------------------------------------
# Sparse balances and the month-end basis (boc_vip)
# ---------------------------------------------------------------------------------------------
def test_sparse_balances_and_month_end_basis(bench):
    customers = ["sparse", "sparse_short", "loan_end", "loan_before", "loan_class", "loan_two", "private"]
    bench.customers(*customers)
    june = Month(2025, 6)
    bench.ingest("balances", "2025-06", [
        # one day of 6,000,000 in a 30-day month: the missing 29 days count zero, ADB 200,000 -> wealth
        *balance_rows("sparse", "fund", "2025-06", "6000000.00", days=[date(2025, 6, 3)]),
        *balance_rows("sparse_short", "fund", "2025-06", "5999999.99", days=[date(2025, 6, 3)]),
        # month_end reads the last day only
        *balance_rows("loan_end", "mortgage", "2025-06", "500000.00", days=[date(2025, 6, 30)]),
        *balance_rows("loan_before", "mortgage", "2025-06", "900000.00", days=days_of(june)[:-1]),
        *balance_rows("loan_before", "mortgage", "2025-06", "499999.99", days=[date(2025, 6, 30)]),
        *balance_rows("loan_class", "mortgage", "2025-06", "900000.00", risk_class="special_mention"),
        *balance_rows("loan_two", "consumer_loan", "2025-06", "300000.00", days=[date(2025, 6, 30)]),
        *balance_rows("loan_two", "business_loan", "2025-06", "200000.00", days=[date(2025, 6, 30)]),
        *balance_rows("private", "demand_deposit", "2025-06", "3000000.00"),
        *balance_rows("private", "gold", "2025-06", "3000000.00"),
    ])
    stored = {(c, p, r): (s, e) for c, p, r, s, e in bench.query(
        "SELECT customer_id, product_code, risk_class, day_sum, month_end FROM balance_month")}
    assert stored[("sparse", "fund", "normal")] == (D("6000000.00"), D("0.00"))
    assert stored[("loan_end", "mortgage", "normal")] == (D("500000.00"), D("500000.00"))
    assert stored[("loan_before", "mortgage", "normal")] == (D("900000.00") * 29 + D("499999.99"), D("499999.99"))
    assert stored[("loan_class", "mortgage", "special_mention")] == (D("27000000.00"), D("900000.00"))

    got = bench.evaluate(BOC, "2025-06")

    assert {c: got[c]["computed_tier"] for c in customers} == {
        "sparse": 1, "sparse_short": 0, "loan_end": 1, "loan_before": 0, "loan_class": 0, "loan_two": 1,
        "private": 3,
    }
    assert got["private"]["tier_name"] == "private-banking"


# ---------------------------------------------------------------------------------------------
# Floors and caps, on as_of
# ---------------------------------------------------------------------------------------------
def test_floors_are_the_highest_product_held_on_as_of(bench):
    cases = {
        "opened_as_of": (("credit_card_gold", "2025-06-30", None),),
        "closed_as_of": (("wealth_card", "2020-01-01", "2025-06-30"),),
        "closed_after": (("wealth_card", "2020-01-01", "2025-07-01"),),
        "opens_later": (("private_banking_agreement", "2025-07-01", None),),
        "several": (("credit_card_standard", "2019-01-01", None), ("credit_card_platinum", "2024-01-01", None),
                    ("credit_card_gold", "2023-01-01", None),
                    ("private_banking_agreement", "2021-01-01", "2022-01-01")),  # closed long ago
        "elite": (("elite_club_account", "2025-01-01", None),),
        "above_floor": (("credit_card_standard", "2025-01-01", None),),
    }
    customers = list(cases)
    bench.customers(*customers)
    for customer in customers:
        for code, opened, closed in cases[customer]:
            bench.product(customer, code, opened, closed)
    bench.txn_sum("icbc_star", "card_spend", "2025-06", "above_floor", "50000.00")  # 2,000 points: five-star

    got = bench.evaluate(ICBC, "2025-06")

    assert {c: got[c]["floor_tier"] for c in customers} == {
        "opened_as_of": 5, "closed_as_of": None, "closed_after": 6, "opens_later": None, "several": 6,
        "elite": 5, "above_floor": 4,
    }
    assert {c: got[c]["tier"] for c in customers} == {
        "opened_as_of": 5, "closed_as_of": 0, "closed_after": 6, "opens_later": 0, "several": 6,
        "elite": 5, "above_floor": 5,
    }
    assert got["several"]["computed_tier"] == 0
    assert got["several"]["tier_name"] == "six-star"
    assert got["above_floor"]["computed_tier"] == 5
    assert not any(got[c]["at_risk"] for c in customers)


def test_caps_are_credit_events_active_on_as_of(bench):
    cases = {
        "active": ("loan_loss", "2025-01-01", None),
        "starts_as_of": ("quasi_credit_overdraft_12m", "2025-06-30", None),
        "cured_as_of": ("credit_card_default_11m", "2025-01-01", "2025-06-30"),
        "cured_after": ("credit_card_default_11m", "2025-01-01", "2025-07-01"),
        "starts_later": ("loan_loss", "2025-07-01", None),
        "floor_and_points": ("loan_loss", "2024-01-01", None),
        "unrated": ("loan_loss", "2024-01-01", None),
    }
    bench.customers(*cases)
    for customer, (code, started, cured) in cases.items():
        bench.event(customer, code, started, cured)
        if customer != "unrated":
            bench.txn_sum("icbc_star", "card_spend", "2025-06", customer, "300000.00")  # 12,000 points: six-star
    bench.product("floor_and_points", "private_banking_agreement", "2020-01-01")

    got = bench.evaluate(ICBC, "2025-06")

    assert {c: got[c]["capped"] for c in cases} == {
        "active": True, "starts_as_of": True, "cured_as_of": False, "cured_after": True, "starts_later": False,
        "floor_and_points": True, "unrated": True,
    }
    assert {c: got[c]["tier"] for c in cases} == {
        "active": 1, "starts_as_of": 1, "cured_as_of": 6, "cured_after": 1, "starts_later": 6,
        "floor_and_points": 1, "unrated": 0,
    }
    assert {c: got[c]["reason"] for c in cases if got[c]["capped"]} == {
        c: "credit_cap" for c in cases if got[c]["capped"]
    }
    assert got["floor_and_points"]["floor_tier"] == 7
    assert got["floor_and_points"]["computed_tier"] == 6
    assert got["active"]["tier_name"] == "quasi-star"


def test_boc_has_no_caps(bench):
    bench.customers("rich_defaulter")
    bench.balance_sum("2025-06", "rich_defaulter", "time_deposit", str(D("1000000.00") * 30))
    bench.event("rich_defaulter", "loan_loss", "2024-01-01")
    got = bench.evaluate(BOC, "2025-06")
    row = got["rich_defaulter"]
    assert (row["capped"], row["tier"], row["tier_name"], row["floor_tier"]) == (False, 2, "fortune", None)


# ---------------------------------------------------------------------------------------------
# Empty optional cells, whatever the file format
# ---------------------------------------------------------------------------------------------
def write_landing_file(path: Path, rows: list[dict]) -> Path:
    """A landing file whose empty optional cells are empty strings (as exporters write them)."""
    columns = list(rows[0])
    if path.suffix == ".csv":
        lines = [",".join(columns)] + [",".join(row[c] for c in columns) for row in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        pq.write_table(pa.table({c: [row[c] for row in rows] for c in columns}), path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_empty_optional_cells_mean_not_given(bench, tmp_path, suffix):
    bench.customers("c1")
    june = Month(2025, 6)
    balances = write_landing_file(tmp_path / f"balances{suffix}", [
        {"account_id": "a1", "customer_id": "c1", "product_code": "mortgage", "balance_date": "2025-06-30",
         "balance": "500000.00", "currency": "", "risk_class": ""},
    ])
    transactions = write_landing_file(tmp_path / f"transactions{suffix}", [
        {"txn_id": "t1", "account_id": "a1", "customer_id": "c1", "txn_date": "2025-06-30", "txn_type": "card_pos",
         "amount": "100.00", "currency": "", "merchant_category": "", "fee_factor": ""},
    ])
    landing.land(bench.con, landing.Source("balances", june, (balances,)))
    validate_month(bench.con, "balances", june, VOCAB)
    landing.land(bench.con, landing.Source("transactions", june, (transactions,)))
    validate_month(bench.con, "transactions", june, VOCAB)

    assert bench.query("SELECT reason, risk, balance_cny FROM validated_balances") == [
        (None, "normal", D("500000.00"))]
    assert bench.query("SELECT reason, fee, amount_cny FROM validated_transactions") == [
        (None, D("1"), D("100.00"))]


# ---------------------------------------------------------------------------------------------
# Typed Parquet columns read as their text would
# ---------------------------------------------------------------------------------------------
def _validated(bench, path: Path, dataset: str, columns: str) -> list[tuple]:
    june = Month(2025, 6)
    landing.land(bench.con, landing.Source(dataset, june, (path,)))
    validate_month(bench.con, dataset, june, VOCAB)
    return bench.query(f"SELECT source_row, {columns} FROM validated_{dataset} ORDER BY source_row")


def _typed_as_text(bench, tmp_path: Path, dataset: str, typed: dict, columns: str) -> list[tuple]:
    """Validate ``typed`` columns written as Parquet, and as their text in a CSV; every row must come out
    the same (Parquet rows count from 1, CSV lines from 2, after the header). Returns the Parquet rows."""
    parquet = tmp_path / "typed.parquet"
    pq.write_table(pa.table(typed), parquet)
    from_csv = _validated(bench, write_landing_file(tmp_path / "text.csv", _as_text(typed)), dataset, columns)
    from_parquet = _validated(bench, parquet, dataset, columns)
    assert from_parquet == [(row - 1, *rest) for row, *rest in from_csv]
    return from_parquet


BIG = D("9999999999999999.99")  # the largest amount DECIMAL(18, 2) holds


def _as_text(columns: dict) -> list[dict]:
    """The rows of typed columns as a CSV exporter writes them: str() of each value, '' for none."""
    lists = [c.to_pylist() if hasattr(c, "to_pylist") else c for c in columns.values()]
    return [{name: ("" if v is None else str(v)) for name, v in zip(columns, row)} for row in zip(*lists)]


@pytest.mark.parametrize("balance_type", [pa.decimal128(18, 2), pa.decimal128(38, 2)])
def test_typed_balance_columns_read_as_their_text(bench, tmp_path, balance_type):
    """A Parquet DATE or DECIMAL column skips the text patterns; every row must get the reason and
    value its text form gets in a CSV."""
    bench.customers("c1")
    bench.fx("USD", "2025-06-01", "7.10000000")
    days = [date(2025, 6, 1), date(2025, 6, 30), date(2025, 7, 1), date(2025, 5, 31), None, date(2025, 6, 30)]
    amounts = [D("12.50"), D("0"), D("-0.01"), BIG, None, D("1.25")]
    accounts = ["a0", "a1", "a2", "a3", "a4", "a1"]  # the last row repeats a1's key
    currencies = [None] * 6
    if balance_type == pa.decimal128(38, 2):
        # One beyond DECIMAL(18, 2); one that fits but overflows once converted from USD.
        amounts, days = amounts + [BIG + D("0.01"), BIG], days + [date(2025, 6, 2), date(2025, 6, 3)]
        accounts, currencies = accounts + ["a6", "a7"], currencies + [None, "USD"]
    typed = {
        "account_id": accounts,
        "customer_id": ["c1"] * len(amounts),
        "product_code": ["time_deposit"] * len(amounts),
        "balance_date": pa.array(days, pa.date32()),
        "balance": pa.array(amounts, balance_type),
        "currency": currencies,
    }
    from_parquet = _typed_as_text(bench, tmp_path, "balances", typed, "problem_column, reason, day, balance_cny")
    reasons = [r[2] for r in from_parquet]
    assert reasons[:6] == [None, "duplicate_key", "out_of_range", "outside_month", "missing_value", "duplicate_key"]
    assert reasons[6:] == (["unparseable", "out_of_range"] if balance_type == pa.decimal128(38, 2) else [])


def test_typed_transaction_columns_read_as_their_text(bench, tmp_path):
    bench.customers("c1")
    fees = [D("0.50"), D("1.00"), D("1.50"), None, D("0.25")]
    amounts = [D("10.00"), D("0.01"), D("5.00"), D("7.00"), D("-1.00")]
    typed = {
        "txn_id": [f"t{i}" for i in range(len(fees))],
        "account_id": ["a1"] * len(fees),
        "customer_id": ["c1"] * len(fees),
        "txn_date": pa.array([date(2025, 6, 10)] * len(fees), pa.date32()),
        "txn_type": ["card_pos"] * len(fees),
        "amount": pa.array(amounts, pa.decimal128(18, 2)),
        "fee_factor": pa.array(fees, pa.decimal128(3, 2)),
    }
    from_parquet = _typed_as_text(bench, tmp_path, "transactions", typed, "problem_column, reason, fee, amount_cny")
    assert [(r[2], r[3], r[4]) for r in from_parquet] == [
        (None, D("0.5"), D("10.00")), (None, D("1"), D("0.01")), ("out_of_range", D("1.5"), D("5.00")),
        (None, D("1"), D("7.00")), ("out_of_range", D("0.25"), D("-1.00"))]
