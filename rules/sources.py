"""Every landing data source, declared once (data-contract.md sections 1 and 2).

A declaration says what a source is: its columns and the physical types each accepts, its key, the
bad-row reasons its validation gives, its control-total column, the warehouse table its good rows or
monthly sums go to (and how), and which figure kinds read it. Staging and landing (landing.py),
validation, quarantine and the monthly sums (ingest.py), the Dask export (partitioned.py) and the
table of docs/sources.md are derived from these; the SQL of each source (its `validated`,
and for a monthly source the file that sums it) does the set-based work. docs/sources.md says how to
add the next source.

Frozen dataclasses rather than a YAML file: the declaration is code's contract with the SQL (and
tests hold the two together), not something a bank edits, unlike the vocabularies and rule files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# How a cell is read, and the Parquet types it may have besides text (data-contract.md, "Physical
# types"): a type that holds exactly what the text would. An integer or floating-point money column,
# a TIMESTAMP date or an integer id rejects the whole file: integer cents are not yuan, and a type is
# never guessed. ("NULL" is DuckDB's type of a column that is entirely empty.)
_TEXT_TYPES = frozenset({"VARCHAR", '"NULL"'})
_INTEGER_TYPES = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT",
                            "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"})
_DECIMALS = {"money": 2, "fee": 6, "rate": 8}  # the most decimals a DECIMAL column of the kind may have
KINDS = ("id", "code", "text", "date", "money", "fee", "rate", "integer")


@dataclass(frozen=True)
class Column:
    """One contract column. ``typed``: for a monthly source, the name of its typed value in
    ``landed_<source>`` (sql/cell_types.sql has text_<kind> and typed_<kind> for it)."""

    name: str
    kind: str
    required: bool = True
    typed: str | None = None

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind

    def fits(self, column_type: str) -> bool:
        """Whether a Parquet column of this type holds the value as it is (no text pattern needed)."""
        if self.kind == "date":
            return column_type == "DATE"
        if self.kind == "integer":
            return column_type in _INTEGER_TYPES
        decimal = re.fullmatch(r"DECIMAL\((\d+),(\d+)\)", column_type)
        return self.kind in _DECIMALS and bool(decimal) and int(decimal.group(2)) <= _DECIMALS[self.kind]

    def accepts(self, column_type: str) -> bool:
        return column_type in _TEXT_TYPES or self.fits(column_type)

    @property
    def accepted(self) -> str:
        """The accepted physical types, as an error message or the docs say them."""
        if self.kind in _DECIMALS:
            return f"text or DECIMAL with at most {_DECIMALS[self.kind]} decimals"
        return {"date": "text or DATE", "integer": "text or an integer type"}.get(self.kind, "text")


@dataclass(frozen=True)
class DataSource:
    """One landing data source. A monthly one lands as ``<name>/YYYY-MM.*`` and is summed per month
    into ``table`` by sql/<table>.sql; a reference one lands as ``<name>.*`` and its good rows replace
    ``table`` whole (the validated columns ``keep``, in the table's column order)."""

    name: str
    one_row_is: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    reasons: tuple[str, ...]  # 'column:reason', as its validation (``validated``) gives them
    table: str
    monthly: bool = False
    required: bool = False  # a reference file the landing folder must have
    # A bank may not have it at all: a program whose figures read it does not apply to a landing folder
    # without it (data-contract.md section 4), where a missing month of a source every bank has fails.
    optional: bool = False
    keep: tuple[str, ...] = ()  # reference: the validated columns stored in ``table``
    summed: str = ""  # monthly: how a month is summed into ``table``
    control_total: str | None = None  # the column a control file's total sums, as written
    # Monthly: the small tables validation computes once (sql/<name>.sql): the customers the month names
    # (with rows_passed, rows_failed, rows_not_converted, known) and the rows whose key another row shares.
    customers_summary: str | None = None
    duplicates_summary: str | None = None
    read_by: tuple[str, ...] = ()  # the figure kinds (and other rules) that read it
    # The window of stored months an evaluation reads is the program's, per source; a table without a
    # customer_id column (fx_rates) goes whole to every bucket of the Dask path.
    per_customer: bool = True
    # Monthly sums kept per program (the programs' transaction rules shape them): the Dask path exports
    # only the evaluated program's.
    per_program: bool = False
    # Reference interval sources (_interval): the vocabulary parameter (ingest.vocabulary_params) their
    # codes come from.
    interval_codes: str | None = None

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    @property
    def optional_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if not c.required)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def typed_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.typed)

    def column(self, name: str) -> Column:
        [found] = [c for c in self.columns if c.name == name]
        return found

    @property
    def validated(self) -> str:
        return "validated_intervals" if self.interval_codes else f"validated_{self.name}"

    @property
    def interval_params(self) -> dict[str, str]:
        """What sql/validated_intervals.sql binds besides the codes: the staged table and its column names."""
        [code] = [c.name for c in self.columns if c.kind == "code"]
        start, end = [c.name for c in self.columns if c.kind == "date"]
        return {"staged": self.landed, "code_column": code, "start_column": start, "end_column": end}

    @property
    def landed(self) -> str:
        return f"landed_{self.name}" if self.monthly else f"staged_{self.name}"


def _id(name: str, required: bool = True) -> Column:
    return Column(name, "id", required)


def _interval(name: str, one_row_is: str, code: str, start: str, end: str, codes: str, table: str,
              read_by: tuple[str, ...]) -> DataSource:
    """A reference interval source: a customer holds a code from a start date to an optional end date.
    They share one validation (sql/validated_intervals.sql), so their reasons, in its order of
    precedence, and stored columns follow from the column names."""
    return DataSource(
        name, one_row_is,
        (_id("customer_id"), Column(code, "code"), Column(start, "date"), Column(end, "date", required=False)),
        key=(),
        reasons=("customer_id:missing_value", "customer_id:padded_value", f"{code}:missing_value",
                 f"{start}:missing_value", f"{start}:unparseable", f"{end}:unparseable", f"{code}:unknown_code",
                 "customer_id:unknown_customer", f"{end}:end_before_start"),
        table=table, keep=("customer_id", code, "start_day", "end_day"), interval_codes=codes, read_by=read_by,
    )


SOURCES: tuple[DataSource, ...] = (
    DataSource(
        "customers", "one customer of the bank (one person across all accounts)",
        (_id("customer_id"), Column("segment", "text", required=False)),
        key=("customer_id",),
        reasons=("customer_id:missing_value", "customer_id:padded_value", "customer_id:duplicate_key"),
        table="customers", required=True, keep=("customer_id", "segment"),
        read_by=("every evaluation: every customer is rated every month",),
    ),
    DataSource(
        "fx_rates", "one rate; it holds until the currency's next rate",
        (Column("rate_date", "date"), Column("currency", "code"), Column("cny_per_unit", "rate")),
        key=("currency", "rate_date"),
        reasons=("rate_date:missing_value", "currency:missing_value", "cny_per_unit:missing_value",
                 "rate_date:unparseable", "cny_per_unit:unparseable", "cny_per_unit:out_of_range",
                 "currency:bad_currency", "rate_date:duplicate_key"),
        table="fx_rates", keep=("currency", "day", "rate"), per_customer=False,
        read_by=("the conversion of non-CNY balances and transactions", "USD thresholds"),
    ),
    _interval("products", "a product the customer holds (cards, agreements)", "product_code", "opened_on",
              "closed_on", codes="held_product_codes", table="held_products",
              read_by=("floor tiers (held products)",)),
    _interval("credit_events", "an adverse credit status", "event_code", "started_on", "cured_on",
              codes="credit_event_codes", table="credit_events", read_by=("caps (adverse credit events)",)),
    DataSource(
        "credit_scores", "a credit score; it holds until the customer's next one",
        (_id("customer_id"), Column("scored_on", "date"), Column("score", "integer")),
        key=("customer_id", "scored_on"),
        reasons=("customer_id:missing_value", "customer_id:padded_value", "scored_on:missing_value",
                 "score:missing_value", "scored_on:unparseable", "score:unparseable", "score:out_of_range",
                 "customer_id:unknown_customer", "scored_on:duplicate_key"),
        table="credit_scores", keep=("customer_id", "scored_day", "score_value"),
        read_by=("credit score conditions",), optional=True,
    ),
    DataSource(
        "balances", "an account's end-of-day balance on one day",
        (_id("account_id"), _id("customer_id"), Column("product_code", "code"),
         Column("balance_date", "date", typed="day"), Column("balance", "money", typed="amount"),
         Column("currency", "code", required=False), Column("risk_class", "code", required=False)),
        key=("account_id", "balance_date"),
        reasons=("account_id:missing_value", "customer_id:missing_value", "product_code:missing_value",
                 "balance_date:missing_value", "balance:missing_value", "balance_date:unparseable",
                 "balance:unparseable", "balance:out_of_range", "currency:bad_currency",
                 "balance_date:outside_month", "product_code:unknown_code", "risk_class:unknown_code",
                 "account_id:padded_value", "customer_id:padded_value", "customer_id:unknown_customer",
                 "balance_date:duplicate_key", "currency:no_fx_rate"),
        table="balance_month", monthly=True, control_total="balance",
        summed=("per customer, product_code, risk_class and foreign_currency: the sum of the daily CNY "
                "balances (day_sum; a day without a row adds zero) and the balance on the month's last day"),
        customers_summary="balance_customers", duplicates_summary="balance_duplicates",
        read_by=("balance figures (average daily or month-end)",),
    ),
    DataSource(
        "transactions", "one posted transaction",
        (_id("txn_id"), _id("account_id"), _id("customer_id"), Column("txn_date", "date", typed="day"),
         Column("txn_type", "code"), Column("amount", "money", typed="txn_amount"),
         Column("currency", "code", required=False), Column("merchant_category", "code", required=False),
         Column("fee_factor", "fee", required=False, typed="fee_value")),
        key=("txn_id",),
        reasons=("txn_id:missing_value", "account_id:missing_value", "customer_id:missing_value",
                 "txn_id:padded_value", "account_id:padded_value", "txn_date:missing_value",
                 "txn_type:missing_value", "amount:missing_value", "txn_date:unparseable", "amount:unparseable",
                 "amount:out_of_range", "fee_factor:unparseable", "fee_factor:out_of_range",
                 "currency:bad_currency", "merchant_category:unparseable", "txn_date:outside_month",
                 "txn_type:unknown_code", "customer_id:padded_value", "customer_id:unknown_customer",
                 "txn_id:duplicate_key", "currency:no_fx_rate"),
        table="txn_figure_month", monthly=True, control_total="amount",
        summed=("per program, transaction figure and customer: the counted CNY amount (caps, fee factors "
                "and exclusions applied per transaction)"),
        customers_summary="transaction_customers", duplicates_summary="transaction_duplicates",
        read_by=("transaction figures",), per_program=True,
    ),
    DataSource(
        "card_points", "reward points a card earned (an integer > 0)",
        (_id("entry_id"), _id("customer_id"), Column("posted_on", "date", typed="day"),
         Column("points", "integer", typed="points_value")),
        key=("entry_id",),
        reasons=("entry_id:missing_value", "customer_id:missing_value", "entry_id:padded_value",
                 "posted_on:missing_value", "points:missing_value", "posted_on:unparseable",
                 "points:unparseable", "points:out_of_range", "posted_on:outside_month",
                 "customer_id:padded_value", "customer_id:unknown_customer", "entry_id:duplicate_key"),
        table="card_points_month", monthly=True, control_total="points",
        summed="per customer: the sum of the month's points",
        customers_summary="card_point_customers", duplicates_summary="card_point_duplicates",
        read_by=("card points figures",), optional=True,
    ),
)

BY_NAME = {source.name: source for source in SOURCES}


def source(name: str) -> DataSource:
    return BY_NAME[name]


def monthly() -> tuple[DataSource, ...]:
    return tuple(s for s in SOURCES if s.monthly)


def optional() -> tuple[DataSource, ...]:
    return tuple(s for s in SOURCES if s.optional)


def reference() -> tuple[DataSource, ...]:
    """Reference sources in load order: customers first (the others are validated against it), then
    fx_rates (months are converted with it)."""
    return tuple(s for s in SOURCES if not s.monthly)


def evaluation_tables() -> tuple[DataSource, ...]:
    """The sources whose warehouse tables an evaluation reads (every one: what a program does not use
    costs an empty scan)."""
    return SOURCES


def markdown_table() -> str:
    """The table of sources in docs/sources.md (tests/test_sources.py holds the doc to it)."""
    def cell(values) -> str:
        return ", ".join(f"`{v}`" for v in values) or "none"

    lines = ["| source | lands as | columns: kind (optional ones in brackets) | key | control total | "
             "warehouse table | read by |",
             "|---|---|---|---|---|---|---|"]
    for s in SOURCES:
        lands = f"`{s.name}/YYYY-MM.*`" if s.monthly else f"`{s.name}.*`" + (" (required)" if s.required else "")
        columns = ", ".join(f"`{c.name}`: {c.kind}" if c.required else f"[`{c.name}`: {c.kind}]" for c in s.columns)
        table = f"`{s.table}` ({s.summed})" if s.monthly else f"`{s.table}` (replaced whole)"
        lines.append(f"| {s.name} | {lands} | {columns} | {cell(s.key)} | {cell([s.control_total] if s.control_total else [])} "
                     f"| {table} | {'; '.join(s.read_by)} |")
    lines += ["", "Accepted Parquet types per kind: " + "; ".join(
        f"{kind}: {Column('x', kind).accepted}" for kind in KINDS) + "."]
    lines += ["", "Bad-row reasons (`column:reason`, as the quarantine gives them):", ""]
    lines += [f"- {s.name}: " + ", ".join(f"`{r}`" for r in s.reasons) for s in SOURCES]
    return "\n".join(lines) + "\n"
