"""`tiers equity`: what the customer base is worth, by tier, and what tier moves do to it (docs/equity.md).

A Markov migration model of customer lifetime value, in the manner of Pfeifer and Carraway (2000), read
from the published snapshots alone (their ``fig_`` columns), in an in-memory DuckDB:

- ``m``: a customer's monthly margin at month T, from the figures and the rates of rules/equity.py;
- ``P``: the program's monthly tier migration matrix, pooled over the last month pairs up to T, with an
  absorbing state ``left`` (in one month's snapshot, not in the next);
- ``R[j]``: the mean ``m`` of tier j at T (``R[left]`` = 0);
- ``CLV = m + sum_{k=1..H-1} (P^k R)[tier] / (1 + d/12)^k``.

Counts are DuckDB aggregates; the P^k R recursion is numpy float64. These are estimates for steering
tiers, not tier decisions, so floats are fine here (every tier decision stays exact elsewhere).

Output, published like the snapshots (written aside, then one rename per file):

    <warehouse>/equity/{customers,tiers,migration,summary}/program=<P>/as_of=<YYYY-MM-DD>/data.parquet

Nothing else is written: no landing folder, no warehouse database (data-contract.md section 3).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
from rich.markup import escape
from rich.table import Table

from ground.errors import StateError, TiersError
from ground.months import Month
from ground.paths import duckdb_path
from rules.equity import EquitySettings, figure_rates
from rules.loader import LoadedProgram
from stores import snapshots
from stores.warehouse import Warehouse

DEFAULT_MONTHS_BACK = 12
DATASETS = ("customers", "tiers", "migration", "summary")
LEFT = "left"  # the absorbing state: in one month's snapshot, absent from the next
BRAND_EQUITY_NOTE = ("brand equity is not measurable from ledgers: customer equity here is value equity "
                     "plus retention equity only")


@dataclass
class Equity:
    """One program's customer equity at one month-end. ``con`` holds table ``customer_values``."""

    program: str
    rules_version: str
    month: Month
    pairs: list[Month]                    # the first month of each month pair counted
    states: list[tuple[int | None, str]]  # tiers from the highest, then (None, "left")
    counts: np.ndarray                    # pooled moves, state by state (the left row stays 0)
    matrix: np.ndarray                    # P; every row sums to 1
    by_tier: list[dict]
    customers: int
    value_equity: float
    customer_equity: float
    discount_rate: float
    horizon_months: int
    settings_file: str
    figures_without_rate: list[str]
    con: duckdb.DuckDBPyConnection = field(repr=False)

    @property
    def retention_equity(self) -> float:
        return self.customer_equity - self.value_equity


def equity_path(warehouse: Warehouse, dataset: str, program: str, month: Month) -> Path:
    return (warehouse.root / "equity" / dataset / f"program={program}" / f"as_of={month.last_day.isoformat()}"
            / snapshots.SNAPSHOT_FILE)


def monthly_discount(discount_rate: float) -> float:
    return 1 / (1 + discount_rate / 12)


def future_value(matrix: np.ndarray, rewards: np.ndarray, discount_rate: float, horizon_months: int) -> np.ndarray:
    """``sum_{k=1..H-1} delta^k P^k R`` per state: what a customer in each state brings after this month."""
    delta = monthly_discount(discount_rate)
    step, total = rewards.astype(np.float64), np.zeros(len(rewards))
    for k in range(1, horizon_months):
        step = matrix @ step
        total += delta**k * step
    return total


def migration_matrix(counts: np.ndarray) -> np.ndarray:
    """P from pooled counts: each row over its total; a state nobody left from stays where it is."""
    matrix = np.zeros(counts.shape, dtype=np.float64)
    for i, row in enumerate(counts):
        total = row.sum()
        if total:
            matrix[i] = row / total
        else:
            matrix[i, i] = 1.0  # no customer in this tier in any pair (and `left`, absorbing)
    return matrix


def compute(warehouse: Warehouse, loaded: LoadedProgram, month: Month, settings: EquitySettings,
            settings_file: Path, months_back: int = DEFAULT_MONTHS_BACK) -> Equity:
    program = loaded.name
    rates = figure_rates(settings, settings_file, loaded)
    published = snapshots.published_months(warehouse, program)
    if month not in published:
        if not published:
            raise TiersError(f"{program}: nothing is published in {warehouse.snapshots}; run tiers backfill first")
        raise TiersError(f"{program}: no snapshot for {month} in {warehouse.snapshots} "
                         f"(published: {published[0]}..{published[-1]})")
    window = [m for m in published if month.plus(-months_back) <= m <= month]
    pairs = [m for m in window if m.plus(1) in window]
    if not pairs:
        raise TiersError(f"{program}: no month pair to count tier moves from: {month.plus(-1)} is not published "
                         f"in {warehouse.snapshots} (publish it, e.g. tiers backfill --from {month.plus(-1)})")
    con = duckdb.connect()
    # duckdb_path: DuckDB globs even a list of files; a warehouse named wh[1] must not read wh1's.
    files = [duckdb_path(snapshots.snapshot_path(warehouse, program, m)) for m in window]
    con.read_parquet(files, hive_partitioning=True, union_by_name=True).create_view("snap")
    now = {"as_of": month.last_day}

    columns = {row[0] for row in con.execute(
        "DESCRIBE SELECT * FROM read_parquet($file)",
        {"file": duckdb_path(snapshots.snapshot_path(warehouse, program, month))}).fetchall()}
    missing = [name for name in rates if f"fig_{name}" not in columns]
    if missing:
        raise StateError(f"{program} {month}: the snapshot has no column fig_{missing[0]}, a figure of "
                         f"{loaded.path}: it was computed with other rules; re-run that month (tiers backfill)")
    # Figure names are identifiers (rules/schema.py), the rates bound as parameters.
    terms, params = [], {}
    for index, (name, (kind, rate)) in enumerate(rates.items()):
        if rate is None:
            continue
        months = 12 if kind == "balance" else loaded.rules.figures[name].window_months
        params[f"r{index}"] = float(rate) / months
        terms.append(f'COALESCE(CAST("fig_{name}" AS DOUBLE), 0) * $r{index}')
    margin = " + ".join(terms) or "0"
    con.execute(f"CREATE TABLE month_margins AS SELECT customer_id, tier, tier_name, CAST({margin} AS DOUBLE) AS m "
                "FROM snap WHERE as_of = $as_of", {**params, **now})

    # Pooled over the pairs: each customer in tier i at t, and where they are at t+1 (NULL: left).
    moves = con.execute(
        "SELECT a.tier AS from_tier, b.tier AS to_tier, count(*) AS customers "
        "FROM snap AS a LEFT JOIN snap AS b "
        "  ON b.customer_id = a.customer_id AND b.as_of = last_day(a.as_of + INTERVAL 1 MONTH) "
        "WHERE a.as_of IN (SELECT unnest($firsts)) GROUP BY ALL",
        {"firsts": [m.last_day for m in pairs]}).fetchall()

    names = dict(con.execute("SELECT tier, arg_max(tier_name, as_of) FROM snap GROUP BY tier").fetchall())
    names.update(loaded.rules.tier_names)  # the rule file's names; tiers it no longer has keep theirs
    tiers = sorted(names, reverse=True)
    states = [(tier, names[tier]) for tier in tiers] + [(None, LEFT)]
    index = {tier: i for i, (tier, _) in enumerate(states)}
    counts = np.zeros((len(states), len(states)), dtype=np.int64)
    for from_tier, to_tier, customers in moves:
        counts[index[from_tier], index[to_tier]] = customers
    matrix = migration_matrix(counts)

    rewards = np.zeros(len(states))
    for tier, mean_margin in con.execute("SELECT tier, avg(m) FROM month_margins GROUP BY tier").fetchall():
        rewards[index[tier]] = mean_margin
    discount, horizon = float(settings.discount_rate), settings.horizon_months
    ahead = future_value(matrix, rewards, discount, horizon)
    con.execute("CREATE TABLE ahead (tier INTEGER, ahead DOUBLE)")
    con.executemany("INSERT INTO ahead VALUES (?, ?)", [[tier, float(ahead[index[tier]])] for tier in tiers])
    con.execute("CREATE TABLE customer_values AS SELECT c.customer_id, c.tier, c.tier_name, c.m, c.m + a.ahead AS clv "
                "FROM month_margins AS c JOIN ahead AS a USING (tier)")

    annuity = float(sum(monthly_discount(discount) ** k for k in range(horizon)))
    [(customers, value_equity, customer_equity)] = con.execute(
        "SELECT count(*), COALESCE(sum(m), 0) * $annuity, COALESCE(sum(clv), 0) FROM customer_values",
        {"annuity": annuity}).fetchall()
    con.execute(
        "CREATE TABLE by_tier AS SELECT tier, tier_name, count(*) AS customers, avg(m) AS mean_margin, "
        "avg(clv) AS clv, sum(clv) AS equity, sum(m) * $annuity AS value_equity, "
        "sum(clv) - sum(m) * $annuity AS retention_equity, "
        "CASE WHEN $total = 0 THEN NULL ELSE sum(clv) / $total END AS share "
        "FROM customer_values GROUP BY ALL ORDER BY tier DESC", {"annuity": annuity, "total": customer_equity})
    result = con.execute("SELECT * FROM by_tier ORDER BY tier DESC")
    keys = [column[0] for column in result.description]
    by_tier = [dict(zip(keys, row)) for row in result.fetchall()]
    return Equity(
        program=program, rules_version=loaded.version, month=month, pairs=pairs, states=states, counts=counts,
        matrix=matrix, by_tier=by_tier, customers=customers, value_equity=value_equity,
        customer_equity=customer_equity, discount_rate=discount, horizon_months=horizon,
        settings_file=str(settings_file), figures_without_rate=[n for n, (_, rate) in rates.items() if rate is None],
        con=con,
    )


def publish(warehouse: Warehouse, equity: Equity) -> dict[str, Path]:
    """Each dataset written aside under equity/.staging (not *.parquet, so no reader takes it), then renamed
    into place: a reader sees the old file or the new one, never half of one."""
    con = equity.con
    migration = [
        (f_tier, f_name, t_tier, t_name, int(equity.counts[i, j]) if f_tier is not None else None,
         float(equity.matrix[i, j]), len(equity.pairs))
        for i, (f_tier, f_name) in enumerate(equity.states) for j, (t_tier, t_name) in enumerate(equity.states)
    ]
    con.execute("CREATE OR REPLACE TABLE migration (from_tier INTEGER, from_state VARCHAR, to_tier INTEGER, "
                "to_state VARCHAR, customers BIGINT, probability DOUBLE, month_pairs INTEGER)")
    con.executemany("INSERT INTO migration VALUES (?, ?, ?, ?, ?, ?, ?)", migration)
    con.execute(
        "CREATE OR REPLACE TABLE summary AS SELECT $customers::BIGINT AS customers, $value::DOUBLE AS value_equity, "
        "($equity - $value)::DOUBLE AS retention_equity, $equity::DOUBLE AS customer_equity, "
        "NULL::DOUBLE AS brand_equity, $note AS brand_equity_note, $d::DOUBLE AS discount_rate, "
        "$h::INTEGER AS horizon_months, $pairs::INTEGER AS month_pairs, $first::DATE AS first_pair_from, "
        "$without::VARCHAR[] AS figures_without_rate, $settings AS settings_file, $rules AS rules_version",
        {"customers": equity.customers, "value": equity.value_equity, "equity": equity.customer_equity,
         "note": BRAND_EQUITY_NOTE, "d": equity.discount_rate, "h": equity.horizon_months, "pairs": len(equity.pairs),
         "first": equity.pairs[0].last_day, "without": equity.figures_without_rate, "settings": equity.settings_file,
         "rules": equity.rules_version})
    queries = {
        "customers": "SELECT customer_id, tier, tier_name, m, clv FROM customer_values ORDER BY customer_id",
        "tiers": "SELECT * FROM by_tier ORDER BY tier DESC",
        "migration": "SELECT * FROM migration",
        "summary": "SELECT * FROM summary",
    }
    staging = warehouse.root / "equity" / ".staging"
    staging.mkdir(parents=True, exist_ok=True)
    written = {}
    for dataset in DATASETS:
        staged = staging / f"{dataset}-{uuid.uuid4().hex}.tmp"
        try:
            con.sql(queries[dataset]).to_parquet(str(staged), compression="zstd")
            target = equity_path(warehouse, dataset, equity.program, equity.month)
            snapshots.publish(staged, target)
        finally:
            staged.unlink(missing_ok=True)
        written[dataset] = target
    return written


# -- the terminal -------------------------------------------------------------------------------------

def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def summary_notes(equity: Equity, folder: Path | None = None) -> list[str]:
    """The totals, and what the numbers leave out: lines printed after the tables, unwrapped."""
    first, last = equity.pairs[0], equity.pairs[-1].plus(1)
    notes = [
        f"value equity {_money(equity.value_equity)} CNY (each customer staying as they are)",
        f"retention equity {_money(equity.retention_equity)} CNY (what tier moves and departures add or take away)",
        f"customer equity {_money(equity.customer_equity)} CNY = value + retention; {BRAND_EQUITY_NOTE}",
        f"moves counted over {len(equity.pairs)} month pair{'s' if len(equity.pairs) != 1 else ''} "
        f"({first}..{last}); d = {equity.discount_rate:.2%} a year, H = {equity.horizon_months} months; "
        "an estimate in floating point, not a tier decision",
    ]
    if equity.figures_without_rate:
        notes.append(f"no rate, counted as 0: {', '.join(equity.figures_without_rate)} ({equity.settings_file})")
    if folder is not None:
        notes.append(f"Parquet: {folder} (tiers sql: equity_customers, equity_tiers, equity_migration, equity_summary)")
    return notes


def summary_tables(equity: Equity) -> list[Table]:
    """Equity by tier and the migration matrix."""
    table = Table(title=escape(f"{equity.program}: customer equity at {equity.month.last_day} (CNY)"),
                  title_justify="left")
    for column in ("tier", "customers", "margin / month", "CLV / customer", "equity", "share"):
        table.add_column(column, justify="left" if column == "tier" else "right")
    for row in equity.by_tier:
        share = "-" if row["share"] is None else f"{row['share']:.1%}"
        table.add_row(escape(f"{row['tier']} {row['tier_name']}"), f"{row['customers']:,}", f"{row['mean_margin']:,.2f}",
                      _money(row["clv"]), _money(row["equity"]), share)
    # Tier numbers as row and column labels keep the matrix within 80 columns; the caption names them.
    tiers = equity.states[:-1]
    matrix = Table(title=escape(f"{equity.program}: monthly tier migration P (row: tier at t, column: at t+1)"),
                   title_justify="left", caption_justify="left",
                   caption=escape(", ".join(f"{tier} = {name}" for tier, name in tiers)))
    matrix.add_column("from")
    for tier, name in equity.states:
        matrix.add_column(escape(name if tier is None else f"{tier}"), justify="right")
    for i, (tier, _) in enumerate(tiers):
        matrix.add_row(str(tier), *(f"{p:.1%}" if p else "." for p in equity.matrix[i]))
    return [table, matrix]


# -- what if the rules changed -------------------------------------------------------------------------

def compare(published: Equity, whatif: Equity) -> list[dict]:
    """Equity by tier under the published rules and under the trial ones, and the change."""
    before = {row["tier"]: row for row in published.by_tier}
    after = {row["tier"]: row for row in whatif.by_tier}
    names = {tier: name for tier, name in published.states + whatif.states if tier is not None}
    rows = []
    for tier in sorted(set(before) | set(after), reverse=True):
        b, a = before.get(tier, {}), after.get(tier, {})
        rows.append({"tier": tier, "tier_name": names[tier],
                     "customers_published": b.get("customers", 0), "customers_whatif": a.get("customers", 0),
                     "equity_published": b.get("equity", 0.0), "equity_whatif": a.get("equity", 0.0),
                     "change": a.get("equity", 0.0) - b.get("equity", 0.0)})
    return rows


def comparison_table(published: Equity, whatif: Equity, rows: list[dict], rules_file: str) -> Table:
    table = Table(title=escape(f"What if {published.program} used {rules_file}: customer equity at "
                               f"{published.month.last_day} (CNY)"), title_justify="left")
    for column in ("tier", "customers", "what-if", "equity", "what-if", "change"):
        table.add_column(column, justify="left" if column == "tier" else "right")
    for row in rows:
        table.add_row(escape(f"{row['tier']} {row['tier_name']}"), f"{row['customers_published']:,}",
                      f"{row['customers_whatif']:,}", _money(row["equity_published"]), _money(row["equity_whatif"]),
                      f"{row['change']:+,.0f}")
    return table


def comparison_notes(published: Equity, whatif: Equity, scratch: str) -> list[str]:
    change = whatif.customer_equity - published.customer_equity
    return [
        f"customer equity {_money(published.customer_equity)} -> {_money(whatif.customer_equity)} CNY ({change:+,.0f})",
        f"value equity {_money(published.value_equity)} -> {_money(whatif.value_equity)}; retention equity "
        f"{_money(published.retention_equity)} -> {_money(whatif.retention_equity)}",
        f"{BRAND_EQUITY_NOTE}; an estimate, not a tier decision",
        f"what-if evaluation and its equity: {scratch}",
    ]


def whatif_equity(warehouse: Warehouse, trial: LoadedProgram, current: LoadedProgram, month: Month,
                  settings: EquitySettings, settings_file: Path, months_back: int, input_dir: Path,
                  max_bad_rows: int = 0) -> dict:
    """Evaluate ``trial`` over the months the equity reads (whatif's scratch evaluation), then compute the
    equity of the published snapshots and of the scratch ones with the same settings, and compare."""
    from flows.whatif import whatif  # Prefect: only once every argument is checked

    published_equity = compute(warehouse, current, month, settings, settings_file, months_back)
    first = published_equity.pairs[0]
    result = whatif(str(trial.path), str(input_dir), str(first), str(month), str(warehouse.root), max_bad_rows)
    scratch = Warehouse(Path(result["scratch"]))
    trial_equity = compute(scratch, trial, month, settings, settings_file, months_back)
    publish(warehouse, published_equity)
    written = publish(scratch, trial_equity)  # the scratch folder is the what-if's own
    rows = compare(published_equity, trial_equity)
    comparison = scratch.root / "equity-comparison.parquet"
    con = trial_equity.con
    con.execute("CREATE TABLE comparison (tier INTEGER, tier_name VARCHAR, customers_published BIGINT, "
                "customers_whatif BIGINT, equity_published DOUBLE, equity_whatif DOUBLE, change DOUBLE)")
    if rows:
        con.executemany("INSERT INTO comparison VALUES (?, ?, ?, ?, ?, ?, ?)", [list(r.values()) for r in rows])
    con.sql("SELECT * FROM comparison ORDER BY tier DESC").to_parquet(str(comparison))
    return {"published": published_equity, "whatif": trial_equity, "rows": rows, "scratch": str(scratch.root),
            "comparison": str(comparison), "whatif_files": written, "whatif_result": result}


# -- the report's section ------------------------------------------------------------------------------

def report_data(warehouse: Warehouse, program: str, month: Month) -> dict | None:
    """The published equity of ``program`` at ``month`` for `tiers report`: by tier, the matrix and the totals
    (None when `tiers equity` has not been run for that month)."""
    files = {name: equity_path(warehouse, name, program, month) for name in ("tiers", "migration", "summary")}
    if not all(path.is_file() for path in files.values()):
        return None
    con = duckdb.connect()

    def rows(name: str, order: str) -> list[dict]:
        result = con.execute(f"SELECT * FROM read_parquet($file) ORDER BY {order}", {"file": duckdb_path(files[name])})
        keys = [column[0] for column in result.description]
        return [dict(zip(keys, row)) for row in result.fetchall()]

    [summary] = rows("summary", "customers")
    return {"tiers": rows("tiers", "tier DESC"), "summary": summary,
            "migration": rows("migration", "from_tier DESC NULLS LAST, to_tier DESC NULLS LAST")}
