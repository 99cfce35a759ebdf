"""Ingestion in-process (data-contract.md sections 1 and 2): landing files -> validated rows ->
warehouse tables, with every bad row in the quarantine and a month read again only when it changed.

Each test copies a small golden landing folder into tmp_path, edits it, and drives
``transforms.ingest.Ingestor`` on a fresh ``stores.warehouse.Warehouse``; no Prefect, no subprocess.
"""

from __future__ import annotations

import shutil
from collections import Counter
from contextlib import contextmanager
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import duckdb
import pytest

from rules import load_programs, load_vocabularies
from ground.errors import InputError
from ground.months import Month
from stores.warehouse import Warehouse
from transforms import runner
from transforms.ingest import Ingestor

GOLDEN = Path(__file__).resolve().parent / "golden"
JUNE = Month.parse("2025-06")
BALANCE_HEADER = "account_id,customer_id,product_code,currency,balance_date,balance,risk_class"


# -- helpers ----------------------------------------------------------------------------------------

def copy_landing(tmp_path: Path, scenario: str = "icbc_money") -> Path:
    landing = tmp_path / "landing"
    shutil.copytree(GOLDEN / scenario / "landing", landing)
    return landing


@contextmanager
def open_ingestor(warehouse: Warehouse, landing: Path):
    """A new connection and Ingestor (as a new run would have) with the reference files ingested."""
    con = runner.connect(warehouse)
    try:
        ingestor = Ingestor(con, landing, warehouse.quarantine, load_vocabularies(), load_programs())
        ingestor.ingest_all_reference()
        yield con, ingestor
    finally:
        con.close()


def ingest_once(warehouse: Warehouse, landing: Path, dataset: str = "balances", month: Month = JUNE):
    with open_ingestor(warehouse, landing) as (_, ingestor):
        return ingestor.ingest_month(dataset, month, "the test")


def quarantined(warehouse: Warehouse, dataset: str = "balances", month: Month = JUNE) -> list[dict]:
    path = warehouse.quarantine / dataset / f"{month}.parquet"
    if not path.exists():
        return []
    rel = duckdb.sql("SELECT * FROM read_parquet($p) ORDER BY source_file, source_row", params={"p": str(path)})
    return [dict(zip(rel.columns, row)) for row in rel.fetchall()]


def balance_month(warehouse: Warehouse, month: Month = JUNE) -> dict[tuple[str, str], Decimal]:
    """(customer, product) -> day_sum for one stored month; fails on a duplicated key."""
    con = warehouse.connect(read_only=True)
    try:
        rows = con.execute(
            "SELECT customer_id, product_code, risk_class, day_sum FROM balance_month WHERE month = $m",
            {"m": month.first_day},
        ).fetchall()
    finally:
        con.close()
    keys = Counter((c, p, r) for c, p, r, _ in rows)
    assert all(n == 1 for n in keys.values()), f"duplicated balance_month rows: {keys}"
    return {(c, p): s for c, p, _, s in rows}


def file_sums(lines: list[str]) -> dict[tuple[str, str], Decimal]:
    """What balance_month should hold for CNY balance lines of the landing CSV layout."""
    sums: dict[tuple[str, str], Decimal] = {}
    for line in lines:
        _, customer, product, _, _, balance, _ = line.split(",")
        sums[(customer, product)] = sums.get((customer, product), Decimal(0)) + Decimal(balance)
    return sums


def to_parquet(csv_path: Path, parquet_path: Path, select: str = "*") -> None:
    """A Parquet copy of a CSV file, every column as text unless ``select`` casts one."""
    duckdb.sql(
        f"COPY (SELECT {select} FROM read_csv('{csv_path}', all_varchar = true, header = true)) "
        f"TO '{parquet_path}' (FORMAT parquet)"
    )


def split_into_folder(month_file: Path, csv_rows: list[str], parquet_rows: list[str]) -> Path:
    """Replace a month's file by a folder of the same month: ``a.csv`` with ``csv_rows`` and ``b.parquet``
    with ``parquet_rows`` (data lines of the file, under its header)."""
    header = month_file.read_text().splitlines()[0]
    folder = month_file.with_suffix("")
    folder.mkdir()
    (folder / "a.csv").write_text("\n".join([header, *csv_rows]) + "\n")
    (folder / "b.csv").write_text("\n".join([header, *parquet_rows]) + "\n")
    to_parquet(folder / "b.csv", folder / "b.parquet")
    (folder / "b.csv").unlink()
    month_file.unlink()
    return folder


def set_cell(line: str, index: int, value: str) -> str:
    cells = line.split(",")
    assert cells[index] != value
    cells[index] = value
    return ",".join(cells)


# -- line and row numbers ---------------------------------------------------------------------------

def test_csv_quarantine_rows_carry_the_real_file_line(tmp_path):
    landing = copy_landing(tmp_path)
    june = landing / "balances" / "2025-06.csv"
    lines = june.read_text().splitlines()
    # Line 1 is the header; break line 2 (first data row), line 40 and the last line, three ways.
    lines[1] = lines[1].replace(",10000.00,", ",-10000.00,")
    lines[39] = lines[39].replace(",mortgage,", ",yacht,")
    lines[-1] = lines[-1].replace("2025-06-30", "2025-07-01")
    june.write_text("\n".join(lines) + "\n")
    warehouse = Warehouse(tmp_path / "warehouse")

    result = ingest_once(warehouse, landing)

    got = [(q["source_file"], q["source_row"], q["problem_column"], q["reason"]) for q in quarantined(warehouse)]
    assert got == [
        (str(june), 2, "balance", "out_of_range"),
        (str(june), 40, "product_code", "unknown_code"),
        (str(june), len(lines), "balance_date", "outside_month"),
    ]
    # The quarantine keeps the raw cells of each bad row, so the line can be checked against the file.
    by_line = {q["source_row"]: q for q in quarantined(warehouse)}
    for line_no, row in by_line.items():
        cells = lines[line_no - 1].split(",")
        assert (row["account_id"], row["product_code"], row["balance_date"], row["balance"]) == (
            cells[0], cells[2], cells[4], cells[5])
    assert [(f.rows_read, f.rows_used, f.rows_quarantined) for f in result.files] == [(90, 87, 3)]


@pytest.mark.parametrize("layout", ["blank_line", "quoted_newline"])
def test_csv_quarantine_line_counts_physical_lines(tmp_path, layout):
    landing = copy_landing(tmp_path)
    june = landing / "balances" / "2025-06.csv"
    body = [
        "a1,borrower,mortgage,CNY,2025-06-01,5.00,",
        '"a\n2",borrower,mortgage,CNY,2025-06-02,5.00,' if layout == "quoted_newline" else "",
        "a3,borrower,mortgage,CNY,2025-06-03,-5.00,",
    ]
    june.write_text(BALANCE_HEADER + "\n" + "\n".join(body) + "\n")
    physical = (BALANCE_HEADER + "\n" + "\n".join(body)).split("\n")
    bad_line = next(i for i, text in enumerate(physical, start=1) if "-5.00" in text)
    assert bad_line == (5 if layout == "quoted_newline" else 4)
    warehouse = Warehouse(tmp_path / "warehouse")

    ingest_once(warehouse, landing)

    [row] = quarantined(warehouse)
    assert (row["account_id"], row["reason"]) == ("a3", "out_of_range")
    assert row["source_row"] == bad_line


def test_parquet_quarantine_rows_carry_the_row_number_from_1(tmp_path):
    landing = copy_landing(tmp_path)
    june = landing / "balances" / "2025-06.csv"
    lines = june.read_text().splitlines()
    data = lines[1:]
    for index in (0, 17, len(data) - 1):  # first, middle and last row of the file
        data[index] = data[index].replace(",CNY,", ",cny,").replace(",USD,", ",usd,")
    june.write_text("\n".join([lines[0], *data]) + "\n")
    parquet = june.with_suffix(".parquet")
    to_parquet(june, parquet)
    june.unlink()
    warehouse = Warehouse(tmp_path / "warehouse")

    result = ingest_once(warehouse, landing)

    rows = quarantined(warehouse)
    assert [(q["source_file"], q["source_row"], q["problem_column"], q["reason"]) for q in rows] == [
        (str(parquet), 1, "currency", "bad_currency"),
        (str(parquet), 18, "currency", "bad_currency"),
        (str(parquet), len(data), "currency", "bad_currency"),
    ]
    assert [(r["account_id"], r["balance_date"]) for r in rows] == [
        tuple(data[i].split(",")[j] for j in (0, 4)) for i in (0, 17, len(data) - 1)
    ]
    assert [(f.path, f.rows_read, f.rows_used, f.rows_quarantined) for f in result.files] == [
        (str(parquet), len(data), len(data) - 3, 3)
    ]


# -- counts and months made of several files ---------------------------------------------------------

def test_rows_read_are_used_plus_quarantined_per_file(tmp_path):
    landing = copy_landing(tmp_path)
    june = landing / "balances" / "2025-06.csv"
    data = june.read_text().splitlines()[1:]
    first, second = data[:25], data[25:]
    first[3] = set_cell(first[3], 2, "")  # missing product_code
    second[0] = set_cell(second[0], 1, "stranger")
    second[1] = set_cell(second[1], 1, "stranger")
    second.append(second[2])  # the same account and day twice: both copies are bad
    split_into_folder(june, first, second)
    warehouse = Warehouse(tmp_path / "warehouse")

    result = ingest_once(warehouse, landing)

    counts = {Path(f.path).name: (f.rows_read, f.rows_used, f.rows_quarantined) for f in result.files}
    assert counts == {"a.csv": (25, 24, 1), "b.parquet": (66, 62, 4)}
    for f in result.files:
        assert f.rows_read == f.rows_used + f.rows_quarantined
    reasons = Counter((Path(q["source_file"]).name, q["problem_column"], q["reason"]) for q in quarantined(warehouse))
    assert reasons == {
        ("a.csv", "product_code", "missing_value"): 1,
        ("b.parquet", "customer_id", "unknown_customer"): 2,
        ("b.parquet", "balance_date", "duplicate_key"): 2,
    }


def test_a_folder_of_files_is_read_as_its_month(tmp_path):
    landing = copy_landing(tmp_path)
    march_file = landing / "balances" / "2025-03.csv"
    data = march_file.read_text().splitlines()[1:]
    folder = split_into_folder(march_file, data[:50], data[50:])
    (folder / "notes.txt").write_text("not a data file")
    warehouse = Warehouse(tmp_path / "warehouse")
    reference = Warehouse(tmp_path / "reference")  # the same rows as one file, for comparison
    reference_landing = copy_landing(tmp_path / "ref")

    result = ingest_once(warehouse, landing, month=Month.parse("2025-03"))
    ingest_once(reference, reference_landing, month=Month.parse("2025-03"))

    assert result.month == "2025-03" and result.read_now
    assert [(Path(f.path).name, f.rows_read, f.rows_quarantined) for f in result.files] == [
        ("a.csv", 50, 0), ("b.parquet", len(data) - 50, 0)
    ]
    assert quarantined(warehouse, month=Month.parse("2025-03")) == []
    stored = balance_month(warehouse, Month.parse("2025-03"))
    assert stored and stored == balance_month(reference, Month.parse("2025-03"))


# -- reading a month once, and again when it changes ------------------------------------------------

def _ingested_at(warehouse: Warehouse, dataset: str, month: Month):
    con = warehouse.connect(read_only=True)
    try:
        return con.execute(
            "SELECT ingested_at FROM ingested WHERE dataset = $d AND month = $m", {"d": dataset, "m": month.first_day}
        ).fetchone()[0]
    finally:
        con.close()


def test_unchanged_month_is_not_read_again_and_a_changed_one_replaces_its_rows(tmp_path):
    landing = copy_landing(tmp_path)
    june = landing / "balances" / "2025-06.csv"
    warehouse = Warehouse(tmp_path / "warehouse")

    first = ingest_once(warehouse, landing)
    stamp = _ingested_at(warehouse, "balances", JUNE)
    before = balance_month(warehouse)
    second = ingest_once(warehouse, landing)  # a new run, nothing changed

    assert first.read_now and not second.read_now
    assert second.files == first.files
    assert _ingested_at(warehouse, "balances", JUNE) == stamp
    assert balance_month(warehouse) == before
    assert before[("borrower", "mortgage")] == Decimal("15000000.00")

    # The bank resends June: the mortgage is 400,000.00 a day now, and the consumer loan is gone.
    header, *data = june.read_text().splitlines()
    data = [line.replace(",500000.00,", ",400000.00,") for line in data if ",consumer_loan," not in line]
    june.write_text("\n".join([header, *data]) + "\n")
    third = ingest_once(warehouse, landing)

    assert third.read_now
    assert [(f.rows_read, f.rows_used) for f in third.files] == [(60, 60)]
    after = balance_month(warehouse)
    assert after[("borrower", "mortgage")] == Decimal("12000000.00")
    assert ("borrower", "consumer_loan") not in after
    assert after[("dollars", "demand_deposit")] == before[("dollars", "demand_deposit")]
    assert not ingest_once(warehouse, landing).read_now


# -- files that cannot be read ----------------------------------------------------------------------

@pytest.mark.parametrize("money_type", ["DOUBLE", "FLOAT"])
def test_parquet_float_money_column_is_rejected(tmp_path, money_type):
    landing = copy_landing(tmp_path)
    june = landing / "balances" / "2025-06.csv"
    parquet = june.with_suffix(".parquet")
    to_parquet(june, parquet, select=f"* REPLACE (CAST(balance AS {money_type}) AS balance)")
    june.unlink()
    warehouse = Warehouse(tmp_path / "warehouse")

    with pytest.raises(InputError) as raised:
        ingest_once(warehouse, landing)

    message = str(raised.value)
    assert str(parquet) in message and "balance" in message and money_type in message
    assert balance_month(warehouse) == {}


def test_parquet_decimal_money_column_is_read(tmp_path):
    landing = copy_landing(tmp_path)
    june = landing / "balances" / "2025-06.csv"
    expected = file_sums([line for line in june.read_text().splitlines()[1:] if ",CNY," in line])
    parquet = june.with_suffix(".parquet")
    to_parquet(june, parquet, select="* REPLACE (CAST(balance AS DECIMAL(18, 2)) AS balance)")
    june.unlink()
    warehouse = Warehouse(tmp_path / "warehouse")

    result = ingest_once(warehouse, landing)

    assert [(f.rows_read, f.rows_quarantined) for f in result.files] == [(90, 0)]
    stored = balance_month(warehouse)
    assert {k: v for k, v in stored.items() if k in expected} == expected


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_empty_file_is_an_error_naming_the_file(tmp_path, suffix):
    landing = copy_landing(tmp_path)
    (landing / "balances" / "2025-06.csv").unlink()
    empty = landing / "balances" / f"2025-06{suffix}"
    empty.write_bytes(b"")
    warehouse = Warehouse(tmp_path / "warehouse")

    with pytest.raises(InputError, match="empty|too small|not a readable") as raised:
        ingest_once(warehouse, landing)
    assert str(empty) in str(raised.value)


@pytest.mark.parametrize("trailing_newline", [True, False])
def test_header_only_file_is_an_empty_month(tmp_path, trailing_newline):
    landing = copy_landing(tmp_path)
    june = landing / "balances" / "2025-06.csv"
    june.write_text(BALANCE_HEADER + ("\n" if trailing_newline else ""))
    warehouse = Warehouse(tmp_path / "warehouse")

    result = ingest_once(warehouse, landing)

    assert result.read_now
    assert [(f.path, f.rows_read, f.rows_used, f.rows_quarantined) for f in result.files] == [(str(june), 0, 0, 0)]
    assert balance_month(warehouse) == {}
    assert quarantined(warehouse) == []


UNREADABLE = {
    "broken_quote": BALANCE_HEADER + '\na1,borrower,"mortgage,CNY,2025-06-01,5.00,\na2,borrower,mortgage,CNY,2025-06-02,5.00,\n',
    "semicolons": BALANCE_HEADER.replace(",", ";") + "\na1;borrower;mortgage;CNY;2025-06-01;5.00;\n",
    "tabs": BALANCE_HEADER.replace(",", "\t") + "\na1\tborrower\tmortgage\tCNY\t2025-06-01\t5.00\t\n",
    "ragged_row": BALANCE_HEADER + "\na1,borrower,mortgage,CNY,2025-06-01,5.00,,surplus\n",
}


@pytest.mark.parametrize("layout", sorted(UNREADABLE))
def test_malformed_csv_is_an_input_error_naming_the_file(tmp_path, layout):
    landing = copy_landing(tmp_path)
    june = landing / "balances" / "2025-06.csv"
    june.write_text(UNREADABLE[layout])
    warehouse = Warehouse(tmp_path / "warehouse")

    with pytest.raises(InputError) as raised:
        ingest_once(warehouse, landing)

    assert str(june) in str(raised.value)
    assert "\n" not in str(raised.value).strip()
    assert balance_month(warehouse) == {}


def test_csv_that_is_not_utf8_is_an_input_error_naming_the_file(tmp_path):
    landing = copy_landing(tmp_path)
    june = landing / "balances" / "2025-06.csv"
    june.write_bytes((BALANCE_HEADER + "\na1,borrower,mortgage,CNY,2025-06-01,5.00,caf\xe9\n").encode("latin-1"))
    warehouse = Warehouse(tmp_path / "warehouse")

    with pytest.raises(InputError) as raised:
        ingest_once(warehouse, landing)
    assert str(june) in str(raised.value)


def test_csv_with_utf8_byte_order_mark_is_read(tmp_path):
    landing = copy_landing(tmp_path)
    june = landing / "balances" / "2025-06.csv"
    june.write_bytes(b"\xef\xbb\xbf" + june.read_bytes())

    result = ingest_once(Warehouse(tmp_path / "warehouse"), landing)
    assert [(f.rows_read, f.rows_quarantined) for f in result.files] == [(90, 0)]


def test_missing_column_names_the_file_and_the_column(tmp_path):
    landing = copy_landing(tmp_path)
    june = landing / "balances" / "2025-06.csv"
    duckdb.sql(
        f"COPY (SELECT * EXCLUDE (balance_date) FROM read_csv('{june}', all_varchar = true)) "
        f"TO '{june}.tmp' (FORMAT csv, HEADER true)"
    )
    Path(f"{june}.tmp").replace(june)

    with pytest.raises(InputError) as raised:
        ingest_once(Warehouse(tmp_path / "warehouse"), landing)

    assert str(june) in str(raised.value)
    assert "missing column balance_date" in str(raised.value)


# -- customers that come and go ---------------------------------------------------------------------

def test_dropped_customer_requarantines_an_ingested_month(tmp_path):
    landing = copy_landing(tmp_path)
    june = landing / "balances" / "2025-06.csv"
    customers = landing / "customers.csv"
    warehouse = Warehouse(tmp_path / "warehouse")
    with open_ingestor(warehouse, landing) as (_, ingestor):
        ingestor.ingest_month("balances", JUNE, "the test")
        ingestor.ingest_month("transactions", JUNE, "the test")
    assert ("borrower", "mortgage") in balance_month(warehouse)

    customers.write_text(customers.read_text().replace("borrower,retail\n", ""))
    with open_ingestor(warehouse, landing) as (_, ingestor):
        balances = ingestor.ingest_month("balances", JUNE, "the test")
        transactions = ingestor.ingest_month("transactions", JUNE, "the test")

    assert balances.read_now
    assert [(f.rows_read, f.rows_used, f.rows_quarantined) for f in balances.files] == [(90, 30, 60)]
    rows = quarantined(warehouse)
    assert {(q["customer_id"], q["problem_column"], q["reason"]) for q in rows} == {
        ("borrower", "customer_id", "unknown_customer")
    }
    lines = june.read_text().splitlines()
    assert sorted(q["source_row"] for q in rows) == [
        i for i, line in enumerate(lines, start=1) if i > 1 and line.split(",")[1] == "borrower"
    ]
    assert {c for c, _ in balance_month(warehouse)} == {"dollars"}
    # June's transactions are the spender's only: nothing in them changed, so they are not read again.
    assert not transactions.read_now
    assert not ingest_once(warehouse, landing).read_now


def test_customer_added_later_releases_their_quarantined_rows(tmp_path):
    landing = copy_landing(tmp_path)
    customers = landing / "customers.csv"
    complete = customers.read_text()
    customers.write_text(complete.replace("borrower,retail\n", ""))
    warehouse = Warehouse(tmp_path / "warehouse")
    first = ingest_once(warehouse, landing)
    assert [f.rows_quarantined for f in first.files] == [60]

    customers.write_text(complete)  # the bank sends the missing customer
    second = ingest_once(warehouse, landing)

    assert [f.rows_quarantined for f in second.files] == [0]
    assert quarantined(warehouse) == []
    assert balance_month(warehouse)[("borrower", "mortgage")] == Decimal("15000000.00")


# -- currencies -------------------------------------------------------------------------------------

def _usd_rates(fx_file: Path) -> list[tuple[date, Decimal]]:
    return sorted(
        (date.fromisoformat(d), Decimal(r)) for d, c, r in (line.split(",") for line in fx_file.read_text().splitlines()[1:])
        if c == "USD"
    )


def test_foreign_balance_without_a_rate_on_or_before_its_day_is_quarantined(tmp_path):
    landing = copy_landing(tmp_path)
    fx_file = landing / "fx_rates.csv"
    header, *rates = fx_file.read_text().splitlines()
    kept = [line for line in rates if line.split(",")[0] >= "2025-06-10"]
    fx_file.write_text("\n".join([header, *kept]) + "\n")
    june = landing / "balances" / "2025-06.csv"
    june.write_text(june.read_text() + "euro-acct,dollars,time_deposit,EUR,2025-06-20,100.00,\n")
    warehouse = Warehouse(tmp_path / "warehouse")

    result = ingest_once(warehouse, landing)

    rows = quarantined(warehouse)
    assert {(q["problem_column"], q["reason"]) for q in rows} == {("currency", "no_fx_rate")}
    assert sorted((q["currency"], q["balance_date"]) for q in rows) == sorted(
        [("USD", f"2025-06-{day:02d}") for day in range(1, 10)] + [("EUR", "2025-06-20")]
    )
    assert [(f.rows_read, f.rows_used, f.rows_quarantined) for f in result.files] == [(91, 81, 10)]
    # The other USD days use the latest rate on or before them (weekends: Friday's), rounded half-up.
    usd = _usd_rates(fx_file)
    expected = Decimal(0)
    for day in (date(2025, 6, 10) + timedelta(n) for n in range(21)):
        rate = max((d, r) for d, r in usd if d <= day)[1]
        expected += (Decimal("10000.00") * rate).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    assert balance_month(warehouse)[("dollars", "demand_deposit")] == expected

    # The missing rates arrive: June is read again and nothing is quarantined for USD any more.
    fx_file.write_text("\n".join([header, *rates]) + "\n")
    again = ingest_once(warehouse, landing)
    assert again.read_now
    assert [(q["currency"], q["reason"]) for q in quarantined(warehouse)] == [("EUR", "no_fx_rate")]


def test_dropped_customer_with_uncounted_transactions_requarantines_the_month(tmp_path):
    landing = copy_landing(tmp_path)
    may = Month.parse("2025-05")
    customers = landing / "customers.csv"
    first = ingest_once(Warehouse(tmp_path / "warehouse"), landing, "transactions", may)
    assert [(f.rows_read, f.rows_used, f.rows_quarantined) for f in first.files] == [(2, 2, 0)]

    customers.write_text(customers.read_text().replace("remitter,retail\n", ""))
    again = ingest_once(Warehouse(tmp_path / "warehouse"), landing, "transactions", may)
    fresh = ingest_once(Warehouse(tmp_path / "fresh"), landing, "transactions", may)

    assert [(f.rows_read, f.rows_used, f.rows_quarantined) for f in fresh.files] == [(2, 1, 1)]
    assert again.files == fresh.files
