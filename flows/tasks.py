"""The tasks of a run. Small arguments in (paths, month strings, program names), small values out
(counts and paths); each task opens its own connection to the warehouse.

``rules_file`` names one rule file to use instead of the programs in rules/ (a what-if's trial file).
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from rules import load_programs, load_vocabularies
from rules.loader import LoadedProgram, load_program
from tiers.months import Month
from tiers.warehouse import Warehouse
from transforms import evaluate as evaluation
from transforms.ingest import IngestResult, Ingestor


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
    # By default every program in rules/ shapes the transaction sums, so one read of a month serves all.
    return [load_program(Path(rules_file))] if rules_file else load_programs()


def _ingestor(con, input_dir: str, warehouse: Warehouse, rules_file: str | None) -> Ingestor:
    return Ingestor(con, Path(input_dir), warehouse.quarantine, load_vocabularies(), _programs(rules_file))


@task(name="ingest-reference", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2,
      retry_condition_fn=_transient)
def ingest_reference(input_dir: str, warehouse_dir: str, rules_file: str | None = None) -> list[IngestResult]:
    warehouse = Warehouse(Path(warehouse_dir))
    with warehouse.connect() as con:
        return _ingestor(con, input_dir, warehouse, rules_file).ingest_all_reference()


@task(name="ingest-month", task_run_name="ingest-{dataset}-{month}", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=2, retry_condition_fn=_transient)
def ingest_month(input_dir: str, warehouse_dir: str, dataset: str, month: str, needed_by: str,
                 rules_file: str | None = None) -> IngestResult:
    warehouse = Warehouse(Path(warehouse_dir))
    with warehouse.connect() as con:
        return _ingestor(con, input_dir, warehouse, rules_file).ingest_month(dataset, Month.parse(month), needed_by)


@task(name="evaluate", task_run_name="evaluate-{program}-{month}", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=2, retry_condition_fn=_transient)
def evaluate(warehouse_dir: str, program: str, month: str, rules_file: str | None = None) -> evaluation.Evaluated:
    warehouse = Warehouse(Path(warehouse_dir))
    [loaded] = [load_program(Path(rules_file))] if rules_file else load_programs([program])
    with warehouse.connect() as con:
        return evaluation.evaluate(con, warehouse, loaded, load_vocabularies(), Month.parse(month))
