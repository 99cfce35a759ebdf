"""The data sources as declared (rules/sources.py): the declaration agrees with the SQL and the
docs, and the two newest sources, card_points and credit_scores, go through the same ingestion as
balances (validation, quarantine, control totals, fingerprints) into their warehouse tables."""

from __future__ import annotations

import re
import shutil
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ground.errors import InputError
from ground.months import Month
from rules.loader import load_programs, load_vocabularies
from stores.warehouse import Warehouse
from rules import sources
from transforms import evaluate, landing, runner
from transforms.ingest import Ingestor

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
JUNE = Month.parse("2025-06")
POINTS_HEADER = "entry_id,customer_id,posted_on,points\n"
SCORES_HEADER = "customer_id,scored_on,score\n"


# -- the declaration -----------------------------------------------------------------------------------

@pytest.mark.parametrize("source", sources.SOURCES, ids=lambda s: s.name)
def test_declared_reasons_are_exactly_those_its_validation_gives(source):
    sql = "\n".join(line for step in runner.plan([source.validated]) for line in step.sql.splitlines()
                    if not line.lstrip().startswith("--"))
    # validated_intervals serves several sources: a reason's column is one of the bound column names.
    for param, column in (source.interval_params if source.interval_codes else {}).items():
        sql = re.sub(rf"\${param} \|\| '(:[a-z_]+)'", rf"'{column}\1'", sql)
    given = set(re.findall(r"'([a-z_]+:[a-z_]+)'", sql))
    assert given == set(source.reasons)


@pytest.mark.parametrize("source", sources.SOURCES, ids=lambda s: s.name)
def test_the_warehouse_table_holds_what_the_declaration_says(source):
    con = duckdb.connect()
    runner.run(con, "warehouse_schema")
    columns = [row[0] for row in con.execute(f"DESCRIBE {source.table}").fetchall()]
    if source.monthly:
        assert "month" in columns and "customer_id" in columns
        assert source.table in runner.steps()  # the statement that sums a month into it
        assert source.customers_summary in runner.producers() and source.duplicates_summary in runner.producers()
    else:
        assert len(columns) == len(source.keep)
    assert source.table in evaluate.INPUT_TABLES
    assert ("customer_id" in columns) == source.per_customer
    assert ("program" in columns) == source.per_program


def test_docs_table_of_sources_is_the_declaration():
    doc = (ROOT / "docs" / "sources.md").read_text(encoding="utf-8")
    start, end = "<!-- sources:begin -->\n", "<!-- sources:end -->"
    assert doc[doc.index(start) + len(start):doc.index(end)] == sources.markdown_table()


def test_the_vocabulary_has_card_installments():
    assert "card_installment" in load_vocabularies().txn_types


# -- card_points and credit_scores through ingestion ---------------------------------------------------

def landing_with(tmp_path: Path, points: str | None = None, scores: str | None = None) -> Path:
    folder = tmp_path / "landing"
    shutil.copytree(GOLDEN / "icbc_money" / "landing", folder)
    if points is not None:
        (folder / "card_points").mkdir()
        (folder / "card_points" / "2025-06.csv").write_text(points)
    if scores is not None:
        (folder / "credit_scores.csv").write_text(scores)
    return folder


def ingest(tmp_path: Path, folder: Path, month: bool = True):
    warehouse = Warehouse(tmp_path / "warehouse")
    with runner.connect(warehouse) as con:
        ingestor = Ingestor(con, folder, warehouse.quarantine, load_vocabularies(), load_programs())
        results = ingestor.ingest_all_reference()
        if month:
            results.append(ingestor.ingest_month("card_points", JUNE, "the test"))
    return warehouse, results


def read(warehouse: Warehouse, sql: str) -> list[tuple]:
    con = warehouse.connect(read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def quarantined(warehouse: Warehouse, dataset: str, month: str) -> dict[int, tuple[str, str]]:
    path = warehouse.quarantine / dataset / f"{month}.parquet"
    rows = pq.read_table(path).to_pylist() if path.exists() else []
    return {row["source_row"]: (row["problem_column"], row["reason"]) for row in rows}


def test_card_points_bad_rows_each_with_their_reason(tmp_path):
    lines = [
        "e1,spender,2025-06-03,120",  # good
        "e2,spender,2025-06-04,0",
        "e3,spender,2025-06-05,-3",
        "e4,spender,2025-06-06,12.5",
        "e5,spender,2025-05-31,10",
        "e6,stranger,2025-06-06,10",
        "e7,spender,2025-06-06,",
        ",spender,2025-06-06,10",
        "e8,spender,2025-06-31,10",
        "dup,borrower,2025-06-07,10",
        "dup,borrower,2025-06-08,20",
        "e9 ,spender,2025-06-06,10",
        "e10,dollars,2025-06-30,7",  # good
        "e11, spender,2025-06-06,10",
    ]
    warehouse, results = ingest(tmp_path, landing_with(tmp_path, POINTS_HEADER + "\n".join(lines) + "\n"))
    assert quarantined(warehouse, "card_points", "2025-06") == {
        3: ("points", "out_of_range"),
        4: ("points", "out_of_range"),
        5: ("points", "unparseable"),
        6: ("posted_on", "outside_month"),
        7: ("customer_id", "unknown_customer"),
        8: ("points", "missing_value"),
        9: ("entry_id", "missing_value"),
        10: ("posted_on", "unparseable"),
        11: ("entry_id", "duplicate_key"),
        12: ("entry_id", "duplicate_key"),
        13: ("entry_id", "padded_value"),
        15: ("customer_id", "padded_value"),
    }
    [counts] = results[-1].files
    assert (counts.rows_read, counts.rows_used, counts.rows_quarantined) == (14, 2, 12)
    assert read(warehouse, "SELECT month, customer_id, points FROM card_points_month ORDER BY customer_id") == [
        (JUNE.first_day, "dollars", 7), (JUNE.first_day, "spender", 120)]


def test_card_points_are_summed_per_customer_and_month(tmp_path):
    lines = ["a,spender,2025-06-01,100", "b,spender,2025-06-30,250", "c,borrower,2025-06-15,5",
             # A shared entry_id is bad for both rows: the customer's other rows still count.
             "d,borrower,2025-06-16,1", "d,borrower,2025-06-17,2", "e,borrower,2025-06-18,40"]
    folder = landing_with(tmp_path, POINTS_HEADER + "\n".join(lines) + "\n")
    warehouse, _ = ingest(tmp_path, folder)
    assert read(warehouse, "SELECT customer_id, points FROM card_points_month ORDER BY customer_id") == [
        ("borrower", 45), ("spender", 350)]
    # Re-ingesting a changed month replaces its sums, never adds to them.
    (folder / "card_points" / "2025-06.csv").write_text(POINTS_HEADER + "a,spender,2025-06-01,1\n")
    warehouse, results = ingest(tmp_path, folder)
    assert results[-1].read_now
    assert read(warehouse, "SELECT customer_id, points FROM card_points_month") == [("spender", 1)]


def test_card_points_in_parquet_may_be_an_integer_column_and_not_a_decimal_one(tmp_path):
    folder = landing_with(tmp_path)
    (folder / "card_points").mkdir()
    table = pa.table({"entry_id": ["a", "b"], "customer_id": ["spender", "spender"],
                      "posted_on": pa.array([JUNE.first_day, JUNE.last_day]), "points": pa.array([3, 4], pa.int32())})
    pq.write_table(table, folder / "card_points" / "2025-06.parquet")
    warehouse, _ = ingest(tmp_path, folder)
    assert read(warehouse, "SELECT customer_id, points FROM card_points_month") == [("spender", 7)]
    pq.write_table(table.set_column(3, "points", pa.array([Decimal("3.00"), Decimal("4.00")], pa.decimal128(9, 2))),
                   folder / "card_points" / "2025-06.parquet")
    with pytest.raises(InputError, match="column points is DECIMAL\\(9,2\\); expected text or an integer type"):
        ingest(tmp_path, folder)


def test_card_points_control_total_sums_the_points(tmp_path):
    folder = landing_with(tmp_path, POINTS_HEADER + "a,spender,2025-06-01,100\nb,spender,2025-06-02,-5\n")
    control = folder / "card_points" / "2025-06.csv.ctl"
    control.write_text("rows,total\n2,95\n")  # as written: the bad row counts too
    ingest(tmp_path, folder)
    control.write_text("rows,total\n2,100\n")
    with pytest.raises(InputError, match="the control file says 2 rows, total 100, the data has 2 rows, total 95"):
        ingest(tmp_path, folder)


def test_credit_scores_bad_rows_each_with_their_reason(tmp_path):
    lines = [
        "spender,2025-01-10,720",  # good
        "spender,2025-03-01,850",  # good: the upper bound
        "borrower,2025-02-01,300",  # good: the lower bound
        "borrower,2025-02-02,299",
        "borrower,2025-02-03,851",
        "borrower,2025-02-04,700.5",
        "borrower,2025-02-31,700",
        "stranger,2025-02-05,700",
        "dollars,2025-02-06,",
        ",2025-02-06,700",
        "dollars,,700",
        "remitter,2025-04-01,650",
        "remitter,2025-04-01,660",
        " dollars,2025-02-07,700",
    ]
    folder = landing_with(tmp_path, scores=SCORES_HEADER + "\n".join(lines) + "\n")
    warehouse, results = ingest(tmp_path, folder, month=False)
    assert quarantined(warehouse, "credit_scores", "reference") == {
        5: ("score", "out_of_range"),
        6: ("score", "out_of_range"),
        7: ("score", "unparseable"),
        8: ("scored_on", "unparseable"),
        9: ("customer_id", "unknown_customer"),
        10: ("score", "missing_value"),
        11: ("customer_id", "missing_value"),
        12: ("scored_on", "missing_value"),
        13: ("scored_on", "duplicate_key"),
        14: ("scored_on", "duplicate_key"),
        15: ("customer_id", "padded_value"),
    }
    assert read(warehouse, "SELECT customer_id, strftime(scored_on, '%Y-%m-%d'), score FROM credit_scores "
                           "ORDER BY customer_id, scored_on") == [
        ("borrower", "2025-02-01", 300), ("spender", "2025-01-10", 720), ("spender", "2025-03-01", 850)]
    [scores] = [r for r in results if r.dataset == "credit_scores"]
    assert scores.read_now and scores.files[0].rows_quarantined == 11


def test_credit_scores_are_replaced_whole_and_forgotten_when_the_file_goes(tmp_path):
    folder = landing_with(tmp_path, scores=SCORES_HEADER + "spender,2025-01-10,720\n")
    ingest(tmp_path, folder, month=False)
    (folder / "credit_scores.csv").write_text(SCORES_HEADER + "borrower,2025-01-10,600\n")
    warehouse, _ = ingest(tmp_path, folder, month=False)
    assert read(warehouse, "SELECT customer_id, score FROM credit_scores") == [("borrower", 600)]
    (folder / "credit_scores.csv").unlink()
    warehouse, _ = ingest(tmp_path, folder, month=False)
    assert read(warehouse, "SELECT count(*) FROM credit_scores") == [(0,)]


def test_landing_tells_which_optional_sources_are_present(tmp_path):
    folder = landing_with(tmp_path)
    assert not landing.present(folder, "card_points") and not landing.present(folder, "credit_scores")
    assert landing.present(folder, "balances") and landing.present(folder, "products")
    folder = landing_with(tmp_path / "more", POINTS_HEADER, SCORES_HEADER)
    assert landing.present(folder, "card_points") and landing.present(folder, "credit_scores")
    assert landing.landed_months(folder, "card_points") == [JUNE]
    # A card_points folder without a month is there, incomplete: a run fails on the month, never skips it.
    empty = landing_with(tmp_path / "empty")
    (empty / "card_points").mkdir()
    assert landing.present(empty, "card_points") and landing.landed_months(empty, "card_points") == []


# -- balance_month's foreign_currency ------------------------------------------------------------------

def test_balance_month_keeps_foreign_currency_balances_apart(tmp_path):
    folder = landing_with(tmp_path)
    warehouse = Warehouse(tmp_path / "warehouse")
    with runner.connect(warehouse) as con:
        ingestor = Ingestor(con, folder, warehouse.quarantine, load_vocabularies(), load_programs())
        ingestor.ingest_all_reference()
        ingestor.ingest_month("balances", JUNE, "the test")
    rows = read(warehouse, "SELECT customer_id, foreign_currency, count(*) FROM balance_month "
                           "GROUP BY ALL ORDER BY ALL")
    # 'dollars' holds USD balances in the golden landing; 'borrower' only CNY loans.
    assert ("dollars", True) in {(c, f) for c, f, _ in rows}
    assert all(not f for c, f, _ in rows if c == "borrower")


def test_a_warehouse_from_before_foreign_currency_reads_its_balance_months_again(tmp_path):
    warehouse = Warehouse(tmp_path / "warehouse")
    with runner.connect(warehouse) as con:  # then made to look like one from before the column
        con.execute("DROP TABLE balance_month")
        con.execute("CREATE TABLE balance_month (month DATE NOT NULL, customer_id VARCHAR NOT NULL, "
                    "product_code VARCHAR NOT NULL, risk_class VARCHAR NOT NULL, day_sum DECIMAL(38, 2) NOT NULL, "
                    "month_end DECIMAL(38, 2) NOT NULL)")
        con.execute("INSERT INTO balance_month VALUES (DATE '2025-06-01', 'c', 'fund', 'normal', 1, 1)")
        for dataset in ("balances", "transactions"):
            con.execute("INSERT INTO ingested VALUES ($d, DATE '2025-06-01', 'f', '', 1, 1, 0, now()::TIMESTAMP, 0)",
                        {"d": dataset})
    with runner.connect(warehouse) as con:
        assert con.execute("SELECT dataset FROM ingested").fetchall() == [("transactions",)]
        assert con.execute("SELECT count(*) FROM balance_month").fetchall() == [(0,)]
        assert "foreign_currency" in [r[0] for r in con.execute("DESCRIBE balance_month").fetchall()]
        con.execute("INSERT INTO ingested VALUES ('balances', DATE '2025-06-01', 'g', '', 1, 1, 0, now()::TIMESTAMP, 0)")
    with runner.connect(warehouse) as con:  # once migrated, nothing more is forgotten
        assert con.execute("SELECT count(*) FROM ingested").fetchall() == [(2,)]


def test_the_dask_export_splits_per_customer_tables_and_gives_every_bucket_the_rest(tmp_path):
    from transforms import partitioned

    folder = landing_with(tmp_path, POINTS_HEADER + "a,spender,2025-06-01,5\nb,borrower,2025-06-02,6\n"
                                                    "c,dollars,2025-06-03,7\n")
    warehouse, _ = ingest(tmp_path, folder)
    # icbc_star reads no card points (a window of 0 months); cgb_card_star reads 12 months of them.
    for loaded in load_programs(["icbc_star", "cgb_card_star"]):
        with runner.connect(warehouse) as con:
            run_dir = partitioned.new_run_dir(warehouse)
            exported = partitioned.export(con, warehouse, loaded, JUNE, run_dir, 3, run_id="test")
            [(rates,)] = con.execute("SELECT count(*) FROM fx_rates").fetchall()
        assert rates > 0 and exported.rows["fx_rates"] == rates
        points, customers = [], []
        for bucket in range(3):
            with duckdb.connect() as bucket_con:
                partitioned.load_bucket(bucket_con, run_dir, bucket)
                assert bucket_con.execute("SELECT count(*) FROM fx_rates").fetchone() == (rates,)
                points += bucket_con.execute("SELECT customer_id FROM card_points_month").fetchall()
                customers += bucket_con.execute("SELECT customer_id FROM customers").fetchall()
        # Each customer's rows in exactly one bucket; a program reads card points only through its window.
        assert len(customers) == len(set(customers)) == 4
        windowed = loaded.rules.history_months.get("card_points", 0) > 0
        assert windowed == (loaded.name == "cgb_card_star")
        assert sorted(points) == ([("borrower",), ("dollars",), ("spender",)] if windowed else [])
