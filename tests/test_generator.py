"""The synthetic landing folder keeps the data contract (data-contract.md section 1) and tells stories
that spread customers over every ICBC star tier."""

import calendar
import hashlib
import json
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from data.generator import build_parser, generate_landing, main

# The contract's vocabularies, copied here on purpose: the generator must not drift from the contract.
BALANCE_PRODUCT_CODES = {
    "demand_deposit", "brokerage_custody", "overnight_wmp", "money_market_fund", "credit_card_deposit",
    "time_deposit", "housing_fund", "wmp", "fund", "government_bond", "insurance", "gold", "mortgage",
    "consumer_loan", "business_loan", "credit_card_overdraft",
}
TXN_TYPES = {
    "fund_trade", "wmp_purchase", "bond_purchase", "insurance_purchase", "gold_trade", "fx_trade",
    "card_pos", "remote_cash", "remittance", "transfer", "salary_credit", "atm_local", "fee",
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

MONTHS = ["2025-01", "2025-02", "2025-03", "2025-04", "2025-05", "2025-06", "2025-07"]
FILE_KINDS = ["customers", "products", "credit_events", "fx_rates"]
MONEY_TEXT = r"^[0-9]+(\.[0-9]{1,2})?$"


def month_start(month: str) -> date:
    return date.fromisoformat(f"{month}-01")


def generate(out_dir: Path, customers: int = 300, **options) -> dict:
    return generate_landing(out_dir, customers=customers, first_month=MONTHS[0], months=len(MONTHS), **options)


def open_landing(landing: Path, file_format: str) -> duckdb.DuckDBPyConnection:
    """Views over the landing files with every column as text, as a loader sees a CSV cell."""
    con = duckdb.connect()
    for kind in ["balances", "transactions", *FILE_KINDS]:
        monthly = kind in ("balances", "transactions")
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
        assert (out / "balances" / f"{month}.{file_format}").is_file()
        assert (out / "transactions" / f"{month}.{file_format}").is_file()
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

    balances, txns, rates = (column_types(pattern) for pattern in
                             ("balances/*.parquet", "transactions/*.parquet", "fx_rates.parquet"))
    assert (balances["balance"], balances["balance_date"]) == ("DECIMAL(18,2)", "DATE")
    assert (txns["amount"], txns["txn_date"], txns["fee_factor"]) == ("DECIMAL(18,2)", "DATE", "DECIMAL(3,2)")
    assert rates["cny_per_unit"] == "DECIMAL(18,6)"


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_same_arguments_give_identical_bytes_and_another_seed_differs(tmp_path, file_format):
    for name, seed in [("first", 7), ("again", 7), ("other", 8)]:
        generate(tmp_path / name, customers=200, seed=seed, file_format=file_format)
    first = digests(tmp_path / "first")
    assert first == digests(tmp_path / "again")
    other = digests(tmp_path / "other")
    assert first.keys() == other.keys()
    for kind in ["balances/2025-01", "transactions/2025-01", "products", "fx_rates"]:
        assert first[f"{kind}.{file_format}"] != other[f"{kind}.{file_format}"], kind


def test_dates_lie_inside_the_month_of_their_file(db):
    for kind, column in [("balances", "balance_date"), ("transactions", "txn_date")]:
        assert scalar(db, f"SELECT count(*) FROM {kind} WHERE strftime({column}::DATE, '%Y-%m') <> file_month") == 0
        assert sorted(m for (m,) in db.execute(f"SELECT DISTINCT file_month FROM {kind}").fetchall()) == MONTHS


def test_keys_are_unique(db):
    for kind, key in [("customers", "customer_id"), ("balances", "account_id, balance_date"),
                      ("transactions", "txn_id")]:
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
    for kind in ["balances", "transactions", "products", "credit_events"]:
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


def test_star_points_spread_over_every_tier(big_db):
    """Rough ICBC points over the last six months (CNY balances and card spending only), compared the
    exact way: sum * rate >= threshold * 10,000 * days."""
    window = MONTHS[-6:]
    days = sum(calendar.monthrange(*month_start(m).timetuple()[:2])[1] for m in window)
    # each tier's threshold scaled like the sums below (points * 10,000 * days), the highest first
    thresholds = [(7, 80000), (6, 10000), (5, 2000), (4, 500), (3, 50)]
    tier_of = " ".join(f"WHEN scaled >= {points * 10000 * days} THEN {tier}" for tier, points in thresholds)
    months = ", ".join(f"'{m}'" for m in window)
    short_term = ", ".join(f"'{c}'" for c in SHORT_TERM_CODES)
    tiers = dict(big_db.execute(f"""
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
    assert sorted(tiers) == [0, 1, 3, 4, 5, 6, 7]
    assert tiers[7] <= 0.02 * 2000  # seven-star stays rare
    # seven-star on short-term balances alone (135 points per 10,000 CNY: an ADB of about 59.3M CNY)
    assert scalar(big_db, f"""
        SELECT count(*) FROM (
            SELECT customer_id FROM balances
            WHERE product_code IN ({short_term}) AND currency = 'CNY' AND file_month IN ({months})
            GROUP BY customer_id HAVING sum(balance::DECIMAL(18, 2)) * 135 >= {80000 * 10000 * days})
    """) > 0


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
