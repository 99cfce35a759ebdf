"""A corpus of malformed landing folders, each with the outcome the contract promises
(data-contract.md section 2, docs/decisions.md "Input").

Every case breaks a copy of the ``icbc_money`` golden landing folder one way and re-runs the
month-end 2025-06 into a copy of a warehouse where that month is already published, so "nothing is
published" means "the earlier snapshots are byte for byte untouched". The outcomes:

- ``RunFails``: the run fails with a ``TiersError`` subclass whose one-line message names the file
  (and the column or month where there is one); nothing is published.
- ``BadRows``: the bad rows are quarantined with their (problem_column, reason), counted per file
  (rows read = used + quarantined), and the run fails under the default ``--max-bad-rows 0`` with a
  message naming the file, the reasons with their counts and the quarantine; nothing is published.
- ``Succeeds``: the file is valid after all (a header-only file is an empty month).

The cases run in-process (``flows.runs.month_end.fn`` under the session's Prefect API). Cases that
only touch balances or reference files use ``bohai_wealth`` (one month of balances, no transactions:
five tasks instead of seventeen); transaction and window cases use ``icbc_star``. Three
representative cases also go through the installed ``tiers`` command in a subprocess.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal
import random
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import duckdb
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ground.errors import BadRowsError, InputError, TiersError
from rules import sources

GOLDEN = Path(__file__).resolve().parent / "golden"
SCENARIO = "icbc_money"
MONTH = "2025-06"
FAST = "bohai_wealth"  # reads one month of balances and no transactions
ICBC = "icbc_star"  # six months of balances and transactions


# -- outcomes ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunFails:
    error: type[TiersError]
    file: str  # landing-relative path the message must name
    words: tuple[str, ...] = ()  # and these (the column, the month, what was expected)


@dataclass(frozen=True)
class BadRows:
    file: str  # landing-relative path of the file holding the bad rows
    reasons: dict[tuple[str, str], int]  # (problem_column, reason) -> rows


@dataclass(frozen=True)
class Succeeds:
    check: Callable[[Path, Path, Path, dict], None]  # (landing, warehouse, template warehouse, run result)


@dataclass(frozen=True)
class Case:
    id: str
    breaks: Callable[[Path], None]
    outcome: RunFails | BadRows | Succeeds
    program: str = FAST
    month: str = MONTH
    marks: tuple = field(default=())
    require_control: bool = False  # run as the scheduled deployment does (--require-control)
    during: Callable | None = None  # (monkeypatch, landing): something that happens while the run reads


# -- ways to break a landing folder -----------------------------------------------------------------

# A good row per dataset; a case overrides the cells it breaks. Rows are written in the file's own
# header order, with fresh keys, so that only the broken cell makes them bad.
GOOD_ROWS = {
    "balances": dict(account_id="corpus-acct", customer_id="borrower", product_code="demand_deposit",
                     currency="CNY", balance_date="2025-06-15", balance="100.00", risk_class=""),
    "transactions": dict(txn_id="corpus-txn", account_id="spender-card", customer_id="spender",
                         txn_date="2025-06-12", txn_type="card_pos", amount="100.00", currency="CNY",
                         merchant_category="5411", fee_factor=""),
    "customers": dict(customer_id="newcomer", segment="retail"),
    "products": dict(customer_id="borrower", product_code="credit_card_gold", opened_on="2025-01-01", closed_on=""),
    "credit_events": dict(customer_id="borrower", event_code="loan_loss", started_on="2025-01-01", cured_on=""),
    "fx_rates": dict(rate_date="2025-06-02", currency="EUR", cny_per_unit="7.80000000"),
    "credit_scores": dict(customer_id="borrower", scored_on="2025-01-01", score="700"),
}


def _dataset(rel: str) -> str:
    return rel.split("/")[0].split(".")[0]


def _header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        return next(csv.reader(handle))


def _newline(path: Path) -> str:
    """The file's own line break: the golden files use CRLF, and a file mixing breaks is another matter."""
    return "\r\n" if b"\r\n" in path.read_bytes()[:4096] else "\n"


def _row(path: Path, dataset: str, cells: dict[str, str]) -> str:
    values = {**GOOD_ROWS[dataset], **cells}
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow([values[name] for name in _header(path)])
    return buffer.getvalue()


def append_lines(rel: str, *lines: str) -> Callable[[Path], None]:
    """Append raw text lines to a CSV file, with the file's own line break."""
    def breaks(landing: Path) -> None:
        path = landing / rel
        newline = _newline(path)
        with path.open("a", encoding="utf-8", newline="") as handle:
            handle.write("".join(line + newline for line in lines))
    return breaks


def add(rel: str, times: int = 1, **cells: str) -> Callable[[Path], None]:
    """Append one row (``times`` copies) to a CSV file: the dataset's good row with ``cells`` changed."""
    def breaks(landing: Path) -> None:
        path = landing / rel
        append_lines(rel, *[_row(path, _dataset(rel), cells)] * times)(landing)
    return breaks


def repeat_line(rel: str, line: int) -> Callable[[Path], None]:
    """Append a copy of one of the file's lines (1 = header)."""
    def breaks(landing: Path) -> None:
        lines = (landing / rel).read_text(encoding="utf-8").splitlines()
        append_lines(rel, lines[line - 1])(landing)
    return breaks


def delete(rel: str) -> Callable[[Path], None]:
    return lambda landing: (landing / rel).unlink()


def write_bytes(rel: str, data: bytes, remove: str | None = None) -> Callable[[Path], None]:
    def breaks(landing: Path) -> None:
        if remove:
            (landing / remove).unlink()
        (landing / rel).parent.mkdir(parents=True, exist_ok=True)
        (landing / rel).write_bytes(data)
    return breaks


def rewrite(rel: str, edit: Callable[[str], str]) -> Callable[[Path], None]:
    def breaks(landing: Path) -> None:
        path = landing / rel
        path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")
    return breaks


def drop_column(rel: str, column: str) -> Callable[[Path], None]:
    def breaks(landing: Path) -> None:
        path = landing / rel
        header, *rows = list(csv.reader(path.open(newline="", encoding="utf-8")))
        keep = [i for i, name in enumerate(header) if name != column]
        assert len(keep) == len(header) - 1, f"{rel} has no column {column}"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            for row in [header, *rows]:
                writer.writerow([row[i] for i in keep])
    return breaks


def to_parquet(rel: str, select: str = "*", target: str | None = None, keep_csv: bool = False) -> Callable[[Path], None]:
    """Replace a CSV file by a Parquet copy (every column text unless ``select`` casts one)."""
    def breaks(landing: Path) -> None:
        source = landing / rel
        out = landing / (target or str(Path(rel).with_suffix(".parquet")))
        out.parent.mkdir(parents=True, exist_ok=True)
        duckdb.sql(
            f"COPY (SELECT {select} FROM read_csv('{source}', all_varchar = true, header = true)) "
            f"TO '{out}' (FORMAT parquet)"
        )
        if not keep_csv:
            source.unlink()
    return breaks


def truncated_parquet(rel: str) -> Callable[[Path], None]:
    def breaks(landing: Path) -> None:
        to_parquet(rel)(landing)
        path = landing / str(Path(rel).with_suffix(".parquet"))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return breaks


def corrupt_parquet(rel: str) -> Callable[[Path], None]:
    """A file that starts and ends with Parquet's magic bytes and holds noise in between."""
    noise = random.Random(7).randbytes(4096)
    return write_bytes(str(Path(rel).with_suffix(".parquet")), b"PAR1" + noise + b"PAR1", remove=rel)


def both(*breakers: Callable[[Path], None]) -> Callable[[Path], None]:
    def breaks(landing: Path) -> None:
        for breaker in breakers:
            breaker(landing)
    return breaks


def split_month(rel: str, parts: dict[str, str]) -> Callable[[Path], None]:
    """Replace balances/YYYY-MM.csv by a folder YYYY-MM/ of Parquet parts: name -> SELECT list."""
    def breaks(landing: Path) -> None:
        source = landing / rel
        folder = source.with_suffix("")
        folder.mkdir()
        rows = len(source.read_text().splitlines()) - 1
        half = rows // 2
        for index, (name, select) in enumerate(sorted(parts.items())):
            where = f"row_number() OVER () {'<=' if index == 0 else '>'} {half}"
            duckdb.sql(
                f"COPY (SELECT {select} FROM (SELECT *, {where} AS pick FROM read_csv('{source}', all_varchar = true, "
                f"header = true)) WHERE pick) TO '{folder / name}' (FORMAT parquet)"
            )
        source.unlink()
    return breaks


def latin1(rel: str, text: str, header: bool = False) -> Callable[[Path], None]:
    """Append a Latin-1 encoded row (or replace the header by a Latin-1 one): not UTF-8."""
    def breaks(landing: Path) -> None:
        path = landing / rel
        newline = _newline(path).encode()
        if header:
            _, *rows = path.read_bytes().split(newline, 1)
            path.write_bytes(text.encode("latin-1") + newline + (rows[0] if rows else b""))
        else:
            path.write_bytes(path.read_bytes() + text.encode("latin-1") + newline)
    return breaks


# -- what a successful case must show ----------------------------------------------------------------

MONEY = {"balances": "balance", "transactions": "amount"}


def control_figures(path: Path) -> tuple[int, str]:
    """A control file's line for a clean CSV: its data rows and the sum of its money column as written."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle)]
    money = MONEY.get(path.parent.name)
    return len(rows), (str(sum((Decimal(r[money]) for r in rows), Decimal(0))) if money else "")


def write_controls(landing: Path, clean: Path = GOLDEN / SCENARIO / "landing") -> None:
    """Control files as the bank's extract wrote them for its clean files, beside each file's name."""
    for source in clean.rglob("*.csv"):
        rows, total = control_figures(source)
        rel = source.relative_to(clean)
        (landing / rel).parent.mkdir(parents=True, exist_ok=True)
        (landing / f"{rel}.ctl").write_text(f"rows,total\n{rows},{total}\n")


def control(rel: str, rows_delta: int = 0, total_delta: str = "0", text: str | None = None) -> Callable[[Path], None]:
    """Write the control file of ``rel``: the clean figures moved by the deltas, or ``text`` as it is."""
    def breaks(landing: Path) -> None:
        path = landing / rel
        if text is None:
            rows, total = control_figures(path)
            total = str(Decimal(total) + Decimal(total_delta)) if total else ""
            content = f"rows,total\n{rows + rows_delta},{total}\n"
        else:
            content = text
        (landing / f"{rel}.ctl").write_text(content)
    return breaks


def long_last_line(rel: str, megabytes: int = 41) -> Callable[[Path], None]:
    """A last line longer than DuckDB's reader takes (it dropped a 40 MB one without a word)."""
    def breaks(landing: Path) -> None:
        path = landing / rel
        with path.open("ab") as handle:
            handle.write(b"long-acct,borrower,demand_deposit,CNY,2025-06-15,1" + b"0" * (megabytes << 20) + b",\r\n")
    return breaks


def into_folder_with_hidden_files(rel: str) -> Callable[[Path], None]:
    """The month as a folder, as Spark writes one: its part, _SUCCESS, a hidden part in progress, _temporary/."""
    def breaks(landing: Path) -> None:
        path = landing / rel
        folder = path.with_suffix("")
        (folder / "_temporary").mkdir(parents=True)
        path.rename(folder / "part-00000.csv")
        (folder / "_SUCCESS").write_bytes(b"")
        (folder / ".part-00001.csv").write_text("account_id\nhalf-written")
        (folder / "_temporary" / "part-00002.csv").write_text("garbage\n")
    return breaks


def changed_while_read(rel: str, same_bytes: bool = False) -> Callable:
    """The file is rewritten while the run reads it (after its rows were read, before they are stored)."""
    def during(monkeypatch, landing: Path) -> None:
        from transforms import ingest

        path = landing / rel
        original = path.read_bytes()
        real = ingest.Ingestor._validate_month

        def read_then_rewrite(self, source):
            validated = real(self, source)
            if path in source.files:
                if same_bytes:  # truncated and written again: the read may have seen an empty file
                    path.write_bytes(original[: original.index(b"\n") + 1])
                    path.write_bytes(original)
                else:
                    path.write_bytes(original.replace(b"2025-06-15", b"2025-06-16", 1))
            return validated

        monkeypatch.setattr(ingest.Ingestor, "_validate_month", read_then_rewrite)
    return during


def _query(warehouse: Path, sql: str, params: dict | None = None) -> list[tuple]:
    con = duckdb.connect(str(warehouse / "tiers.duckdb"), read_only=True)
    try:
        return con.execute(sql, params or {}).fetchall()
    finally:
        con.close()


def snapshot_rows(warehouse: Path, program: str, month: str = MONTH) -> list[dict]:
    [path] = (warehouse / "snapshots" / f"program={program}").glob(f"as_of={month}-*/data.parquet")
    return pq.read_table(path).to_pylist()


def _empty_month(dataset: str, table: str):
    def check(landing: Path, warehouse: Path, result: dict) -> None:
        [month] = [r for r in result["ingested"] if (r.dataset, r.month) == (dataset, MONTH)]
        assert month.read_now
        assert [(f.path, f.rows_read, f.rows_used, f.rows_quarantined) for f in month.files] == [
            (str(landing / dataset / f"{MONTH}.csv"), 0, 0, 0)
        ]
        assert _query(warehouse, f"SELECT count(*) FROM {table} WHERE month = DATE '{MONTH}-01'") == [(0,)]
        assert not list((warehouse / "quarantine").rglob("*.parquet"))
        [evaluated] = result["evaluated"]
        assert (evaluated.month, evaluated.customers) == (MONTH, 4)
    return check


def empty_balances_month(landing: Path, warehouse: Path, template: Path, result: dict) -> None:
    _empty_month("balances", "balance_month")(landing, warehouse, result)
    rows = snapshot_rows(warehouse, FAST)
    # Zero balances: nobody has financial assets, so every customer earns bohai's lowest tier.
    assert sorted(r["customer_id"] for r in rows) == ["borrower", "dollars", "remitter", "spender"]
    assert {(r["computed_tier"], r["tier"]) for r in rows} == {(0, 0)}


def empty_transactions_month(landing: Path, warehouse: Path, template: Path, result: dict) -> None:
    _empty_month("transactions", "txn_figure_month")(landing, warehouse, result)
    before = {r["customer_id"]: r for r in snapshot_rows(template, ICBC)}
    after = {r["customer_id"]: r for r in snapshot_rows(warehouse, ICBC)}
    assert set(after) == set(before)
    # June's 12,345.67 card payment is gone from the spender's window; nobody else changes.
    assert after["spender"]["pts_card_spend"] < before["spender"]["pts_card_spend"]
    assert {c: r for c, r in after.items() if c != "spender"} == {c: r for c, r in before.items() if c != "spender"}


def same_as_before(landing: Path, warehouse: Path, template: Path, result: dict) -> None:
    [june] = [r for r in result["ingested"] if (r.dataset, r.month) == ("balances", MONTH)]
    assert june.read_now and [(f.rows_read, f.rows_quarantined) for f in june.files] == [(90, 0)]
    assert not [f for r in result["ingested"] for f in r.files if f.rows_quarantined]
    assert snapshot_rows(warehouse, FAST) == snapshot_rows(template, FAST)


# -- the corpus -------------------------------------------------------------------------------------

B = f"balances/{MONTH}.csv"
T = f"transactions/{MONTH}.csv"
DOUBLE_KEY = ("duplicate_key", 2)


LF_ENDINGS = rewrite(B, lambda t: t.replace("\r\n", "\n"))


def bad(column: str, reason: str, rows: int = 1) -> dict[tuple[str, str], int]:
    return {(column, reason): rows}


def interval_cases(dataset: str, prefix: str, unknown_code: str) -> list[Case]:
    """The bad rows of a reference interval source (rules/sources.py, _interval): one validation serves
    every such source, so each is broken the same ways, in its own column names."""
    columns = sources.source(dataset).interval_params
    code, start, end = columns["code_column"], columns["start_column"], columns["end_column"]
    file = f"{dataset}.csv"

    def case(name: str, cells: dict[str, str], column: str, reason: str) -> Case:
        return Case(f"{prefix}_{name}", add(file, **cells), BadRows(file, bad(column, reason)))

    return [
        case("padded_customer_id", {"customer_id": "borrower "}, "customer_id", "padded_value"),
        case(f"missing_{code}", {code: ""}, code, "missing_value"),
        case(f"missing_{start}", {start: ""}, start, "missing_value"),
        case(f"unparseable_{start}", {start: "2025-02-30"}, start, "unparseable"),
        case(f"unparseable_{end}", {end: "2025-13-01"}, end, "unparseable"),
        case(f"unknown_{code}", {code: unknown_code}, code, "unknown_code"),
        case("unknown_customer", {"customer_id": "stranger"}, "customer_id", "unknown_customer"),
        case("end_before_start", {start: "2025-03-01", end: "2025-02-01"}, end, "end_before_start"),
    ]


CASES = [
    # ---- the run fails: files that are missing, unreadable or of the wrong shape ----
    Case("missing_balances_month", delete("balances/2025-03.csv"),
         RunFails(InputError, "balances/2025-03.csv", ("2025-03", "icbc_star")), program=ICBC),
    Case("missing_transactions_month", delete("transactions/2025-04.csv"),
         RunFails(InputError, "transactions/2025-04.csv", ("2025-04", "icbc_star")), program=ICBC),
    Case("missing_customers_file", delete("customers.csv"), RunFails(InputError, "customers.csv", ("missing",))),
    Case("window_without_enough_history", lambda landing: None,
         RunFails(InputError, "balances/2024-12.csv", ("2024-12", "icbc_star evaluation of 2025-05")),
         program=ICBC, month="2025-05"),
    Case("missing_column_balances_parquet", to_parquet(B, "* EXCLUDE (product_code)"),
         RunFails(InputError, f"balances/{MONTH}.parquet", ("missing column product_code",))),
    Case("missing_column_transactions", drop_column(T, "amount"),
         RunFails(InputError, T, ("missing column amount",)), program=ICBC),
    Case("missing_column_customers", rewrite("customers.csv", lambda t: t.replace("customer_id,", "id,", 1)),
         RunFails(InputError, "customers.csv", ("missing column customer_id",))),
    Case("missing_column_products", drop_column("products.csv", "opened_on"),
         RunFails(InputError, "products.csv", ("missing column opened_on",))),
    Case("missing_column_credit_events", drop_column("credit_events.csv", "event_code"),
         RunFails(InputError, "credit_events.csv", ("missing column event_code",))),
    Case("missing_column_fx_rates", drop_column("fx_rates.csv", "cny_per_unit"),
         RunFails(InputError, "fx_rates.csv", ("missing column cny_per_unit",))),
    Case("corrupt_parquet_balances", corrupt_parquet(B),
         RunFails(InputError, f"balances/{MONTH}.parquet", ("not a readable Parquet file",))),
    Case("truncated_parquet_balances", truncated_parquet(B),
         RunFails(InputError, f"balances/{MONTH}.parquet", ("Parquet",))),
    Case("truncated_parquet_customers", truncated_parquet("customers.csv"),
         RunFails(InputError, "customers.parquet", ("Parquet",))),
    Case("empty_parquet_products", write_bytes("products.parquet", b"", remove="products.csv"),
         RunFails(InputError, "products.parquet", ("Parquet",))),
    Case("broken_quote_balances", append_lines(B, '"corpus-acct,borrower,demand_deposit,CNY,2025-06-15,100.00,'),
         RunFails(InputError, B, ("cannot be read as CSV",))),
    Case("broken_quote_customers", append_lines("customers.csv", '"newcomer,retail', "other,retail"),
         RunFails(InputError, "customers.csv", ("cannot be read as CSV",))),
    Case("semicolon_delimiter_balances", rewrite(B, lambda t: t.replace(",", ";")),
         RunFails(InputError, B, ("missing column",))),
    Case("semicolon_delimiter_products",
         both(append_lines("products.csv", "borrower,wealth_card,2025-01-01,"),
              rewrite("products.csv", lambda t: t.replace(",", ";"))),
         RunFails(InputError, "products.csv", ("missing column",))),
    Case("tab_delimiter_fx_rates", rewrite("fx_rates.csv", lambda t: t.replace(",", "\t")),
         RunFails(InputError, "fx_rates.csv", ("missing column",))),
    Case("tab_delimiter_customers", rewrite("customers.csv", lambda t: t.replace(",", "\t")),
         RunFails(InputError, "customers.csv", ("missing column customer_id",))),
    Case("ragged_row_fx_rates", append_lines("fx_rates.csv", "2025-06-02,EUR,7.8,surplus"),
         RunFails(InputError, "fx_rates.csv", ("cannot be read as CSV",))),
    Case("empty_file_balances", write_bytes(B, b""), RunFails(InputError, B, ("empty file",))),
    Case("empty_file_customers", write_bytes("customers.csv", b""), RunFails(InputError, "customers.csv", ("empty file",))),
    Case("blank_lines_only_credit_events", write_bytes("credit_events.csv", b"\n\n"),
         RunFails(InputError, "credit_events.csv", ("empty file",))),
    Case("csv_and_parquet_for_one_month", to_parquet(B, keep_csv=True),
         RunFails(InputError, B, (f"balances/{MONTH}.parquet", "both exist"))),
    Case("csv_and_parquet_customers", to_parquet("customers.csv", keep_csv=True),
         RunFails(InputError, "customers.csv", ("customers.parquet", "both exist"))),
    Case("month_file_beside_month_folder",
         to_parquet(B, target=f"balances/{MONTH}/part-1.parquet", keep_csv=True),
         RunFails(InputError, B, (f"balances/{MONTH}", "both exist"))),
    Case("empty_month_folder", both(delete(B), lambda landing: (landing / "balances" / MONTH).mkdir()),
         RunFails(InputError, f"balances/{MONTH}", ("no .csv or .parquet files", "2025-06"))),
    Case("double_money_parquet_transactions", to_parquet(T, "* REPLACE (CAST(amount AS DOUBLE) AS amount)"),
         RunFails(InputError, f"transactions/{MONTH}.parquet", ("amount", "DOUBLE")), program=ICBC),
    Case("float_money_parquet_part_of_a_month_folder",
         split_month(B, {"part-1.parquet": "* REPLACE (CAST(balance AS DECIMAL(18, 2)) AS balance)",
                         "part-2.parquet": "* REPLACE (CAST(balance AS FLOAT) AS balance)"}),
         RunFails(InputError, f"balances/{MONTH}/part-2.parquet", ("balance", "FLOAT"))),
    Case("non_utf8_row_balances", latin1(B, "caf\xe9-acct,borrower,demand_deposit,CNY,2025-06-15,100.00,"),
         RunFails(InputError, B, ("Line: 92", "not utf-8 encoded"))),
    Case("non_utf8_header_customers", latin1("customers.csv", "customer_id,s\xe9gment", header=True),
         RunFails(InputError, "customers.csv", ("UTF-8",))),
    Case("repeated_column_products", rewrite("products.csv", lambda t: t.replace("closed_on", "opened_on", 1)),
         RunFails(InputError, "products.csv", ("repeats",))),

    # ---- types are never guessed (data-contract.md section 1, "Physical types") ----
    Case("parquet_double_score_credit_scores",
         both(write_bytes("credit_scores.csv", b"customer_id,scored_on,score\nborrower,2025-01-01,700\n"),
              to_parquet("credit_scores.csv", "* REPLACE (CAST(score AS DOUBLE) AS score)")),
         RunFails(InputError, "credit_scores.parquet", ("column score is DOUBLE", "text or an integer type"))),
    Case("parquet_integer_cents_balances",
         to_parquet(B, "* REPLACE (CAST(CAST(balance AS DECIMAL(18, 2)) * 100 AS BIGINT) AS balance)"),
         RunFails(InputError, f"balances/{MONTH}.parquet", ("column balance is BIGINT", "DECIMAL with at most 2 decimals"))),
    Case("parquet_timestamp_date_transactions", to_parquet(T, "* REPLACE (CAST(txn_date AS TIMESTAMP) AS txn_date)"),
         RunFails(InputError, f"transactions/{MONTH}.parquet", ("column txn_date is TIMESTAMP", "text or DATE")),
         program=ICBC),
    Case("parquet_integer_id_balances", to_parquet(B, "* REPLACE (CAST(hash(account_id) % 1000 AS BIGINT) AS account_id)"),
         RunFails(InputError, f"balances/{MONTH}.parquet", ("column account_id is BIGINT", "expected text"))),

    # ---- complete files only (section 1, "Control files") ----
    Case("control_rows_do_not_match_balances", control(B, rows_delta=1),
         RunFails(InputError, B, (f"{B}.ctl", "says 91 rows", "has 90 rows"))),
    Case("control_total_does_not_match_transactions", control(T, total_delta="0.01"),
         RunFails(InputError, T, (f"{T}.ctl", "total")), program=ICBC),
    Case("malformed_control_customers", control("customers.csv", text="rows;total\n4;\n"),
         RunFails(InputError, "customers.csv.ctl", ("malformed control file",))),
    Case("no_control_file_with_require_control", lambda landing: None,
         RunFails(InputError, "customers.csv", ("not ready", "customers.csv.ctl")), require_control=True),
    Case("a_month_without_its_control_file", both(write_controls, delete(f"{B}.ctl")),
         RunFails(InputError, B, ("not ready",)), require_control=True),
    Case("long_last_line_dropped_by_the_reader", long_last_line(B),
         RunFails(InputError, B, ("line 92", "returned 90 rows", "91 records"))),
    Case("cut_inside_a_quoted_cell",
         lambda landing: (landing / B).write_bytes((landing / B).read_bytes() + b'cut-acct,borrower,"demand_dep'),
         RunFails(InputError, B, ("line 92", "never closed"))),
    # (LF endings: the same rows in new bytes, so that the stored month is read again.)
    Case("rewritten_while_read", LF_ENDINGS, RunFails(InputError, B, ("changed while this run read it",)),
         during=changed_while_read(B)),
    Case("rewritten_with_the_same_bytes_while_read", LF_ENDINGS,
         RunFails(InputError, B, ("changed while this run read it",)), during=changed_while_read(B, same_bytes=True)),

    # ---- it is valid after all ----
    Case("matching_control_files_required", write_controls, Succeeds(same_as_before), require_control=True),
    Case("hidden_and_underscore_files_in_a_month_folder", into_folder_with_hidden_files(B), Succeeds(same_as_before)),
    Case("header_only_balances_is_an_empty_month", rewrite(B, lambda t: t.splitlines()[0] + "\n"),
         Succeeds(empty_balances_month)),
    Case("header_only_transactions_is_an_empty_month", rewrite(T, lambda t: t.splitlines()[0] + "\n"),
         Succeeds(empty_transactions_month), program=ICBC),
    Case("lf_line_endings", rewrite(B, lambda t: t.replace("\r\n", "\n")), Succeeds(same_as_before)),

    # ---- bad rows: credit scores (a reference file every run reads when it is there) ----
    Case("scores_out_of_range_duplicate_and_fractional",
         write_bytes("credit_scores.csv", b"customer_id,scored_on,score\nborrower,2025-01-01,900\n"
                                          b"borrower,2025-01-01,700\nspender,2025-02-01,712.5\n"),
         BadRows("credit_scores.csv", {("score", "out_of_range"): 1, ("scored_on", "duplicate_key"): 1,
                                       ("score", "unparseable"): 1})),
    # ---- bad rows: balances ----
    Case("bal_missing_account_id", add(B, account_id=""), BadRows(B, bad("account_id", "missing_value"))),
    Case("bal_missing_customer_id", add(B, customer_id=""), BadRows(B, bad("customer_id", "missing_value"))),
    Case("bal_missing_product_code", add(B, product_code=""), BadRows(B, bad("product_code", "missing_value"))),
    Case("bal_missing_balance_date", add(B, balance_date=""), BadRows(B, bad("balance_date", "missing_value"))),
    Case("bal_missing_balance", add(B, balance=""), BadRows(B, bad("balance", "missing_value"))),
    Case("bal_unparseable_amount", add(B, balance="abc"), BadRows(B, bad("balance", "unparseable"))),
    Case("bal_unparseable_date", add(B, balance_date="2025-06-31"), BadRows(B, bad("balance_date", "unparseable"))),
    Case("bal_three_decimals", add(B, balance="100.005"), BadRows(B, bad("balance", "unparseable"))),
    Case("bal_negative_balance", add(B, balance="-100.00"), BadRows(B, bad("balance", "out_of_range"))),
    Case("bal_currency_lowercase", add(B, currency="usd"), BadRows(B, bad("currency", "bad_currency"))),
    Case("bal_currency_two_letters", add(B, currency="US"), BadRows(B, bad("currency", "bad_currency"))),
    Case("bal_date_after_the_month", add(B, balance_date="2025-07-01"), BadRows(B, bad("balance_date", "outside_month"))),
    Case("bal_date_before_the_month", add(B, balance_date="2025-05-31"), BadRows(B, bad("balance_date", "outside_month"))),
    Case("bal_unknown_product_code", add(B, product_code="yacht"), BadRows(B, bad("product_code", "unknown_code"))),
    Case("bal_unknown_risk_class", add(B, risk_class="risky"), BadRows(B, bad("risk_class", "unknown_code"))),
    Case("bal_unknown_customer", add(B, customer_id="stranger"), BadRows(B, bad("customer_id", "unknown_customer"))),
    Case("bal_duplicate_account_and_day", repeat_line(B, 40), BadRows(B, bad("balance_date", *DOUBLE_KEY))),
    Case("bal_foreign_without_rate", add(B, currency="EUR"), BadRows(B, bad("currency", "no_fx_rate"))),
    Case("bal_padded_account_id", add(B, account_id="corpus-acct "), BadRows(B, bad("account_id", "padded_value"))),
    Case("bal_padded_customer_id", add(B, customer_id="\u3000borrower"), BadRows(B, bad("customer_id", "padded_value"))),

    # ---- bad rows: transactions ----
    Case("txn_missing_txn_id", add(T, txn_id=""), BadRows(T, bad("txn_id", "missing_value")), program=ICBC),
    Case("txn_unparseable_amount", add(T, amount="abc"), BadRows(T, bad("amount", "unparseable")), program=ICBC),
    Case("txn_unparseable_date", add(T, txn_date="2025-06-31"), BadRows(T, bad("txn_date", "unparseable")), program=ICBC),
    Case("txn_three_decimals", add(T, amount="12.345"), BadRows(T, bad("amount", "unparseable")), program=ICBC),
    Case("txn_zero_amount", add(T, amount="0.00"), BadRows(T, bad("amount", "out_of_range")), program=ICBC),
    Case("txn_negative_amount", add(T, amount="-5.00"), BadRows(T, bad("amount", "out_of_range")), program=ICBC),
    Case("txn_fee_factor_above_one", add(T, fee_factor="1.5"), BadRows(T, bad("fee_factor", "out_of_range")), program=ICBC),
    Case("txn_fee_factor_negative", add(T, fee_factor="-0.1"), BadRows(T, bad("fee_factor", "out_of_range")), program=ICBC),
    Case("txn_currency_lowercase", add(T, currency="usd"), BadRows(T, bad("currency", "bad_currency")), program=ICBC),
    Case("txn_date_outside_the_month", add(T, txn_date="2025-05-31"), BadRows(T, bad("txn_date", "outside_month")), program=ICBC),
    Case("txn_unknown_txn_type", add(T, txn_type="lottery"), BadRows(T, bad("txn_type", "unknown_code")), program=ICBC),
    Case("txn_unknown_customer", add(T, customer_id="stranger"), BadRows(T, bad("customer_id", "unknown_customer")), program=ICBC),
    Case("txn_duplicate_txn_id", add(T, txn_id="icbc_money-00010"), BadRows(T, bad("txn_id", *DOUBLE_KEY)), program=ICBC),
    Case("txn_foreign_without_rate", add(T, currency="GBP"), BadRows(T, bad("currency", "no_fx_rate")), program=ICBC),
    Case("txn_padded_txn_id", add(T, txn_id="\tcorpus-txn"), BadRows(T, bad("txn_id", "padded_value")), program=ICBC),
    # T1, t1 and "T1 " were counted as three: "T1 " is quarantined, T1 and t1 are two transactions (rows used).
    Case("txn_ids_differ_by_case_and_padding", both(add(T, txn_id="T1"), add(T, txn_id="t1"), add(T, txn_id="T1 ")),
         BadRows(T, bad("txn_id", "padded_value")), program=ICBC),

    # ---- bad rows: customers ----
    Case("cust_missing_customer_id", add("customers.csv", customer_id=""),
         BadRows("customers.csv", bad("customer_id", "missing_value"))),
    Case("cust_duplicate_customer_id", add("customers.csv", times=2),
         BadRows("customers.csv", bad("customer_id", *DOUBLE_KEY))),
    Case("cust_padded_customer_id", add("customers.csv", customer_id="newcomer "),
         BadRows("customers.csv", bad("customer_id", "padded_value"))),

    # ---- bad rows: products and credit events (one interval validation) ----
    *interval_cases("products", "prod", unknown_code="yacht_club"),
    *interval_cases("credit_events", "evt", unknown_code="bankruptcy"),

    # ---- bad rows: FX rates ----
    Case("fx_missing_rate", add("fx_rates.csv", cny_per_unit=""), BadRows("fx_rates.csv", bad("cny_per_unit", "missing_value"))),
    Case("fx_unparseable_rate", add("fx_rates.csv", cny_per_unit="abc"), BadRows("fx_rates.csv", bad("cny_per_unit", "unparseable"))),
    Case("fx_zero_rate", add("fx_rates.csv", cny_per_unit="0"), BadRows("fx_rates.csv", bad("cny_per_unit", "out_of_range"))),
    Case("fx_unparseable_date", add("fx_rates.csv", rate_date="2025-06-31"), BadRows("fx_rates.csv", bad("rate_date", "unparseable"))),
    Case("fx_currency_lowercase", add("fx_rates.csv", currency="eur"), BadRows("fx_rates.csv", bad("currency", "bad_currency"))),
    Case("fx_currency_two_letters", add("fx_rates.csv", currency="EU"), BadRows("fx_rates.csv", bad("currency", "bad_currency"))),
    Case("fx_duplicate_currency_and_day", add("fx_rates.csv", rate_date="2025-06-27", currency="USD", cny_per_unit="7.2"),
         BadRows("fx_rates.csv", bad("rate_date", *DOUBLE_KEY))),
]


def test_the_corpus_is_large_and_covers_every_reason_of_the_contract():
    assert len(CASES) >= 40 and len({case.id for case in CASES}) == len(CASES)
    reasons = {reason for case in CASES if isinstance(case.outcome, BadRows) for _, reason in case.outcome.reasons}
    assert reasons == {"missing_value", "unparseable", "out_of_range", "bad_currency", "outside_month",
                       "unknown_code", "unknown_customer", "duplicate_key", "end_before_start", "no_fx_rate",
                       "padded_value"}
    datasets = {_dataset(case.outcome.file) for case in CASES if isinstance(case.outcome, BadRows)}
    assert datasets == set(GOOD_ROWS)


# -- running a case ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def template(prefect_harness, tmp_path_factory) -> Path:
    """A warehouse where 2025-06 is published for both programs the corpus runs."""
    from flows.runs import month_end

    base = tmp_path_factory.mktemp("corpus").resolve()
    landing = base / "landing"
    shutil.copytree(GOLDEN / SCENARIO / "landing", landing)
    warehouse = base / "template"
    result = month_end.fn(str(landing), MONTH, str(warehouse), [ICBC, FAST])
    assert sorted((e.program, e.month) for e in result["evaluated"]) == [(FAST, MONTH), (ICBC, MONTH)]
    return warehouse


def published(warehouse: Path) -> dict[str, bytes]:
    return {str(p.relative_to(warehouse)): p.read_bytes() for p in (warehouse / "snapshots").rglob("*.parquet")}


def prepare(case: Case, template: Path, tmp_path: Path) -> tuple[Path, Path]:
    base = tmp_path.resolve()
    landing = base / "landing"
    shutil.copytree(GOLDEN / SCENARIO / "landing", landing)
    case.breaks(landing)
    warehouse = base / "warehouse"
    shutil.copytree(template, warehouse, ignore=shutil.ignore_patterns("tiers.lock"))
    return landing, warehouse


def quarantined(warehouse: Path) -> Counter:
    files = sorted(str(p) for p in (warehouse / "quarantine").rglob("*.parquet"))
    if not files:
        return Counter()
    rows = duckdb.sql(
        "SELECT source_file, problem_column, reason FROM read_parquet($files, union_by_name = true)",
        params={"files": files},
    ).fetchall()
    return Counter(rows)


def _quarantine_file(warehouse: Path, rel: str) -> Path:
    dataset = _dataset(rel)
    name = Path(rel).stem if "/" in rel else "reference"
    return warehouse / "quarantine" / dataset / f"{name}.parquet"


def check_outcome(case: Case, landing: Path, warehouse: Path, template: Path, run: Callable[[], dict]) -> None:
    before = published(warehouse)
    assert len(before) == 2
    outcome = case.outcome

    if isinstance(outcome, Succeeds):
        result = run()
        outcome.check(landing, warehouse, template, result)
        return

    expected_type = BadRowsError if isinstance(outcome, BadRows) else outcome.error
    with pytest.raises(TiersError) as raised:
        run()
    error = raised.value
    message = str(error)
    assert isinstance(error, expected_type), f"{type(error).__name__}: {message}"
    assert message.strip() and "\n" not in message.strip(), message
    assert str(landing / outcome.file) in message, message
    assert published(warehouse) == before, "a failed run changed the published snapshots"

    if isinstance(outcome, RunFails):
        for word in outcome.words:
            assert word in message, f"{word!r} not in: {message}"
        return

    total = sum(outcome.reasons.values())
    path = str(landing / outcome.file)
    assert message.startswith(f"{total} bad rows, more than --max-bad-rows 0; nothing was published")
    for (column, reason), count in outcome.reasons.items():
        assert f"{reason} in {column} x{count}" in message, message
    assert f"Quarantine: {warehouse / 'quarantine'}" in message
    # Quarantined: exactly these rows, in the file's own quarantine file, and nothing anywhere else.
    assert quarantined(warehouse) == Counter(
        {(path, column, reason): count for (column, reason), count in outcome.reasons.items()}
    )
    assert _quarantine_file(warehouse, outcome.file).is_file()
    # Counted per file: every row of the file read, the bad ones quarantined, the others used.
    lines = len((landing / outcome.file).read_text().splitlines()) - 1
    assert _query(
        warehouse, "SELECT rows_read, rows_used, rows_quarantined FROM ingested_files WHERE path = $path", {"path": path}
    ) == [(lines, lines - total, total)]


@pytest.mark.parametrize(
    "case", [pytest.param(case, id=case.id, marks=case.marks) for case in CASES]
)
def test_malformed_input_gets_its_outcome(case, template, tmp_path, monkeypatch):
    from flows.runs import month_end

    landing, warehouse = prepare(case, template, tmp_path)
    if case.during:
        case.during(monkeypatch, landing)
    check_outcome(case, landing, warehouse, template,
                  lambda: month_end.fn(str(landing), case.month, str(warehouse), [case.program],
                                       require_control=case.require_control))


@pytest.mark.slow
@pytest.mark.parametrize(
    "case", [pytest.param(case, id=case.id, marks=case.marks) for case in CASES]
)
def test_every_corrupted_landing_folder_is_refused_or_gives_the_clean_rows(case, template, tmp_path, monkeypatch):
    """The property over the whole corpus. The bank's extract writes a control file for each of its clean
    files (data-contract.md section 1); the scheduled run requires them. Whatever then happened to the
    folder, the run either fails (a TiersError: a non-zero exit) with nothing published, or publishes
    exactly the rows of the clean run: never something else."""
    from flows.runs import month_end

    landing, warehouse = prepare(case, template, tmp_path)
    clean = GOLDEN / SCENARIO / "landing"
    for source in clean.rglob("*.csv"):  # as the extract wrote them, unless the case wrote its own
        rel = source.relative_to(clean)
        if not (landing / f"{rel}.ctl").exists():
            rows, total = control_figures(source)
            (landing / f"{rel}.ctl").write_text(f"rows,total\n{rows},{total}\n")
    if case.during:
        case.during(monkeypatch, landing)
    before = published(warehouse)

    try:
        month_end.fn(str(landing), case.month, str(warehouse), [case.program], require_control=True)
    except TiersError as error:
        assert str(error).strip() and published(warehouse) == before, str(error)
        return
    assert case.month == MONTH
    assert published(warehouse).keys() == before.keys()
    assert snapshot_rows(warehouse, case.program) == snapshot_rows(template, case.program)


# The same property over corruptions drawn at random: a file of the run cut at any byte, a line dropped,
# repeated or blanked, bytes inserted anywhere. Every outcome is either a refusal or the clean rows.
_FAST_FILES = ["customers.csv", "fx_rates.csv", "products.csv", "credit_events.csv", B]


def _corrupt(data: bytes, operation: str, at: float, junk: bytes) -> bytes:
    lines = data.split(b"\n")
    index = min(int(at * len(lines)), len(lines) - 1)
    if operation == "cut":
        return data[: int(at * len(data))]
    if operation == "drop_line":
        return b"\n".join(lines[:index] + lines[index + 1:])
    if operation == "repeat_line":
        return b"\n".join(lines[: index + 1] + lines[index:])
    if operation == "blank_line":
        return b"\n".join(lines[:index] + [b""] + lines[index:])
    offset = int(at * len(data))
    return data[:offset] + junk + data[offset:]


@pytest.mark.slow
@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rel=st.sampled_from(_FAST_FILES), operation=st.sampled_from(["cut", "drop_line", "repeat_line", "blank_line", "insert"]),
       at=st.floats(0, 1), junk=st.binary(min_size=1, max_size=8))
def test_a_randomly_corrupted_landing_folder_is_refused_or_gives_the_clean_rows(template, tmp_path_factory, rel,
                                                                             operation, at, junk):
    from flows.runs import month_end

    case = Case("random", lambda landing: write_controls(landing), Succeeds(same_as_before))
    landing, warehouse = prepare(case, template, tmp_path_factory.mktemp("random"))
    path = landing / rel
    path.write_bytes(_corrupt(path.read_bytes(), operation, at, junk))
    before = published(warehouse)
    try:
        month_end.fn(str(landing), MONTH, str(warehouse), [FAST], require_control=True)
    except TiersError as error:
        event(f"refused: {type(error).__name__}")
        assert str(error).strip() and published(warehouse) == before, str(error)
        return
    event("the clean rows")
    assert snapshot_rows(warehouse, FAST) == snapshot_rows(template, FAST)


def test_non_utf8_byte_in_a_data_row_is_not_blamed_on_the_header(tmp_path):
    from ground.months import Month
    from transforms.landing import month_source, stage

    landing = tmp_path / "landing"
    shutil.copytree(GOLDEN / SCENARIO / "landing", landing)
    latin1(B, "caf\xe9-acct,borrower,demand_deposit,CNY,2025-06-15,100.00,")(landing)
    path = landing / B
    header = path.read_bytes().split(b"\r\n", 1)[0]
    assert header.decode("utf-8").split(",")[0] == "account_id"  # the header itself is good UTF-8

    with pytest.raises(InputError) as raised:
        stage(duckdb.connect(), month_source(landing, "balances", Month.parse(MONTH), "the test"), "staged")

    assert str(path) in str(raised.value)
    assert "header line" not in str(raised.value)


# -- the same through the installed command -----------------------------------------------------------

CLI_CASES = ["truncated_parquet_balances", "txn_fee_factor_above_one", "window_without_enough_history"]


@pytest.mark.parametrize("case_id", CLI_CASES)
def test_malformed_input_through_the_command_is_one_plain_line(case_id, template, tiers_cli, tmp_path, monkeypatch):
    # The command as a user runs it (see test_cli_errors.user_environment).
    monkeypatch.delenv("PREFECT_LOGGING_LEVEL", raising=False)
    [case] = [c for c in CASES if c.id == case_id]
    landing, warehouse = prepare(case, template, tmp_path)
    before = published(warehouse)

    done = tiers_cli("run", "--input", str(landing), "--month", case.month, "--program", case.program,
                     "--warehouse", str(warehouse))

    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"stderr is not one line: {done.stderr!r}"
    assert lines[0].startswith("error: ") and str(landing / case.outcome.file) in lines[0]
    if isinstance(case.outcome, BadRows):
        assert "1 bad rows" in lines[0] and "out_of_range in fee_factor x1" in lines[0]
    else:
        assert all(word in lines[0] for word in case.outcome.words)
    assert published(warehouse) == before
