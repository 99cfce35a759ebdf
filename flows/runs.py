"""The month-end run and the backfill: one body, two Prefect flows."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows import tasks
from flows.plan import plan_run
from flows.schedule import scheduled_month
from rules import load_programs
from tiers import snapshots
from tiers.errors import BadRowsError, TiersError
from tiers.months import Month
from tiers.progress import current
from tiers.warehouse import Warehouse
from transforms.quarantine import bad_rows_message


def _run(input_dir: str, first: str, last: str, warehouse_dir: str, programs: list[str] | None,
         max_bad_rows: int, wait_seconds: float) -> dict:
    input_path = Path(input_dir)
    if not input_path.is_dir():
        raise TiersError(f"{input_dir}: the landing folder does not exist")
    warehouse = Warehouse(Path(warehouse_dir))
    first_month, last_month = Month.parse(first), Month.parse(last)
    if last_month < first_month:
        raise TiersError(f"--to {last} is before --from {first}")
    with warehouse.writer_lock(wait_seconds):
        snapshots.clear_staging(warehouse)
        loaded = load_programs(programs)
        plan = plan_run(input_path, warehouse, loaded, first_month, last_month, programs_named=bool(programs))
        if not plan.evaluations:
            raise TiersError("no program can be evaluated: " + "; ".join(plan.skipped))

        progress = current()
        progress.stage("ingest", 1 + len(plan.ingest))
        progress.stage("evaluate", len(plan.evaluations))
        ingested = tasks.ingest_reference(input_dir, warehouse_dir)
        progress.advance("ingest", "reference files")
        for dataset, month, needed_by in plan.ingest:
            ingested.append(tasks.ingest_month(input_dir, warehouse_dir, dataset, str(month), needed_by))
            progress.advance("ingest", f"{dataset}/{month}")
        # Counted over every source this run uses, including months ingested by earlier runs.
        if sum(result.rows_quarantined for result in ingested) > max_bad_rows:
            raise BadRowsError(bad_rows_message(ingested, max_bad_rows, warehouse.quarantine))

        evaluated = []
        for month, program in plan.evaluations:
            evaluated.append(tasks.evaluate(warehouse_dir, program, str(month)))
            progress.advance("evaluate", f"{program} {month}")
    return {"ingested": ingested, "evaluated": evaluated, "skipped": plan.skipped}


@flow(name="tiers-month-end", log_prints=True)
def month_end(input_dir: str, month: str | None = None, warehouse_dir: str = "data/warehouse",
              programs: list[str] | None = None, max_bad_rows: int = 0, wait_seconds: float = 0) -> dict:
    """Evaluate one month-end (and re-evaluate every later published month, in order).

    Without ``month`` (a scheduled run), the month just ended at the run's scheduled time.
    """
    month = month or str(scheduled_month())
    return _run(input_dir, month, month, warehouse_dir, programs, max_bad_rows, wait_seconds)


@flow(name="tiers-backfill", log_prints=True)
def backfill(input_dir: str, first: str, last: str, warehouse_dir: str = "data/warehouse",
             programs: list[str] | None = None, max_bad_rows: int = 0, wait_seconds: float = 0) -> dict:
    """Evaluate every month from ``first`` to ``last`` in order, carrying state month to month."""
    return _run(input_dir, first, last, warehouse_dir, programs, max_bad_rows, wait_seconds)
