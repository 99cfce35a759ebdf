"""The tasks of a run. Each takes the run's ``RunContext``: the warehouse and the programs, loaded once
for the whole run (``Programs``), and the landing folder. Small values out (counts and paths); each task
opens its own connection to the warehouse, so what it staged in DuckDB's memory goes when it ends.

A ``RunContext`` is a task parameter like any other: Prefect only walks it for futures (there are none)
and hashes nothing (NO_CACHE). The bucket tasks of the Dask path get the loaded program and vocabularies
themselves, pickled with the task, so a worker reads no rule file (flows/fanout.py).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from rules import load_programs, load_vocabularies
from rules.loader import LoadedProgram, Vocabularies, load_valid_programs
from stores import warehouse as warehouse_module
from ground.months import Month
from stores.warehouse import Warehouse
from transforms import evaluate as evaluation
from transforms import runner
from transforms import partitioned
from transforms.ingest import IngestResult, Ingestor
from transforms.landing import HashAhead


@dataclass(frozen=True)
class Programs:
    """The programs a run evaluates, and those whose transaction sums its ingestion keeps."""

    evaluated: tuple[LoadedProgram, ...]
    summed: tuple[LoadedProgram, ...]
    named: bool  # named by the user: a month missing from a window fails the run instead of skipping

    def program(self, name: str) -> LoadedProgram:
        [loaded] = [p for p in self.evaluated if p.name == name]
        return loaded


def rules_dir_programs(names: list[str] | None) -> Programs:
    """The named programs of the rules folder (default: all of them). Every valid program there shapes
    the transaction sums, so one read of a month serves all."""
    evaluated = load_programs(names)
    valid = load_valid_programs() if names else evaluated
    summed = {p.name: p for p in valid} | {p.name: p for p in evaluated}
    return Programs(tuple(evaluated), tuple(summed.values()), named=bool(names))


def trial_programs(loaded: LoadedProgram) -> Programs:
    """A what-if's: the one rule file tried, which alone shapes the scratch warehouse's sums."""
    return Programs((loaded,), (loaded,), named=True)


@dataclass(frozen=True)
class RunContext:
    """What every task of one run shares."""

    warehouse: Warehouse
    programs: Programs
    vocab: Vocabularies
    input_dir: Path
    require_control: bool = False
    ahead: HashAhead | None = None  # the run's landing files hashed ahead of their ingestion


def run_context(warehouse: Warehouse, programs: Programs, input_dir: Path, require_control: bool = False) -> RunContext:
    return RunContext(warehouse, programs, load_vocabularies(), Path(input_dir), require_control, HashAhead())


def _transient(task, task_run, state) -> bool:
    """Retry only I/O hiccups; a bad file or a broken chain of months fails the same way every time."""
    try:
        state.result()
    except OSError:
        return True
    except Exception:
        return False
    return False


def _ingestor(con, run: RunContext) -> Ingestor:
    return Ingestor(con, run.input_dir, run.warehouse.quarantine, run.vocab, list(run.programs.summed),
                    require_control=run.require_control, ahead=run.ahead)


@task(name="ingest-reference", cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=2,
      retry_condition_fn=_transient)
def ingest_reference(run: RunContext, months_ahead: list[tuple[str, str]] | None = None) -> list[IngestResult]:
    """The reference files; then the files of ``months_ahead`` (dataset, month), which the run ingests
    next, start being hashed in the background (by ``ahead``, the run's, which its ingest_month tasks are
    given too). With ``require_control``, every one of those files must
    have its control file before anything is read."""
    months = [(dataset, Month.parse(month)) for dataset, month in months_ahead or []]
    with runner.connect(run.warehouse) as con:
        ingestor = _ingestor(con, run)
        ingestor.check_ready(months)
        results = ingestor.ingest_all_reference()
        ingestor.hash_months_ahead(months)
        return results


@task(name="ingest-month", task_run_name="ingest-{dataset}-{month}", cache_policy=NO_CACHE, persist_result=False, retries=2,
      retry_delay_seconds=2, retry_condition_fn=_transient)
def ingest_month(run: RunContext, dataset: str, month: str, needed_by: str) -> IngestResult:
    with runner.connect(run.warehouse) as con:
        return _ingestor(con, run).ingest_month(dataset, Month.parse(month), needed_by)


@task(name="evaluate", task_run_name="evaluate-{program}-{month}", cache_policy=NO_CACHE, persist_result=False, retries=2,
      retry_delay_seconds=2, retry_condition_fn=_transient)
def evaluate(run: RunContext, program: str, month: str, run_id: str) -> evaluation.Evaluated:
    """Evaluate into run ``run_id``'s staging, which the run publishes with all its months (snapshots.commit_run)."""
    with runner.connect(run.warehouse) as con:
        return evaluation.evaluate(con, run.warehouse, run.programs.program(program), run.vocab, Month.parse(month),
                                   run_id)


# -- a partitioned evaluation (--executor dask): these run in the coordinator, its buckets on the workers
#    (flows/fanout.py) -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class BucketRun:
    """What the bucket tasks of one program-month need: all small values."""

    run_dir: str  # absolute: the workers see the staging folder at the same path
    initial: bool
    memory_limit_bytes: int  # the coordinator's DuckDB limit, for each bucket's in-memory DuckDB


@task(name="export-buckets", task_run_name="export-{program}-{month}", cache_policy=NO_CACHE, persist_result=False, retries=2,
      retry_delay_seconds=2, retry_condition_fn=_transient)
def export_buckets(run: RunContext, program: str, month: str, partitions: int, run_id: str) -> BucketRun:
    run_dir = partitioned.new_run_dir(run.warehouse)
    try:
        with runner.connect(run.warehouse) as con:
            exported = partitioned.export(con, run.warehouse, run.programs.program(program), Month.parse(month),
                                          run_dir, partitions, run_id)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return BucketRun(str(run_dir), exported.initial, partitioned.memory_bytes(warehouse_module.DEFAULT_MEMORY_LIMIT))


@task(name="stage-buckets", task_run_name="stage-{program}-{month}", cache_policy=NO_CACHE, persist_result=False, retries=2,
      retry_delay_seconds=2, retry_condition_fn=_transient)
def stage_buckets(run: RunContext, program: str, month: str, exported: BucketRun, partitions: int,
                  results: list[dict], seconds: dict[str, float], executor: dict, run_id: str) -> evaluation.Evaluated:
    """The buckets' parts in one snapshot, ORDER BY customer_id, staged with its manifest in run ``run_id``."""
    loaded = run.programs.program(program)
    when = Month.parse(month)
    evaluation.check_tiers_defined(loaded, when, *partitioned.undefined_tiers(results))
    with runner.connect(run.warehouse) as con:
        started = time.perf_counter()
        staged, rows = partitioned.combine(con, run.warehouse, Path(exported.run_dir), partitions)
        seconds = {**seconds, "combine": time.perf_counter() - started}
        target = evaluation.stage_snapshot(con, run.warehouse, loaded, when, run_id, staged, rows, seconds,
                                           extra={"executor": executor})
    return evaluation.Evaluated(program, month, str(target), rows, exported.initial)
