"""The month-end run and the backfill: one body, two Prefect flows."""

from __future__ import annotations

import shutil
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Callable, Iterator

from prefect import flow

from flows import tasks
from flows.plan import plan_run
from flows.schedule import scheduled_month
from flows.waiting import wait_for_files
from rules import load_programs
from stores import run_log
from stores import snapshots
from ground.errors import BadRowsError, TiersError
from ground.months import Month
from ground.progress import current
from stores.warehouse import Warehouse
from transforms.landing import HashAhead
from transforms.quarantine import bad_rows_message


EXECUTORS = ("local", "dask")


def check_executor(executor: str, dask_address: str | None, partitions: int | None) -> None:
    if executor not in EXECUTORS:
        raise TiersError(f"--executor {executor}: expected local or dask")
    if executor == "local" and (dask_address or partitions):
        option = "--dask-address" if dask_address else "--partitions"
        raise TiersError(f"{option} needs --executor dask")
    if partitions is not None and partitions < 1:
        raise TiersError(f"--partitions {partitions}: expected at least 1")


@contextmanager
def _evaluator(executor: str, dask_address: str | None, partitions: int | None, warehouse: Warehouse,
               warehouse_dir: str) -> Iterator[Callable[[str, str, str], object]]:
    """How each (program, month) is evaluated: by a task in this process, or in buckets on a Dask cluster
    (started or reached, and checked, before anything is ingested; closed when the run ends)."""
    if executor == "local":
        yield lambda program, month, run_id: tasks.evaluate(warehouse_dir, program, month, run_id=run_id)
        return
    from flows import fanout  # Dask is imported only when it is used

    with fanout.dask_cluster(dask_address, warehouse, partitions) as fan:
        yield lambda program, month, run_id: fan.evaluate(warehouse_dir, program, month, run_id)


def _run(input_dir: str, first: str, last: str, warehouse_dir: str, programs: list[str] | None,
         max_bad_rows: int, wait_seconds: float, executor: str = "local", dask_address: str | None = None,
         partitions: int | None = None, require_control: bool = False, command: str = "run") -> dict:
    input_path = Path(input_dir)
    if not input_path.is_dir():
        raise TiersError(f"{input_dir}: the landing folder does not exist")
    check_executor(executor, dask_address, partitions)
    warehouse = Warehouse(Path(warehouse_dir))
    first_month, last_month = Month.parse(first), Month.parse(last)
    if last_month < first_month:
        raise TiersError(f"--to {last} is before --from {first}")
    with warehouse.writer_lock(wait_seconds):
        record = run_log.RunRecord(snapshots.new_run_id(), command)
        try:
            result = _locked_run(input_path, warehouse, first_month, last_month, programs, max_bad_rows,
                                 executor, dask_address, partitions, require_control, record)
        except BaseException as error:
            # Before its journal, nothing of this run is published and what it staged goes now (a kill's, at
            # the next run). After it, the staged months are the journal's: the next run publishes them.
            if not snapshots.journaled(warehouse, record.run_id):
                shutil.rmtree(snapshots.run_dir(warehouse, record.run_id), ignore_errors=True)
            with suppress(Exception):  # a full disk must not hide the error that stopped the run
                run_log.write(warehouse, record, "failed", str(error) or type(error).__name__)
            raise
        run_log.write(warehouse, record, "succeeded", "; ".join(result["skipped"] + result["resumed"]))
    return result


def _locked_run(input_path: Path, warehouse: Warehouse, first_month: Month, last_month: Month,
                programs: list[str] | None, max_bad_rows: int, executor: str, dask_address: str | None,
                partitions: int | None, require_control: bool, record: run_log.RunRecord) -> dict:
    """The run, holding the writer lock: evaluate into this run's staging, then publish every month at once."""
    input_dir, warehouse_dir, run_id = str(input_path), str(warehouse.root), record.run_id
    progress = current()
    finished = snapshots.recover(warehouse)
    if finished:
        progress.note(f"finished publishing run {finished}, which had stopped part-way through its months")
    loaded = load_programs(programs)
    plan = plan_run(input_path, warehouse, loaded, first_month, last_month, programs_named=bool(programs),
                    unfinished=snapshots.unfinished_cascades(warehouse))
    record.months = sorted({str(month) for month, _ in plan.evaluations})
    record.programs = sorted({program for _, program in plan.evaluations})
    for note in plan.skipped + plan.resumed:
        progress.note(note)
    if not plan.evaluations:
        raise TiersError("no program can be evaluated: " + "; ".join(plan.skipped))
    # Before any data is replaced: should this run stop, the next one re-evaluates these months too.
    snapshots.record_cascade(warehouse, run_id, plan.firsts)
    with _evaluator(executor, dask_address, partitions, warehouse, warehouse_dir) as evaluate:
        progress.stage("ingest", 1 + len(plan.ingest))
        progress.stage("evaluate", len(plan.evaluations))
        ahead = HashAhead()  # this run's files hashed ahead of their ingestion
        ingested = tasks.ingest_reference(input_dir, warehouse_dir,
                                          months_ahead=[(dataset, str(month)) for dataset, month, _ in plan.ingest],
                                          require_control=require_control, ahead=ahead)
        progress.advance("ingest", "reference files")
        for dataset, month, needed_by in plan.ingest:
            ingested.append(tasks.ingest_month(input_dir, warehouse_dir, dataset, str(month), needed_by,
                                               require_control=require_control, ahead=ahead))
            progress.advance("ingest", f"{dataset}/{month}")
        files = [f for result in ingested for f in result.files]
        record.rows_read = sum(f.rows_read for f in files)
        record.rows_used = sum(f.rows_used for f in files)
        record.rows_quarantined = sum(f.rows_quarantined for f in files)
        # Counted over every source this run uses, including months ingested by earlier runs.
        if record.rows_quarantined > max_bad_rows:
            raise BadRowsError(bad_rows_message(ingested, max_bad_rows, warehouse.quarantine))

        evaluated = []
        # One month after another (each reads the snapshot of the one before, as this run staged it); with
        # Dask, each program-month's customers fan out in buckets.
        for month, program in plan.evaluations:
            evaluated.append(evaluate(program, str(month), run_id))
            progress.advance("evaluate", f"{program} {month}")
    snapshots.note_in_manifests(warehouse, run_id, {"skipped_programs": plan.skipped})
    snapshots.commit_run(warehouse, run_id, plan.firsts)
    return {"run_id": run_id, "ingested": ingested, "evaluated": evaluated, "skipped": plan.skipped,
            "resumed": plan.resumed}


@flow(name="tiers-month-end", log_prints=True, persist_result=False)
def month_end(input_dir: str, month: str | None = None, warehouse_dir: str = "data/warehouse",
              programs: list[str] | None = None, max_bad_rows: int = 0, wait_seconds: float = 0,
              executor: str = "local", dask_address: str | None = None, partitions: int | None = None,
              require_control: bool = False, poll_seconds: float = 900, deadline: str | float | None = None) -> dict:
    """Evaluate one month-end (and re-evaluate every later published month, in order).

    Without ``month`` (a scheduled run), the month just ended at the run's scheduled time. ``executor``
    ``dask`` evaluates each program-month in ``partitions`` buckets of customers on the Dask scheduler at
    ``dask_address`` (default: a temporary local cluster); see docs/dask.md. With a ``deadline`` (a time
    of day such as ``"12:00"`` in the schedule's time zone, or seconds), the month's files are waited for
    first, checked every ``poll_seconds`` (flows/waiting.py).
    """
    month = month or str(scheduled_month())
    if deadline is not None:  # before the writer lock: waiting must not hold up other runs
        wait_for_files(input_dir, month, programs, require_control, poll_seconds, deadline)
    return _run(input_dir, month, month, warehouse_dir, programs, max_bad_rows, wait_seconds,
                executor, dask_address, partitions, require_control)


@flow(name="tiers-backfill", log_prints=True, persist_result=False)
def backfill(input_dir: str, first: str, last: str, warehouse_dir: str = "data/warehouse",
             programs: list[str] | None = None, max_bad_rows: int = 0, wait_seconds: float = 0,
             executor: str = "local", dask_address: str | None = None, partitions: int | None = None,
             require_control: bool = False) -> dict:
    """Evaluate every month from ``first`` to ``last`` in order, carrying state month to month."""
    return _run(input_dir, first, last, warehouse_dir, programs, max_bad_rows, wait_seconds,
                executor, dask_address, partitions, require_control, command="backfill")
