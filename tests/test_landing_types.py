"""Types are never guessed (data-contract.md section 1 "Physical types", section 2 ids): a Parquet column
of a type that may mean something else rejects its file, and an id with surrounding whitespace is a bad row."""

from __future__ import annotations

import duckdb
import pyarrow.parquet as pq
import pytest

from tests.test_ingest import balance_month, copy_landing, ingest_once, open_ingestor, quarantined
from ground.errors import InputError
from stores.warehouse import Warehouse


def csv_to_parquet(csv_path, select: str = "*"):
    target = csv_path.with_suffix(".parquet")
    duckdb.sql(f"COPY (SELECT {select} FROM read_csv('{csv_path}', all_varchar = true, header = true)) "
               f"TO '{target}' (FORMAT parquet)")
    csv_path.unlink()
    return target


@pytest.mark.parametrize(("rel", "column", "cast", "shown", "accepted"), [
    # Integer cents read as yuan changed 68-74% of tiers: an integer money column is refused.
    ("balances/2025-06.csv", "balance", "CAST(CAST(balance AS DECIMAL(18, 2)) * 100 AS BIGINT)", "BIGINT",
     "text or DECIMAL with at most 2 decimals"),
    ("balances/2025-06.csv", "balance", "CAST(balance AS DOUBLE)", "DOUBLE", "text or DECIMAL with at most 2 decimals"),
    ("balances/2025-06.csv", "balance", "CAST(balance AS DECIMAL(19, 3))", "DECIMAL(19,3)",
     "text or DECIMAL with at most 2 decimals"),
    ("balances/2025-06.csv", "balance_date", "CAST(balance_date AS TIMESTAMP)", "TIMESTAMP", "text or DATE"),
    ("balances/2025-06.csv", "account_id", "hash(account_id)", "UBIGINT", "text"),
    ("transactions/2025-06.csv", "amount", "CAST(CAST(amount AS DECIMAL(18, 2)) AS INTEGER)", "INTEGER",
     "text or DECIMAL with at most 2 decimals"),
    ("transactions/2025-06.csv", "merchant_category", "TRY_CAST(merchant_category AS INTEGER)", "INTEGER", "text"),
    ("transactions/2025-06.csv", "txn_date", "CAST(txn_date AS TIMESTAMP)", "TIMESTAMP", "text or DATE"),
])
def test_a_column_of_a_type_that_may_mean_something_else_rejects_the_file(tmp_path, rel, column, cast, shown, accepted):
    landing = copy_landing(tmp_path)
    parquet = csv_to_parquet(landing / rel, f"* REPLACE ({cast} AS {column})")
    warehouse = Warehouse(tmp_path / "warehouse")

    with pytest.raises(InputError) as raised:
        ingest_once(warehouse, landing, rel.split("/")[0])

    message = str(raised.value)
    assert message == f"{parquet}: column {column} is {shown}; expected {accepted} (a type is never guessed)"


def test_reference_files_hold_their_types_too(tmp_path):
    landing = copy_landing(tmp_path)
    rates = csv_to_parquet(landing / "fx_rates.csv", "* REPLACE (CAST(cny_per_unit AS DECIMAL(18, 9)) AS cny_per_unit)")
    with pytest.raises(InputError, match=r"column cny_per_unit is DECIMAL\(18,9\); expected text or DECIMAL with at most 8"):
        ingest_once(Warehouse(tmp_path / "warehouse"), landing)
    duckdb.sql(f"COPY (SELECT * REPLACE (CAST(cny_per_unit AS DECIMAL(18, 8)) AS cny_per_unit) FROM read_parquet('{rates}')) "
               f"TO '{rates}.tmp' (FORMAT parquet)")
    rates.unlink()
    (rates.with_name(rates.name + ".tmp")).rename(rates)
    assert ingest_once(Warehouse(tmp_path / "warehouse2"), landing).read_now


def test_accepted_types_are_read(tmp_path):
    landing = copy_landing(tmp_path)
    parquet = csv_to_parquet(landing / "balances/2025-06.csv",
                             "* REPLACE (CAST(balance AS DECIMAL(38, 1)) AS balance, CAST(balance_date AS DATE) AS balance_date)")
    assert dict(zip(pq.read_schema(parquet).names, map(str, pq.read_schema(parquet).types)))["balance"] == "decimal128(38, 1)"
    result = ingest_once(Warehouse(tmp_path / "warehouse"), landing)
    assert [(f.rows_read, f.rows_quarantined) for f in result.files] == [(90, 0)]


def test_ids_are_exact_and_an_id_with_surrounding_whitespace_is_a_bad_row(tmp_path):
    """T1, t1 and 'T1 ' were counted as three transactions: now T1 and t1 are two, 'T1 ' is quarantined."""
    landing = copy_landing(tmp_path)
    path = landing / "transactions" / "2025-06.csv"
    text = path.read_text()
    newline = "\r\n" if "\r\n" in text else "\n"
    header = text.splitlines()[0].split(",")
    base = dict(account_id="spender-card", customer_id="spender", txn_date="2025-06-12", txn_type="card_pos",
                amount="100.00", currency="CNY", merchant_category="5411", fee_factor="")
    rows = [{**base, "txn_id": i} for i in ("T1", "t1", "T1 ", "\u3000T2")] + [{**base, "txn_id": "T3", "customer_id": "spender\t"}]
    path.write_text(text + "".join(",".join(r[c] for c in header) + newline for r in rows))
    warehouse = Warehouse(tmp_path / "warehouse")

    result = ingest_once(warehouse, landing, "transactions")

    bad = [(r["txn_id"], r["problem_column"], r["reason"]) for r in quarantined(warehouse, "transactions")]
    assert sorted(bad) == sorted([("T1 ", "txn_id", "padded_value"), ("\u3000T2", "txn_id", "padded_value"),
                                  ("T3", "customer_id", "padded_value")])
    assert result.rows_quarantined == 3


def test_a_padded_customer_id_in_the_customers_file_is_a_bad_row(tmp_path):
    landing = copy_landing(tmp_path)
    customers = landing / "customers.csv"
    customers.write_text(customers.read_text() + " padded,retail\n")
    warehouse = Warehouse(tmp_path / "warehouse")
    with open_ingestor(warehouse, landing) as (con, _):
        assert con.execute("SELECT count(*) FROM customers WHERE customer_id LIKE '%padded%'").fetchone() == (0,)
    rows = duckdb.sql(f"SELECT customer_id, reason FROM read_parquet('{warehouse.quarantine}/customers/reference.parquet')").fetchall()
    assert rows == [(" padded", "padded_value")]


def test_a_padded_account_id_is_quarantined_and_not_summed(tmp_path):
    """account_id is checked per account (balance_accounts), not per row: its rows must still be left out."""
    landing = copy_landing(tmp_path)
    june = landing / "balances" / "2025-06.csv"
    warehouse = Warehouse(tmp_path / "clean")
    ingest_once(warehouse, landing)
    clean = balance_month(warehouse)
    june.write_bytes(june.read_bytes() + b"padded-acct ,borrower,demand_deposit,CNY,2025-06-30,900000.00,\r\n")
    warehouse = Warehouse(tmp_path / "warehouse")

    result = ingest_once(warehouse, landing)

    assert (result.files[0].rows_read, result.rows_quarantined) == (91, 1)
    assert [(r["account_id"], r["reason"]) for r in quarantined(warehouse)] == [("padded-acct ", "padded_value")]
    assert balance_month(warehouse) == clean
