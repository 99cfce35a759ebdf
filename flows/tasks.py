"""The tasks of a run. Small arguments in (paths, month strings, program names), small values out
(counts and paths); each task opens its own connection to the warehouse.

``rules_file`` names one rule file to use instead of the programs in rules/ (a what-if's trial file).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from rules import load_programs, load_vocabularies
from rules.loader import LoadedProgram, load_program, load_valid_programs
from stores import warehouse as warehouse_module
from ground.errors import StateError
from ground.months import Month
from stores.warehouse import Warehouse
from transforms import evaluate as evaluation
from transforms import runner
from transforms import partitioned
from transforms.ingest import IngestResult, Ingestor
from transforms.landing import HashAhead


def _transient(task, task_run, state) -> bool:
    """Retry only I/O hiccups; a bad file or a broken chain of months fails the same way every time."""
    try:
        state.result()
    except OSError:
        return True
    except Exception:
        return False
    return False


def _programs(rules_file: str | None) -> list[LoadedProgram]:
    # By default every valid program in rules/ shapes the transaction sums, so one read of a month serves all.
    return [load_program(Path(rules_file))] if rules_file else load_valid_programs()


def _ingestor(con, input_dir: str, warehouse: Warehouse, rules_file: str | None, require_control: bool = False,
              ahead: HashAhead | None = None) -> Ingestor:
    return Ingestor(con, Path(input_dir), warehouse.quarantine, load_vocabularies(), _programs(rules_file),
                    require_control=require_control, ahead=ahead)


@task(name="ingest-reference", cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=2,
      retry_condition_fn=_transient)
def ingest_reference(input_dir: str, warehouse_dir: str, rules_file: str | None = None,
                     months_ahead: list[tuple[str, str]] | None = None, require_control: bool = False,
                     ahead: HashAhead | None = None) -> list[IngestResult]:
    """The reference files; then the files of ``months_ahead`` (dataset, month), which the run ingests
    next, start being hashed in the background (by ``ahead``, the run's, which its ingest_month tasks are
    given too). With ``require_control``, every one of those files must
    have its control file before anything is read."""
    warehouse = Warehouse(Path(warehouse_dir))
    months = [(dataset, Month.parse(month)) for dataset, month in months_ahead or []]
    with runner.connect(warehouse) as con:
        ingestor = _ingestor(con, input_dir, warehouse, rules_file, require_control, ahead)
        ingestor.check_ready(months)
        results = ingestor.ingest_all_reference()
        ingestor.hash_months_ahead(months)
        return results


@task(name="ingest-month", task_run_name="ingest-{dataset}-{month}", cache_policy=NO_CACHE, persist_result=False, retries=2,
      retry_delay_seconds=2, retry_condition_fn=_transient)
def ingest_month(input_dir: str, warehouse_dir: str, dataset: str, month: str, needed_by: str,
                 rules_file: str | None = None, require_control: bool = False,
                 ahead: HashAhead | None = None) -> IngestResult:
    warehouse = Warehouse(Path(warehouse_dir))
    with runner.connect(warehouse) as con:
        ingestor = _ingestor(con, input_dir, warehouse, rules_file, require_control, ahead)
        return ingestor.ingest_month(dataset, Month.parse(month), needed_by)


def load_program_or_file(program: str, rules_file: str | None) -> LoadedProgram:
    [loaded] = [load_program(Path(rules_file))] if rules_file else load_programs([program])
    return loaded


@task(name="evaluate", task_run_name="evaluate-{program}-{month}", cache_policy=NO_CACHE, persist_result=False, retries=2,
      retry_delay_seconds=2, retry_condition_fn=_transient)
def evaluate(warehouse_dir: str, program: str, month: str, rules_file: str | None = None,
             run_id: str | None = None) -> evaluation.Evaluated:
    """Evaluate into run ``run_id``'s staging, which the run publishes with all its months (snapshots.commit_run);
    without a run, the month is published on its own at once."""
    warehouse = Warehouse(Path(warehouse_dir))
    loaded = load_program_or_file(program, rules_file)
    with runner.connect(warehouse) as con:
        return evaluation.evaluate(con, warehouse, loaded, load_vocabularies(), Month.parse(month), run_id)


# -- a partitioned evaluation (--executor dask): these run in the coordinator, its buckets on the workers
#    (flows/fanout.py) -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class BucketRun:
    """What the bucket tasks of one program-month need: all small values."""

    run_dir: str  # absolute: the workers see the staging folder at the same path
    initial: bool
    rules_version: str
    memory_limit_bytes: int  # the coordinator's DuckDB limit, for each bucket's in-memory DuckDB


@task(name="export-buckets", task_run_name="export-{program}-{month}", cache_policy=NO_CACHE, persist_result=False, retries=2,
      retry_delay_seconds=2, retry_condition_fn=_transient)
def export_buckets(warehouse_dir: str, program: str, month: str, partitions: int, rules_file: str | None = None,
                   run_id: str | None = None) -> BucketRun:
    warehouse = Warehouse(Path(warehouse_dir))
    loaded = load_program_or_file(program, rules_file)
    run_dir = partitioned.new_run_dir(warehouse)
    try:
        with runner.connect(warehouse) as con:
            exported = partitioned.export(con, warehouse, loaded, Month.parse(month), run_dir, partitions, run_id)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return BucketRun(str(run_dir), exported.initial, loaded.version,
                     partitioned.memory_bytes(warehouse_module.DEFAULT_MEMORY_LIMIT))


@task(name="stage-buckets", task_run_name="stage-{program}-{month}", cache_policy=NO_CACHE, persist_result=False, retries=2,
      retry_delay_seconds=2, retry_condition_fn=_transient)
def stage_buckets(warehouse_dir: str, program: str, month: str, run: BucketRun, partitions: int, results: list[dict],
                  seconds: dict[str, float], executor: dict, run_id: str,
                  rules_file: str | None = None) -> evaluation.Evaluated:
    """The buckets' parts in one snapshot, ORDER BY customer_id, staged with its manifest in run ``run_id``."""
    warehouse = Warehouse(Path(warehouse_dir))
    loaded = load_program_or_file(program, rules_file)
    when = Month.parse(month)
    if loaded.version != run.rules_version:
        raise StateError(f"{program} {month}: {loaded.path} changed during the run ({run.rules_version} became "
                         f"{loaded.version}); nothing was published for this month, run it again")
    evaluation.check_tiers_defined(loaded, when, *partitioned.undefined_tiers(results))
    with runner.connect(warehouse) as con:
        started = time.perf_counter()
        staged, rows = partitioned.combine(con, warehouse, Path(run.run_dir), partitions)
        seconds = {**seconds, "combine": time.perf_counter() - started}
        target = evaluation.stage_snapshot(con, warehouse, loaded, when, run_id, staged, rows, seconds,
                                           extra={"executor": executor})
    return evaluation.Evaluated(program, month, str(target), rows, run.initial)
