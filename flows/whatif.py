"""What if a program's rules changed? Evaluate a changed rule file over past months in a scratch
warehouse and compare its tiers, customer by customer, with the published snapshots.

    <warehouse>/scratch/whatif-<UTC timestamp>/   its own DuckDB, snapshots and quarantine,
                                                  rules.yaml (the file tried), movers.parquet, movers.csv

The published warehouse is only read: its snapshot folders are listed and its snapshot files read
(never its DuckDB file, nor its writer lock), so a what-if can run beside the month-end run; it writes
under <warehouse>/scratch/ only (data-contract.md section 3). The scratch warehouse is evaluated by the
run's own body (flows/runs.py, ``run_months``), with the copied rule file as its one program.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from rich.markup import escape
from rich.table import Table

from flows import tasks
from flows.plan import plan_run
from flows.runs import run_months
from rules.loader import load_program
from stores import snapshots
from ground.errors import TiersError
from ground.months import Month, month_range
from ground.paths import duckdb_path, path_literal
from stores.warehouse import Warehouse
from transforms import runner

SCRATCH_RULES = "rules.yaml"


def compare(scratch: Warehouse, published: Warehouse, program: str, months: list[Month]) -> dict:
    """Write ``movers.parquet`` and ``movers.csv`` into the scratch folder; return counts per move.

    A mover is a customer-month whose what-if tier differs from the published one (sql/whatif_movers.sql).
    Customers and customer-months are counted apart: over twelve months one customer can move in each."""
    # duckdb_path: DuckDB globs even a list of files; a warehouse named wh[1] must not read wh1's.
    files = {
        "published": [duckdb_path(snapshots.snapshot_path(published, program, m)) for m in months],
        "whatif": [duckdb_path(snapshots.snapshot_path(scratch, program, m)) for m in months],
    }
    parquet, csv = scratch.root / "movers.parquet", scratch.root / "movers.csv"
    with runner.connect(scratch) as con:
        runner.run(con, "whatif_movers", **files)
        con.execute(f"COPY movers TO {path_literal(parquet)} (FORMAT parquet, COMPRESSION zstd)")
        con.execute(f"COPY movers TO {path_literal(csv)} (FORMAT csv, HEADER)")
        counts = con.execute(
            "SELECT month, from_tier, from_tier_name, to_tier, to_tier_name, count(*) AS customers FROM movers "
            "GROUP BY ALL ORDER BY month, from_tier DESC NULLS LAST, to_tier DESC NULLS LAST"
        ).fetchall()
        [(customers_moved,)] = con.execute("SELECT count(DISTINCT customer_id) FROM movers").fetchall()
        # A customer on either side counts, once per month (as_of from the snapshot's path).
        [(compared, customer_months)] = con.execute(
            "SELECT count(DISTINCT customer_id), count(*) FROM ("
            "SELECT customer_id, as_of FROM read_parquet($published, hive_partitioning = true) "
            "UNION SELECT customer_id, as_of FROM read_parquet($whatif, hive_partitioning = true))",
            files,
        ).fetchall()
    keys = ("month", "from_tier", "from_tier_name", "to_tier", "to_tier_name", "customers")
    return {
        "movers_parquet": str(parquet),
        "movers_csv": str(csv),
        "counts": [dict(zip(keys, row)) for row in counts],
        "movers": sum(row[-1] for row in counts),  # customer-months whose tier would change
        "customers_moved": customers_moved,
        "customers_compared": compared,
        "customer_months_compared": customer_months,
    }


# -- tasks of its own (the rest is the run's body, on the scratch warehouse) --------------------------

@task(name="whatif-scratch", cache_policy=NO_CACHE)
def start_scratch(scratch_dir: str, warehouse_dir: str, rules_file: str, program: str, first: str) -> str | None:
    """A new scratch warehouse holding the rule file tried and, when published, the snapshot of the month
    before ``first``, so that month's evaluation continues from the real previous tiers; returns its source."""
    published, scratch = Warehouse(Path(warehouse_dir)), Warehouse(Path(scratch_dir))
    try:
        scratch.root.mkdir(parents=True)  # never reuse another what-if's folder
    except OSError as error:
        raise TiersError(f"{scratch.root}: cannot create the what-if's scratch folder ({error.strerror}); "
                         "it needs a writable <warehouse>/scratch") from None
    scratch.prepare()
    # A copy, which the run loads and its manifests name: explain reads the very file that was tried.
    shutil.copyfile(rules_file, scratch.root / SCRATCH_RULES)
    before = Month.parse(first).plus(-1)
    if before not in snapshots.published_months(published, program):
        return None
    source = snapshots.snapshot_path(published, program, before)
    target = snapshots.snapshot_path(scratch, program, before)
    target.parent.mkdir(parents=True)
    shutil.copyfile(source, target)
    # With its manifest: the scratch run checks the copy against it before it builds on it.
    manifest = snapshots.manifest_path(scratch, program, before)
    manifest.parent.mkdir(parents=True)
    shutil.copyfile(snapshots.manifest_path(published, program, before), manifest)
    return str(source)


@task(name="whatif-compare", cache_policy=NO_CACHE)
def compare_months(scratch_dir: str, warehouse_dir: str, program: str, months: list[str]) -> dict:
    return compare(Warehouse(Path(scratch_dir)), Warehouse(Path(warehouse_dir)), program,
                   [Month.parse(m) for m in months])


# -- the flow ---------------------------------------------------------------------------------------

@flow(name="tiers-whatif", log_prints=True)
def whatif(rules_file: str, input_dir: str, first: str, last: str, warehouse_dir: str = "data/warehouse",
           max_bad_rows: int = 0) -> dict:
    """Evaluate ``rules_file`` over first..last in a scratch warehouse; who would move against the published tiers."""
    loaded = load_program(Path(rules_file))  # a broken rule file fails before any scratch folder exists
    first_month, last_month = Month.parse(first), Month.parse(last)
    if last_month < first_month:
        raise TiersError(f"--to {last} is before --from {first}")
    if not Path(input_dir).is_dir():
        raise TiersError(f"{input_dir}: the landing folder does not exist")
    published = Warehouse(Path(warehouse_dir))
    months = month_range(first_month, last_month)
    on_record = set(snapshots.published_months(published, loaded.name))
    compared = [m for m in months if m in on_record]
    if not compared:
        raise TiersError(f"{loaded.name} has no published snapshot from {first} to {last} in {published.snapshots}; "
                         f"there is nothing to compare {rules_file} against")

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    scratch = Warehouse(published.root / "scratch" / f"whatif-{stamp}")
    scratch_dir = str(scratch.root)
    # Planned while the scratch folder does not exist yet, so a missing landing file leaves nothing behind;
    # the run body plans again, on the seeded scratch warehouse (the same months).
    plan_run(Path(input_dir), scratch, [loaded], first_month, last_month, programs_named=True)
    seeded_from = start_scratch(scratch_dir, warehouse_dir, rules_file, loaded.name, str(first_month))
    trial = scratch.root / SCRATCH_RULES
    run_months(input_dir, first, last, scratch, lambda: tasks.trial_programs(load_program(trial)), max_bad_rows,
               command="whatif")
    moved = compare_months(scratch_dir, warehouse_dir, loaded.name, [str(m) for m in compared])
    return {
        "program": loaded.name,
        "rules_file": str(rules_file),
        "rules_version": loaded.version,
        "first": str(first_month),
        "last": str(last_month),
        "scratch": scratch_dir,
        "seeded_from": seeded_from,
        "initial": seeded_from is None,  # first_month started from nothing, not from published tiers
        "months_unpublished": [str(m) for m in months if m not in on_record],
        **moved,
    }


def summary_table(result: dict) -> Table:
    """Moves per month and tier change; the caption says what was compared and where the movers are."""
    table = Table(title=escape(f"What if {result['program']} used {result['rules_file']} "
                               f"({result['first']}..{result['last']})"), title_justify="left", caption_justify="left")
    for column in ("month", "published tier", "what-if tier", "customers"):
        table.add_column(column, justify="right" if column == "customers" else "left")
    for row in result["counts"]:
        table.add_row(row["month"], _tier(row["from_tier"], row["from_tier_name"]),
                      _tier(row["to_tier"], row["to_tier_name"]), str(row["customers"]))
    customers, compared = result["customers_moved"], result["customers_compared"]
    moves, customer_months = result["movers"], result["customer_months_compared"]
    notes = [f"{customers:,} of {_noun(compared, 'customer')} would move, in {moves:,} of "
             f"{_noun(customer_months, 'customer-month')} compared"
             if moves else f"nobody would move ({_noun(compared, 'customer')}, "
                           f"{_noun(customer_months, 'customer-month')} compared)"]
    if result["initial"]:
        notes.append(f"{result['first']} is an initial evaluation: no published snapshot of the month before")
    if result["months_unpublished"]:
        notes.append("not compared, nothing published: " + ", ".join(result["months_unpublished"]))
    notes.append(f"who and why: {result['movers_csv']}")
    table.caption = escape("\n".join(notes))  # paths such as wh [x] are text, not rich markup
    # As wide as the longest note where the terminal allows, so the movers path is not folded.
    table.min_width = max(len(note) for note in notes)
    return table


def _noun(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def _tier(tier: int | None, name: str | None) -> str:
    return "-" if tier is None else f"{tier} {name}"
