"""Evaluate one program at one month-end and publish its snapshot.

Reads the stored monthly sums and last month's snapshot, runs figure_measures -> tier_decisions ->
snapshot, and publishes the result atomically. Python here handles one program and one month;
every per-customer step is SQL.

The per-customer part (``write_snapshot``) runs on any DuckDB connection that holds the input tables
(``INPUT_TABLES``): the warehouse's own connection here, or a Dask worker's in-memory connection
holding one bucket of customers (transforms/partitioned.py). Publishing stays with the warehouse.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import duckdb

from rules.compile import month_scales, rule_tables
from rules import states
from rules.loader import LoadedProgram, Vocabularies
from stores import snapshots
from ground.checksums import sha256_file
from ground.errors import InputError, StateError
from ground.months import Month, window
from ground.paths import duckdb_path, path_literal
from transforms.version import code_version
from stores.warehouse import Warehouse
from rules import sources
from transforms import runner

# The type of every snapshot column that is read back as last month's state.
_EMPTY_PREV = (
    "SELECT CAST(NULL AS VARCHAR) AS customer_id, CAST(NULL AS INTEGER) AS tier, "
    "CAST(NULL AS INTEGER) AS failed_reviews, CAST(NULL AS DATE) AS buffer_since WHERE false"
)
# What the evaluation SQL reads besides the rule tables: every source's warehouse table (sources.py),
# and ``prev_snapshot``, last month's state.
INPUT_TABLES = tuple(source.table for source in sources.evaluation_tables()) + ("prev_snapshot",)


def prev_snapshot_query(prev_path: Path | None) -> tuple[str, dict]:
    """The SELECT (and its parameters) of last month's state: the snapshot's state columns, or none."""
    if prev_path is None:
        return _EMPTY_PREV, {}
    return ("SELECT customer_id, tier, failed_reviews, buffer_since FROM read_parquet($prev_path)",
            {"prev_path": duckdb_path(prev_path)})


@dataclass(frozen=True)
class Evaluated:
    program: str
    month: str
    path: str
    customers: int
    initial: bool


def predecessor(warehouse: Warehouse, program: str, month: Month, run_id: str | None = None) -> Path | None:
    """Last month's snapshot, or None for an initial evaluation; raises when the chain has a gap.

    A month with no published month of the program before it is an initial evaluation (the first
    month of a new warehouse, a re-run of the first published month, or a month that extends the
    chain backwards, whose run then re-evaluates the later months). Any other month needs the
    snapshot of the month before it: the one run ``run_id`` staged, else the published one.
    """
    if run_id is not None:
        staged = snapshots.staged_snapshot_path(warehouse, run_id, program, month.plus(-1))
        if staged.is_file():
            return staged
    published = snapshots.published_months(warehouse, program)
    earlier = [m for m in published if m < month]
    if not earlier:
        return None
    previous = month.plus(-1)
    if previous in published:
        return snapshots.snapshot_path(warehouse, program, previous)
    first_gap = max(earlier).plus(1)
    raise StateError(
        f"{program} {month}: there is no snapshot for the month before ({previous}); "
        f"run {first_gap} first (tiers backfill --from {first_gap} --to {month})"
    )


def check_chain(warehouse: Warehouse, program: str, months: list[Month]) -> None:
    """Before a run publishes anything: its months must continue the published chain without a gap."""
    predecessor(warehouse, program, months[0])
    for before, after in zip(months, months[1:]):
        if after != before.plus(1):
            raise StateError(
                f"{program}: {before.plus(1)}..{after.plus(-1)} are not published, so the published months from "
                f"{after} on cannot follow {before}; backfill --from {months[0]} --to {after.plus(-1)} instead"
            )


def valuation_rates(con: duckdb.DuckDBPyConnection, loaded: LoadedProgram, month: Month) -> dict[str, Decimal]:
    """CNY per unit of each currency the program's figures are valued in: the latest rate on or before the
    month-end, however old (as for every conversion). None in force is an error naming the date."""
    rates = {}
    for currency in loaded.rules.valuation_currencies:
        [(found,)] = con.execute(
            "SELECT max_by(cny_per_unit, rate_date) FROM fx_rates WHERE currency = $currency AND rate_date <= $as_of",
            {"currency": currency, "as_of": month.last_day},
        ).fetchall()
        if found is None:
            raise InputError(f"{loaded.name} {month}: no {currency} rate in force on {month.last_day.isoformat()} "
                             f"(fx_rates has none on or before it); its figures are compared in {currency}")
        rates[currency] = found
    return rates


def _register_rules(con: duckdb.DuckDBPyConnection, loaded: LoadedProgram, vocab: Vocabularies, month: Month) -> int:
    states.define(con)  # the state machine's terms, which tier_decisions.sql calls
    for name, table in rule_tables(loaded, vocab).items():
        con.register(name, table)
    scales = month_scales(loaded, month, valuation_rates(con, loaded, month))
    con.register("eval_figures", scales.figures)
    return scales.points_scale


def _undefined_tiers(con: duckdb.DuckDBPyConnection) -> tuple[int, int | None]:
    """Customers whose tier the rule file no longer defines: (how many, the lowest such tier)."""
    [(count, tier)] = con.execute(
        "SELECT count(*), min(tier) FROM tier_decisions WHERE tier NOT IN (SELECT tier FROM rule_tiers)"
    ).fetchall()
    return count, tier


def check_tiers_defined(loaded: LoadedProgram, month: Month, count: int, tier: int | None) -> None:
    """A tier held under a buffer may have been removed from the rule file since: refuse, never drop.
    The message names no customer (it reaches Prefect's logs); the month before's snapshot lists them."""
    if count:
        raise StateError(
            f"{loaded.name} {month}: {count} customers hold tier {tier}, which {loaded.path} no longer defines "
            f"(tiers sql \"SELECT customer_id FROM {loaded.name} WHERE as_of = '{month.plus(-1).last_day}' AND "
            f"tier = {tier}\"); keep the tier in the rule file until no customer holds it"
        )


def _manifest(con: duckdb.DuckDBPyConnection, loaded: LoadedProgram, month: Month, target: Path,
              snapshot_sha: str, rows_out: int, seconds: dict[str, float], run_id: str) -> dict:
    """What went into one snapshot: every input file (reference files and the windows' months)."""
    windows = [(dataset, m.first_day) for dataset, length in loaded.rules.history_months.items()
               for m in window(month, length)]
    inputs = con.execute(
        """
        SELECT f.dataset, strftime(f.month, '%Y-%m') AS month, f.path, f.sha256, f.rows_read, f.rows_used,
               f.rows_quarantined, i.ingested_at, round(i.seconds, 3) AS ingest_seconds
        FROM ingested_files AS f
        JOIN ingested AS i ON i.dataset = f.dataset AND i.month IS NOT DISTINCT FROM f.month
        WHERE f.month IS NULL OR (f.dataset, f.month) IN (SELECT unnest($datasets), unnest($months))
        ORDER BY f.month NULLS FIRST, f.dataset, f.path
        """,
        {"datasets": [d for d, _ in windows], "months": [m for _, m in windows]},
    ).fetchall()
    columns = ("dataset", "month", "path", "sha256", "rows_read", "rows_used", "rows_quarantined",
               "ingested_at", "ingest_seconds")
    files = [dict(zip(columns, row)) for row in inputs]
    return {
        "program": loaded.name,
        "as_of": month.last_day.isoformat(),
        # The run whose commit published this month (a cascade's months share it).
        "run_id": run_id,
        "rules_version": loaded.version,
        "rules_file": str(loaded.path),
        "code_version": code_version(),
        "snapshot": {"file": str(target), "sha256": snapshot_sha, "rows": rows_out},
        "rows_in": sum(f["rows_read"] for f in files),
        "rows_used": sum(f["rows_used"] for f in files),
        "rows_quarantined": sum(f["rows_quarantined"] for f in files),
        "rows_out": rows_out,
        # Ingestion happened when each input was (last) read, possibly in an earlier run.
        "stage_seconds": {"ingest": round(sum(f["ingest_seconds"] for f in files), 3),
                          **{stage: round(value, 3) for stage, value in seconds.items()}},
        "inputs": files,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def all_nullable(query: str) -> str:
    """``query`` with every column written as nullable (OPTIONAL) Parquet. DuckDB marks a column REQUIRED
    when the data it writes has no NULL (previous_tier in every month but the first), so one program's
    months would have two schemas; a CASE with a NULL branch makes the column's statistics allow NULL."""
    return f"SELECT CASE WHEN COLUMNS(*) IS NULL THEN NULL ELSE COLUMNS(*) END FROM ({query})"


@dataclass(frozen=True)
class Written:
    """What ``write_snapshot`` wrote: its rows, seconds per stage, and the customers whose tier the rule
    file no longer defines (count, lowest tier); nothing is written when there are any."""

    rows: int
    seconds: dict[str, float]
    undefined: tuple[int, int | None]


def write_snapshot(con: duckdb.DuckDBPyConnection, loaded: LoadedProgram, vocab: Vocabularies, month: Month,
                   target: Path) -> Written:
    """figure_measures -> tier_decisions -> snapshot rows on ``con``, written to the Parquet file ``target``.

    ``con`` is any DuckDB connection holding ``INPUT_TABLES``: all customers (the warehouse) or one bucket
    of them (a Dask worker). The rows are sorted by ``customer_id``; columns and types are the same either way.
    """
    program = loaded.rules
    points_scale = _register_rules(con, loaded, vocab, month)
    calendar = program.calendar
    params = {
        "program": loaded.name,
        "month_start": month.first_day,
        "as_of": month.last_day,
        "points_scale": points_scale,
        "is_review": calendar.is_review_month(month.month),
        "default_failed_reviews": calendar.failed_reviews_default,
        "fall_to": calendar.fall_to,
        "meeting_resets_buffer": calendar.meeting_tier_resets_buffer,
        "cap_tier": program.caps.tier if program.caps else None,
        "next_review": calendar.next_review(month),
        "effective_from": calendar.effective_from(month),
        "rules_version": loaded.version,
    }
    seconds = {}
    started = time.perf_counter()
    built = runner.build(con, ["figure_measures"], **params)
    seconds["figures"] = time.perf_counter() - started
    started = time.perf_counter()
    runner.build(con, ["tier_decisions"], have=built, **params)
    seconds["decisions"] = time.perf_counter() - started
    undefined = _undefined_tiers(con)
    if undefined[0]:
        return Written(0, seconds, undefined)

    snapshot_sql = runner.sql_text("snapshot")
    # One pts_<figure> column per scored figure and one fig_<figure> per figure, in rule-file order;
    # names are validated identifiers.
    # (A program without points has no coefficients, so its points_num and points are NULL.)
    scored = [name for name in program.figures if program.points and name in program.points.rates]
    spread = "".join(f", pts_list[{i}] AS pts_{name}" for i, name in enumerate(scored, start=1))
    spread += "".join(f", fig_list[{i}] AS fig_{name}" for i, name in enumerate(program.figures, start=1))
    query = all_nullable(f"SELECT * EXCLUDE (pts_list, fig_list){spread} FROM ({snapshot_sql})")
    started = time.perf_counter()
    [(rows,)] = con.execute(
        f"COPY ({query}) TO {path_literal(target)} (FORMAT parquet, COMPRESSION zstd)",
        runner.bind(snapshot_sql, params),
    ).fetchall()
    seconds["write"] = time.perf_counter() - started
    return Written(rows, seconds, undefined)


def stage_snapshot(con: duckdb.DuckDBPyConnection, warehouse: Warehouse, loaded: LoadedProgram, month: Month,
                   run_id: str, written: Path, rows: int, seconds: dict[str, float], extra: dict | None = None) -> Path:
    """Put a written snapshot in run ``run_id``'s staging with its manifest (``extra`` adds keys to it);
    ``con`` is the warehouse's. Returns where the snapshot will be published."""
    started = time.perf_counter()
    target = snapshots.snapshot_path(warehouse, loaded.name, month)
    staged = snapshots.staged_snapshot_path(warehouse, run_id, loaded.name, month)
    if written != staged:
        staged.parent.mkdir(parents=True, exist_ok=True)
        os.replace(written, staged)
    snapshot_sha = sha256_file(staged)
    seconds = {**seconds, "stage": time.perf_counter() - started}
    snapshots.write_manifest(
        snapshots.staged_path(warehouse, run_id, snapshots.manifest_path(warehouse, loaded.name, month)),
        {**_manifest(con, loaded, month, target, snapshot_sha, rows, seconds, run_id), **(extra or {})},
    )
    return target


def evaluate(con: duckdb.DuckDBPyConnection, warehouse: Warehouse, loaded: LoadedProgram,
             vocab: Vocabularies, month: Month, run_id: str | None = None) -> Evaluated:
    """Evaluate ``loaded`` at ``month`` into run ``run_id``'s staging, which the run publishes with all its
    months (snapshots.commit_run); without a run, the month is published on its own at once."""
    if run_id is None:
        own_run = snapshots.new_run_id()
        evaluated = evaluate(con, warehouse, loaded, vocab, month, own_run)
        snapshots.commit_run(warehouse, own_run, {})
        return evaluated
    prev_path = predecessor(warehouse, loaded.name, month, run_id)
    if prev_path is not None:
        snapshots.verify_published(warehouse, prev_path)
    prev_query, prev_params = prev_snapshot_query(prev_path)
    con.execute(f"CREATE OR REPLACE TEMP TABLE prev_snapshot AS {prev_query}", prev_params)
    staged = snapshots.staged_snapshot_path(warehouse, run_id, loaded.name, month)
    staged.parent.mkdir(parents=True, exist_ok=True)
    written = write_snapshot(con, loaded, vocab, month, staged)
    check_tiers_defined(loaded, month, *written.undefined)
    target = stage_snapshot(con, warehouse, loaded, month, run_id, staged, written.rows, written.seconds)
    return Evaluated(loaded.name, str(month), str(target), written.rows, initial=prev_path is None)
