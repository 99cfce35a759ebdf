"""The synthetic landing folder keeps the data contract (data-contract.md section 1) and tells stories
that spread customers over every tier of every shipped program (programs.md)."""

import calendar
import hashlib
import json
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from data.generator import build_parser, generate_landing, main
from ground.months import Month

# The contract's vocabularies, copied here on purpose: the generator must not drift from the contract.
BALANCE_PRODUCT_CODES = {
    "demand_deposit", "brokerage_custody", "overnight_wmp", "money_market_fund", "credit_card_deposit",
    "time_deposit", "housing_fund", "wmp", "fund", "government_bond", "insurance", "gold", "mortgage",
    "consumer_loan", "business_loan", "credit_card_overdraft",
}
TXN_TYPES = {
    "fund_trade", "wmp_purchase", "bond_purchase", "insurance_purchase", "gold_trade", "fx_trade",
    "card_pos", "card_installment", "remote_cash", "remittance", "transfer", "salary_credit", "atm_local", "fee",
}
HELD_PRODUCT_CODES = {
    "credit_card_standard", "credit_card_gold", "credit_card_platinum", "elite_club_account",
    "wealth_card", "private_banking_agreement",
}
CREDIT_EVENT_CODES = {"loan_loss", "quasi_credit_overdraft_12m", "credit_card_default_11m"}
RISK_CLASSES = {"normal", "special_mention", "substandard", "doubtful", "loss"}
LOAN_CODES = ("mortgage", "consumer_loan", "business_loan")
SHORT_TERM_CODES = ("demand_deposit", "brokerage_custody", "overnight_wmp", "money_market_fund",
                    "credit_card_deposit")
LONG_TERM_CODES = ("time_deposit", "housing_fund", "wmp", "fund", "government_bond", "insurance", "gold")
# Owed against financial assets by the regulator's net standard (programs.md section 6); not mortgages.
FINANCIAL_LIABILITY_CODES = ("consumer_loan", "business_loan", "credit_card_overdraft")

MONTHS = ["2025-01", "2025-02", "2025-03", "2025-04", "2025-05", "2025-06", "2025-07"]
FILE_KINDS = ["customers", "products", "credit_events", "credit_scores", "fx_rates"]
MONTHLY_KINDS = ["balances", "transactions", "card_points"]
MONEY_TEXT = r"^[0-9]+(\.[0-9]{1,2})?$"


def month_start(month: str) -> date:
    return date.fromisoformat(f"{month}-01")


def generate(out_dir: Path, customers: int = 300, **options) -> dict:
    return generate_landing(out_dir, customers=customers, first_month=MONTHS[0], months=len(MONTHS), **options)


def open_landing(landing: Path, file_format: str) -> duckdb.DuckDBPyConnection:
    """Views over the landing files with every column as text, as a loader sees a CSV cell."""
    con = duckdb.connect()
    for kind in [*MONTHLY_KINDS, *FILE_KINDS]:
        monthly = kind in MONTHLY_KINDS
        pattern = landing / (f"{kind}/*.{file_format}" if monthly else f"{kind}.{file_format}")
        if file_format == "csv":
            source = f"read_csv('{pattern}', all_varchar = true, filename = true)"
        else:
            source = f"(SELECT COLUMNS(*)::VARCHAR FROM read_parquet('{pattern}', filename = true))"
        con.execute(f"""
            CREATE VIEW {kind} AS
            SELECT * EXCLUDE (filename), regexp_extract(filename, '([0-9]{{4}}-[0-9]{{2}})\\.[a-z]+$', 1) AS file_month
            FROM {source}
        """)
    return con


def scalar(con, query: str):
    return con.execute(query).fetchone()[0]


def digests(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module", params=["csv", "parquet"])
def landing(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"landing_{request.param}")
    summary = generate(out, file_format=request.param)
    return out, request.param, summary


@pytest.fixture(scope="module")
def db(landing):
    out, file_format, _ = landing
    con = open_landing(out, file_format)
    yield con
    con.close()


@pytest.fixture(scope="module")
def big_db(tmp_path_factory):
    """2,000 customers: enough for the rare stories (seven-star, credit events) to appear."""
    out = tmp_path_factory.mktemp("landing_2000")
    generate(out, customers=2000)
    con = open_landing(out, "csv")
    yield con
    con.close()


def test_every_file_of_the_contract_exists(landing):
    out, file_format, summary = landing
    for month in MONTHS:
        for kind in MONTHLY_KINDS:
            assert (out / kind / f"{month}.{file_format}").is_file(), kind
    for kind in FILE_KINDS:
        assert (out / f"{kind}.{file_format}").is_file()
    assert summary["months"] == MONTHS


def test_columns_follow_the_contract(db):
    expected = {
        "customers": ["customer_id", "segment"],
        "balances": ["account_id", "customer_id", "product_code", "balance_date", "balance", "currency",
                     "risk_class"],
        "transactions": ["txn_id", "account_id", "customer_id", "txn_date", "txn_type", "amount", "currency",
                         "merchant_category", "fee_factor"],
        "products": ["customer_id", "product_code", "opened_on", "closed_on"],
        "credit_events": ["customer_id", "event_code", "started_on", "cured_on"],
        "fx_rates": ["rate_date", "currency", "cny_per_unit"],
        "card_points": ["entry_id", "customer_id", "posted_on", "points"],
        "credit_scores": ["customer_id", "scored_on", "score"],
    }
    for kind, columns in expected.items():
        assert [c[0] for c in db.execute(f"DESCRIBE {kind}").fetchall()] == [*columns, "file_month"]


def test_summary_counts_the_rows_written(landing, db):
    _, _, summary = landing
    for kind, rows in summary["rows"].items():
        assert scalar(db, f"SELECT count(*) FROM {kind}") == rows, kind
    assert summary["rows"]["customers"] == 300


def test_parquet_money_is_decimal_and_dates_are_dates(tmp_path):
    generate(tmp_path, customers=100, file_format="parquet")

    def column_types(pattern):
        described = duckdb.sql(f"DESCRIBE FROM read_parquet('{tmp_path / pattern}')").fetchall()
        return {name: kind for name, kind, *_ in described}

    balances, txns, rates, points, scores = (column_types(pattern) for pattern in (
        "balances/*.parquet", "transactions/*.parquet", "fx_rates.parquet", "card_points/*.parquet",
        "credit_scores.parquet"))
    assert (balances["balance"], balances["balance_date"]) == ("DECIMAL(18,2)", "DATE")
    assert (txns["amount"], txns["txn_date"], txns["fee_factor"]) == ("DECIMAL(18,2)", "DATE", "DECIMAL(3,2)")
    assert rates["cny_per_unit"] == "DECIMAL(18,6)"
    # integers as integers (data-contract.md: points and score may be text or an integer type)
    assert (points["points"], points["posted_on"]) == ("BIGINT", "DATE")
    assert (scores["score"], scores["scored_on"]) == ("INTEGER", "DATE")


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_same_arguments_give_identical_bytes_and_another_seed_differs(tmp_path, file_format):
    for name, seed in [("first", 7), ("again", 7), ("other", 8)]:
        generate(tmp_path / name, customers=200, seed=seed, file_format=file_format)
    first = digests(tmp_path / "first")
    assert first == digests(tmp_path / "again")
    other = digests(tmp_path / "other")
    assert first.keys() == other.keys()
    for kind in ["balances/2025-01", "transactions/2025-01", "card_points/2025-01", "products", "credit_scores",
                 "fx_rates"]:
        assert first[f"{kind}.{file_format}"] != other[f"{kind}.{file_format}"], kind


def test_dates_lie_inside_the_month_of_their_file(db):
    for kind, column in [("balances", "balance_date"), ("transactions", "txn_date"), ("card_points", "posted_on")]:
        assert scalar(db, f"SELECT count(*) FROM {kind} WHERE strftime({column}::DATE, '%Y-%m') <> file_month") == 0
        assert sorted(m for (m,) in db.execute(f"SELECT DISTINCT file_month FROM {kind}").fetchall()) == MONTHS


def test_keys_are_unique(db):
    for kind, key in [("customers", "customer_id"), ("balances", "account_id, balance_date"),
                      ("transactions", "txn_id"), ("card_points", "entry_id"),
                      ("credit_scores", "customer_id, scored_on")]:
        assert scalar(db, f"SELECT count(*) - count(DISTINCT ({key})) FROM {kind}") == 0, kind


def test_codes_come_from_the_vocabularies(db):
    def distinct(query):
        return {value for (value,) in db.execute(query).fetchall()}

    assert distinct("SELECT DISTINCT product_code FROM balances") <= BALANCE_PRODUCT_CODES
    assert distinct("SELECT DISTINCT txn_type FROM transactions") <= TXN_TYPES
    assert distinct("SELECT DISTINCT product_code FROM products") <= HELD_PRODUCT_CODES
    assert distinct("SELECT DISTINCT event_code FROM credit_events") <= CREDIT_EVENT_CODES
    loan_codes = ", ".join(f"'{code}'" for code in LOAN_CODES)
    assert distinct(f"SELECT DISTINCT risk_class FROM balances WHERE product_code IN ({loan_codes})") <= RISK_CLASSES
    assert distinct(f"SELECT DISTINCT risk_class FROM balances WHERE product_code NOT IN ({loan_codes})") == {None}
    assert distinct("SELECT DISTINCT currency FROM balances UNION SELECT DISTINCT currency FROM transactions") \
        <= {"CNY", "USD", "HKD"}


def test_merchant_category_and_fee_factor_only_where_they_belong(db):
    assert scalar(db, """
        SELECT count(*) FROM transactions
        WHERE (txn_type = 'card_pos') <> coalesce(regexp_full_match(merchant_category, '[0-9]{4}'), false)
    """) == 0
    assert scalar(db, """
        SELECT count(*) FROM transactions
        WHERE fee_factor IS NOT NULL
          AND (txn_type NOT IN ('remittance', 'remote_cash') OR fee_factor::DECIMAL(3, 2) NOT IN (0.5, 0.8))
    """) == 0
    share = scalar(db, "SELECT avg((fee_factor IS NOT NULL)::INT) FROM transactions "
                       "WHERE txn_type IN ('remittance', 'remote_cash')")
    assert 0 < share < 0.5


def test_money_is_decimal_text_with_at_most_two_decimals(db):
    for kind, column, lowest in [("balances", "balance", 0), ("transactions", "amount", 0.01)]:
        assert scalar(db, f"SELECT count(*) FROM {kind} WHERE NOT regexp_full_match({column}, '{MONEY_TEXT}')") == 0
        # read as DECIMAL nothing is lost: text -> DECIMAL -> text gives the same digits
        assert scalar(db, f"""
            SELECT count(*) FROM {kind}
            WHERE TRY_CAST({column} AS DECIMAL(18, 2)) IS NULL
               OR {column}::DECIMAL(18, 2) < {lowest}
               OR {column}::DECIMAL(18, 2)::VARCHAR <> {column}
        """) == 0
    # sparse: zero days are left out rather than written
    assert scalar(db, "SELECT count(*) FROM balances WHERE balance::DECIMAL(18, 2) = 0") == 0


def test_every_customer_id_is_a_customer(db):
    for kind in ["balances", "transactions", "products", "credit_events", "card_points", "credit_scores"]:
        assert scalar(db, f"""
            SELECT count(*) FROM {kind} WHERE customer_id NOT IN (SELECT customer_id FROM customers)
        """) == 0, kind
    assert scalar(db, "SELECT count(*) FROM balances WHERE NOT starts_with(account_id, customer_id)") == 0


def test_end_dates_follow_start_dates(db):
    assert scalar(db, "SELECT count(*) FROM products WHERE closed_on::DATE <= opened_on::DATE") == 0
    assert scalar(db, "SELECT count(*) FROM credit_events WHERE cured_on::DATE <= started_on::DATE") == 0


def test_foreign_currency_rows_have_a_rate_on_or_before_their_date(db):
    for kind, column in [("balances", "balance_date"), ("transactions", "txn_date")]:
        assert scalar(db, f"""
            SELECT count(*) FROM {kind} AS row
            WHERE currency <> 'CNY' AND NOT EXISTS (
                SELECT 1 FROM fx_rates AS rate
                WHERE rate.currency = row.currency AND rate.rate_date::DATE <= row.{column}::DATE)
        """) == 0
    assert scalar(db, "SELECT min(rate_date::DATE) FROM fx_rates") <= month_start(MONTHS[0]) - timedelta(days=7)


def test_fx_rates_are_business_day_quotes_in_a_plausible_range(db):
    assert scalar(db, "SELECT count(*) FROM fx_rates WHERE dayofweek(rate_date::DATE) IN (0, 6)") == 0
    ranges = dict(db.execute("""
        SELECT currency, [min(cny_per_unit::DECIMAL(18, 6)), max(cny_per_unit::DECIMAL(18, 6))]
        FROM fx_rates GROUP BY currency
    """).fetchall())
    assert ranges.keys() == {"USD", "HKD"}
    assert 7.1 <= ranges["USD"][0] and ranges["USD"][1] <= 7.3
    assert 0.91 <= ranges["HKD"][0] and ranges["HKD"][1] <= 0.93
    assert scalar(db, "SELECT count(*) - count(DISTINCT (rate_date, currency)) FROM fx_rates") == 0


def test_the_rare_stories_exist(big_db):
    inactive = scalar(big_db, """
        SELECT count(*) FROM customers
        WHERE customer_id NOT IN (SELECT customer_id FROM balances)
          AND customer_id NOT IN (SELECT customer_id FROM transactions)
    """)
    assert 0.01 * 2000 <= inactive <= 0.05 * 2000
    card_holders = scalar(big_db, """
        SELECT count(DISTINCT customer_id) FROM products WHERE starts_with(product_code, 'credit_card')
    """)
    assert 0.05 * 2000 <= card_holders <= 0.12 * 2000
    assert scalar(big_db, "SELECT count(*) FROM products WHERE closed_on IS NOT NULL") > 0
    assert scalar(big_db, "SELECT count(*) FROM credit_events") > 0
    assert scalar(big_db, "SELECT count(*) FROM credit_events WHERE cured_on IS NOT NULL") > 0
    assert scalar(big_db, "SELECT count(DISTINCT customer_id) FROM balances WHERE currency <> 'CNY'") > 0
    assert scalar(big_db, "SELECT count(*) FROM balances WHERE risk_class = 'substandard'") > 0


def test_loans_are_loss_exactly_while_a_loan_loss_event_is_active(big_db):
    assert scalar(big_db, "SELECT count(*) FROM balances WHERE risk_class = 'loss'") > 0
    assert scalar(big_db, f"""
        SELECT count(*) FROM balances AS b LEFT JOIN credit_events AS e
            ON e.customer_id = b.customer_id AND e.event_code = 'loan_loss'
           AND e.started_on::DATE <= b.balance_date::DATE
           AND (e.cured_on IS NULL OR b.balance_date::DATE < e.cured_on::DATE)
        WHERE b.product_code IN ({", ".join(f"'{code}'" for code in LOAN_CODES)})
          AND (b.risk_class = 'loss') <> (e.customer_id IS NOT NULL)
    """) == 0


def test_risers_and_fallers_move(big_db):
    monthly = """
        SELECT customer_id, file_month, sum(balance::DECIMAL(18, 2)) AS total
        FROM balances WHERE product_code = 'demand_deposit' AND currency = 'CNY' GROUP BY ALL
    """
    first, last = MONTHS[0], MONTHS[-1]
    movers = big_db.execute(f"""
        WITH m AS ({monthly})
        SELECT count(*) FILTER (WHERE b.total < a.total * 0.01), count(*) FILTER (WHERE b.total > a.total * 1.5)
        FROM m AS a JOIN m AS b USING (customer_id)
        WHERE a.file_month = '{first}' AND b.file_month = '{last}'
    """).fetchone()
    fallers, risers = movers
    assert fallers > 0.02 * 2000 and risers > 0.01 * 2000


def days_in(month: str) -> int:
    return calendar.monthrange(*month_start(month).timetuple()[:2])[1]


def rough_icbc_tiers(con, window: list[str]) -> dict[int, int]:
    """Customers per ICBC computed tier from rough points over the window (CNY balances and card spending
    only, so never more than the real points), compared the exact way: sum * rate >= threshold * 10,000 * days."""
    days = sum(days_in(m) for m in window)
    # each tier's threshold scaled like the sums below (points * 10,000 * days), the highest first
    thresholds = [(7, 80000), (6, 10000), (5, 2000), (4, 500), (3, 50)]
    tier_of = " ".join(f"WHEN scaled >= {points * 10000 * days} THEN {tier}" for tier, points in thresholds)
    months = ", ".join(f"'{m}'" for m in window)
    short_term = ", ".join(f"'{c}'" for c in SHORT_TERM_CODES)
    return dict(con.execute(f"""
        WITH balance_sums AS (
            SELECT customer_id,
                sum(balance::DECIMAL(18, 2) * CASE
                    WHEN product_code IN ({short_term}) THEN 135
                    WHEN product_code IN ('consumer_loan', 'business_loan', 'credit_card_overdraft') THEN 200
                    ELSE 100 END) AS weighted
            FROM balances WHERE currency = 'CNY' AND file_month IN ({months}) GROUP BY customer_id
        ), spending AS (
            SELECT customer_id, sum(amount::DECIMAL(18, 2)) * 400 * {days} AS weighted
            FROM transactions WHERE txn_type = 'card_pos' AND currency = 'CNY' AND file_month IN ({months})
            GROUP BY customer_id
        ), points AS (
            SELECT customer_id, coalesce(b.weighted, 0) + coalesce(s.weighted, 0) AS scaled
            FROM customers LEFT JOIN balance_sums AS b USING (customer_id) LEFT JOIN spending AS s USING (customer_id)
        )
        SELECT CASE {tier_of} WHEN scaled > 0 THEN 1 ELSE 0 END AS tier, count(*)
        FROM points GROUP BY tier
    """).fetchall())


def test_star_points_spread_over_every_tier(big_db):
    window = MONTHS[-6:]
    days = sum(days_in(m) for m in window)
    months = ", ".join(f"'{m}'" for m in window)
    short_term = ", ".join(f"'{c}'" for c in SHORT_TERM_CODES)
    tiers = rough_icbc_tiers(big_db, window)
    assert sorted(tiers) == [0, 1, 3, 4, 5, 6, 7]
    assert tiers[7] <= 0.02 * 2000  # seven-star stays rare
    # seven-star on short-term balances alone (135 points per 10,000 CNY: an ADB of about 5.93M CNY)
    assert scalar(big_db, f"""
        SELECT count(*) FROM (
            SELECT customer_id FROM balances
            WHERE product_code IN ({short_term}) AND currency = 'CNY' AND file_month IN ({months})
            GROUP BY customer_id HAVING sum(balance::DECIMAL(18, 2)) * 135 >= {80000 * 10000 * days})
    """) > 0


def test_card_data_belongs_to_card_holders_while_the_card_is_held(db):
    held = """
        EXISTS (SELECT 1 FROM products AS p
                WHERE p.customer_id = row.customer_id AND starts_with(p.product_code, 'credit_card')
                  AND p.opened_on::DATE <= row.{day}::DATE
                  AND (p.closed_on IS NULL OR row.{day}::DATE < p.closed_on::DATE))
    """
    assert scalar(db, "SELECT count(*) FROM card_points") > 0
    assert scalar(db, f"SELECT count(*) FROM card_points AS row WHERE NOT {held.format(day='posted_on')}") == 0
    installments = "FROM transactions AS row WHERE txn_type = 'card_installment'"
    assert scalar(db, f"SELECT count(*) {installments}") > 0
    assert scalar(db, f"SELECT count(*) {installments} AND NOT {held.format(day='txn_date')}") == 0
    # booked on the card's account, in CNY, without a merchant or a fee factor
    assert scalar(db, f"""
        SELECT count(*) {installments}
          AND (NOT ends_with(account_id, '-03') OR currency <> 'CNY'
               OR merchant_category IS NOT NULL OR fee_factor IS NOT NULL)
    """) == 0
    # whole points above zero, written as plain integers
    assert scalar(db, "SELECT count(*) FROM card_points WHERE NOT regexp_full_match(points, '[1-9][0-9]*')") == 0


def test_credit_scores_are_whole_numbers_in_range_some_below_550_some_missing(big_db):
    assert scalar(big_db, "SELECT count(*) FROM credit_scores WHERE NOT regexp_full_match(score, '[0-9]{3}')") == 0
    low, high, below, rescored = big_db.execute("""
        SELECT min(score::INT), max(score::INT), count(*) FILTER (WHERE score::INT < 550),
               count(*) - count(DISTINCT customer_id)
        FROM credit_scores
    """).fetchone()
    assert 300 <= low and high <= 850
    assert below > 0 and rescored > 0
    unscored_card_holders = scalar(big_db, """
        SELECT count(DISTINCT customer_id) FROM products
        WHERE starts_with(product_code, 'credit_card')
          AND customer_id NOT IN (SELECT customer_id FROM credit_scores)
    """)
    assert unscored_card_holders > 0


# `tiers demo`'s defaults: 10,000 customers, 12 month-ends to 2025-12, and the landing folder starts 11
# months before the first month-end, for the twelve-month windows of boc_vip and cgb_card_star.
DEMO_CUSTOMERS, DEMO_FIRST_MONTH, DEMO_MONTHS, DEMO_LAST_MONTH = 10_000, "2024-02", 23, "2025-12"


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    out = tmp_path_factory.mktemp("landing_demo")
    summary = generate_landing(out, customers=DEMO_CUSTOMERS, first_month=DEMO_FIRST_MONTH, months=DEMO_MONTHS,
                               file_format="parquet")
    assert summary["months"][-1] == DEMO_LAST_MONTH
    con = open_landing(out, "parquet")
    yield con
    con.close()


def months_up_to(last: str, count: int) -> list[str]:
    return [str(Month.parse(last).plus(-back)) for back in reversed(range(count))]


def demo_tiers(con, program_tier_sql: str) -> set[int]:
    """The computed tiers that customers reach at the demo's last month-end, from `figures` (below)."""
    return {tier for (tier,) in con.execute(f"SELECT DISTINCT {program_tier_sql} FROM figures").fetchall()}


def test_the_demo_reaches_every_tier_of_every_program(demo_db):
    """Every tier of every shipped program is earned by some customer at the demo's last month-end,
    computed from programs.md's thresholds on the generated files: month sums against threshold * days,
    foreign currency converted row by row at the rate in force (rounded half-up to the cent)."""
    month, as_of, days = DEMO_LAST_MONTH, f"{DEMO_LAST_MONTH}-{days_in(DEMO_LAST_MONTH)}", days_in(DEMO_LAST_MONTH)
    window12 = ", ".join(f"'{m}'" for m in months_up_to(DEMO_LAST_MONTH, 12))
    assets = ", ".join(f"'{c}'" for c in SHORT_TERM_CODES + LONG_TERM_CODES)
    owed = ", ".join(f"'{c}'" for c in FINANCIAL_LIABILITY_CODES)
    zero_rate_mccs = "'4900', '8062', '8211', '8220', '8241', '8244', '8249', '8299', '8398', '9211', '9222', " \
                     "'9223', '9311', '9399', '9402'"
    demo_db.execute(f"""
        CREATE OR REPLACE TEMP TABLE figures AS
        WITH rates AS (
            SELECT currency, rate_date::DATE AS rate_date, cny_per_unit::DECIMAL(18, 8) AS cny_per_unit FROM fx_rates
        ), month_rows AS (
            SELECT customer_id, product_code, currency, risk_class, balance_date::DATE AS balance_date,
                   balance::DECIMAL(18, 2) AS balance
            FROM balances WHERE file_month = '{month}'
        ), converted AS (
            SELECT b.*, CASE WHEN b.currency = 'CNY' THEN b.balance
                             ELSE round(b.balance * r.cny_per_unit, 2) END AS cny
            FROM month_rows AS b ASOF LEFT JOIN rates AS r
              ON r.currency = b.currency AND b.balance_date >= r.rate_date
        ), balance_figures AS (
            SELECT customer_id,
                sum(cny) FILTER (WHERE product_code IN ({assets})) AS assets,
                sum(cny) FILTER (WHERE product_code IN ({owed})) AS owed,
                sum(cny) FILTER (WHERE product_code IN ({assets}) AND currency <> 'CNY') AS foreign_assets,
                sum(cny) FILTER (WHERE product_code IN ('mortgage', 'consumer_loan', 'business_loan')
                                   AND coalesce(risk_class, 'normal') = 'normal'
                                   AND balance_date = DATE '{as_of}') AS normal_loans
            FROM converted GROUP BY customer_id
        ), card_spending AS (
            -- counted as Bank of China counts it (the generator books card spending in CNY only)
            SELECT customer_id, sum(amount::DECIMAL(18, 2)) AS spending FROM transactions
            WHERE txn_type = 'card_pos' AND file_month IN ({window12})
              AND amount::DECIMAL(18, 2) <= 100000 AND merchant_category NOT IN ({zero_rate_mccs})
            GROUP BY customer_id
        ), installments AS (
            SELECT customer_id, sum(amount::DECIMAL(18, 2)) AS installment FROM transactions
            WHERE txn_type = 'card_installment' AND file_month IN ({window12}) GROUP BY customer_id
        ), points AS (
            SELECT customer_id, sum(points::BIGINT) AS reward_points FROM card_points
            WHERE file_month IN ({window12}) GROUP BY customer_id
        ), scores AS (
            SELECT customer_id, arg_max(score::INT, scored_on::DATE) AS credit_score FROM credit_scores
            WHERE scored_on::DATE <= DATE '{as_of}' GROUP BY customer_id
        ), agreements AS (
            SELECT DISTINCT customer_id, true AS agreement FROM products
            WHERE product_code = 'private_banking_agreement' AND opened_on::DATE <= DATE '{as_of}'
              AND (closed_on IS NULL OR DATE '{as_of}' < closed_on::DATE)
        )
        SELECT customer_id,
            coalesce(assets, 0) AS assets, coalesce(assets, 0) - coalesce(owed, 0) AS net_assets,
            coalesce(foreign_assets, 0) AS foreign_assets, coalesce(normal_loans, 0) AS normal_loans,
            coalesce(spending, 0) AS spending, coalesce(installment, 0) AS installment,
            coalesce(reward_points, 0) AS reward_points, credit_score, coalesce(agreement, false) AS agreement,
            (SELECT arg_max(cny_per_unit, rate_date) FROM rates
             WHERE currency = 'USD' AND rate_date <= DATE '{as_of}') AS usd_rate
        FROM customers
        LEFT JOIN balance_figures USING (customer_id) LEFT JOIN card_spending USING (customer_id)
        LEFT JOIN installments USING (customer_id) LEFT JOIN points USING (customer_id)
        LEFT JOIN scores USING (customer_id) LEFT JOIN agreements USING (customer_id)
    """)

    def at_least(figure: str, amount: int) -> str:  # a monthly average daily figure against its threshold
        return f"{figure} >= {amount} * {days}"

    assert sorted(rough_icbc_tiers(demo_db, months_up_to(DEMO_LAST_MONTH, 6))) == [0, 1, 3, 4, 5, 6, 7]
    assert demo_tiers(demo_db, f"""
        CASE WHEN {at_least('assets', 6_000_000)} THEN 3 WHEN {at_least('assets', 1_000_000)} THEN 2
             WHEN {at_least('assets', 200_000)} OR normal_loans >= 500000 OR spending >= 100000 THEN 1 ELSE 0 END
    """) == {0, 1, 2, 3}  # boc_vip
    assert demo_tiers(demo_db, f"""
        CASE WHEN {at_least('assets', 6_000_000)} THEN 4 WHEN {at_least('assets', 2_000_000)} THEN 3
             WHEN {at_least('assets', 500_000)} THEN 2 WHEN {at_least('assets', 50_000)} THEN 1 ELSE 0 END
    """) == {0, 1, 2, 3, 4}  # bohai_wealth
    assert demo_tiers(demo_db, """
        CASE WHEN credit_score >= 550 AND installment > 50000 AND reward_points > 400000 THEN 5
             WHEN credit_score >= 550 AND installment > 10000 AND reward_points > 100000 THEN 4
             WHEN credit_score >= 550 AND reward_points >= 20000 THEN 3 ELSE 0 END
    """) == {0, 3, 4, 5}  # cgb_card_star
    usd_test = "foreign_assets >= 2000000 * usd_rate * {days}".format(days=days)
    pb_standards = {
        "private_banking_cbrc": at_least("net_assets", 6_000_000),
        "private_banking_8m": at_least("assets", 8_000_000),
        "private_banking_ubs": f"{at_least('assets', 10_000_000)} OR {usd_test}",
    }
    for program, standard in pb_standards.items():
        assert demo_tiers(demo_db, f"CASE WHEN {standard} OR agreement THEN 1 ELSE 0 END") == {0, 1}, program

    def customers_where(condition: str) -> int:
        return scalar(demo_db, f"SELECT count(*) FROM figures WHERE {condition}")

    # net and gross tell customers apart both ways; some reach private banking through the agreement
    # floor alone (below every standard, 6M of gross assets included); some pass UBS's USD test
    assert customers_where(f"{at_least('assets', 8_000_000)} AND NOT {at_least('net_assets', 6_000_000)}") > 0
    assert customers_where(f"{at_least('net_assets', 6_000_000)} AND NOT {at_least('assets', 8_000_000)}") > 0
    assert customers_where(f"agreement AND NOT {at_least('assets', 6_000_000)}") > 0
    assert customers_where(usd_test) > 0
    assert customers_where("net_assets < 0") > 0


def test_transactions_per_customer_month_is_the_average(tmp_path):
    for rate in (3.0, 15.0):
        summary = generate(tmp_path / str(rate), customers=1000, txns_per_customer_month=rate)
        average = summary["rows"]["transactions"] / (1000 * len(MONTHS))
        assert rate * 0.9 <= average <= rate * 1.1


def test_command_line_writes_a_landing_folder(tmp_path, capsys):
    main(["--out", str(tmp_path), "--customers", "50", "--first-month", "2024-11", "--months", "2",
          "--seed", "3", "--format", "parquet"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["months"] == ["2024-11", "2024-12"]
    assert (tmp_path / "balances" / "2024-12.parquet").is_file()
    assert (tmp_path / "customers.parquet").is_file()


def test_rejects_an_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="file_format"):
        generate(tmp_path, file_format="xlsx")


def test_help_documents_every_flag_with_its_default(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines; compare word by word
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        [flag] = action.option_strings
        assert action.help, f"{flag} has no help"
        assert flag in text
        if action.required:
            assert "required" in action.help
        else:
            assert f"(default: {action.default})" in text, flag
    assert "(default: 10000)" in text and "(default: csv)" in text
