"""``--executor dask``: each program-month's customers evaluated in buckets on a Dask cluster.

Only evaluation fans out. The coordinator (the process running the flow) keeps the warehouse's
DuckDB file, which one process alone may open: it ingests, exports each evaluation's inputs in buckets
to the staging folder, and combines and publishes the buckets' parts (transforms/partitioned.py). The
months, and the programs within a month, still run one after another, because month N+1 reads month
N's published snapshot; only the buckets of one program-month run at the same time.

``dask_cluster`` connects to the scheduler at ``--dask-address`` or starts a temporary LocalCluster (two
worker processes of one thread, no dashboard, on 127.0.0.1), and checks, before anything is ingested,
that every worker runs the same tiers code, reads and writes the staging folder at the same path, and
reaches the Prefect API that the bucket tasks report to; and that the scheduler and every worker can
unpickle what the bucket tasks carry (the task and the flow run's context, flow included: a flow loaded
from a file as module ``runs`` cannot be). It yields a ``Fanout`` whose prefect-dask
``DaskTaskRunner`` stays open for the whole run: each program-month maps ``evaluate_bucket`` over its
buckets with it (``DaskTaskRunner.map``, what ``task.map`` calls inside a flow whose task runner it is).
The flows keep their own task runner, so the run's one connection serves every month; a subflow per
program-month with its own task runner would cost about a second of Prefect bookkeeping each.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import shutil
import threading
import time
import uuid
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cloudpickle
import distributed
import duckdb
from prefect import task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect_dask import DaskTaskRunner

from flows import tasks
from ground.errors import TiersError
from ground.months import Month
from rules.loader import LoadedProgram, Vocabularies
from transforms.version import code_version
from stores.warehouse import Warehouse
from transforms import partitioned

# Seconds to reach the scheduler; TIERS_DASK_TIMEOUT overrides.
CONNECT_TIMEOUT = 10.0
# Seconds a run waits while the cluster has no worker (at the start, before each program-month, and
# while buckets are pending), then fails naming the scheduler; TIERS_DASK_WORKER_TIMEOUT overrides.
# Dask itself would wait for workers forever, and silently.
WORKER_TIMEOUT = 60.0
# The temporary cluster when no address is given: two worker processes, one thread each.
LOCAL_WORKERS = 2
# A worker's DuckDB gets TIERS_DUCKDB_MEMORY_LIMIT, but at most this share of the Dask worker's own
# limit: past 95% of it the nanny restarts the worker, while DuckDB spills to disk at its limit.
WORKER_MEMORY_SHARE = 0.5


@dataclass(frozen=True)
class Cluster:
    address: str  # the scheduler's address
    where: str  # how messages name it: the Dask scheduler at ..., or the temporary local cluster
    workers: int
    threads: int  # worker threads in all: the default number of buckets is twice this

    def default_partitions(self) -> int:
        return max(1, 2 * self.threads)


def _seconds(name: str, default: float) -> float:
    text = os.environ.get(name, str(default))
    try:
        value = float(text)
    except ValueError:
        value = -1
    if value <= 0:
        raise TiersError(f"{name}={text!r}: expected a number of seconds, such as {default:g}")
    return value


def _timeout() -> float:
    return _seconds("TIERS_DASK_TIMEOUT", CONNECT_TIMEOUT)


def worker_timeout() -> float:
    return _seconds("TIERS_DASK_WORKER_TIMEOUT", WORKER_TIMEOUT)


def one_line(error: BaseException) -> str:
    """The whole error on one line, with what caused it: Dask wraps what went wrong on the scheduler or a
    worker (a module it cannot import) in an error of its own, whose message spans several lines."""
    parts, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        text = " ".join(str(error).split())
        parts.append(f"{type(error).__name__}: {text}" if text else type(error).__name__)
        error = error.__cause__
    return "; caused by ".join(parts)


def _api_url() -> str | None:
    """The Prefect API the coordinator talks to; bucket tasks on the workers report to it too."""
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_API_URL

    configured = PREFECT_API_URL.value()
    if configured:
        return configured
    # Without PREFECT_API_URL, Prefect started a temporary server for this process (on 127.0.0.1).
    context = FlowRunContext.get()
    if context and context.client:
        return str(context.client.api_url).rstrip("/")
    return None


@contextmanager
def _temporary_api_url(url: str | None) -> Iterator[None]:
    """Tasks sent to Dask carry the coordinator's Prefect settings. Without PREFECT_API_URL each worker
    would start a temporary Prefect server of its own, so name the coordinator's for the run."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if url is None or PREFECT_API_URL.value():
        yield
        return
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield


def worker_check(probe: str, token: str, api_url: str | None) -> dict:
    """Runs on each worker (Client.run): its code version, the staging folder, the Prefect API."""
    report = {"code_version": code_version(), "duckdb": duckdb.__version__, "storage": None, "api": None, "wrote": None}
    probe_file = Path(probe)
    try:
        if probe_file.read_text(encoding="utf-8") != token:
            report["storage"] = f"{probe_file} holds something else than this run wrote"
        else:
            wrote = probe_file.with_name(f"worker-{uuid.uuid4().hex}")
            wrote.write_text(token, encoding="utf-8")
            report["wrote"] = str(wrote)
    except OSError as error:
        report["storage"] = f"cannot read and write {probe_file.parent} ({error.strerror or error})"
    if api_url:
        import httpx

        try:
            httpx.get(f"{api_url}/health", timeout=5)
        except httpx.HTTPError as error:
            report["api"] = f"cannot reach the Prefect API at {api_url} ({one_line(error)})"
    return report


def _check_workers(client: distributed.Client, address: str, warehouse: Warehouse, api_url: str | None) -> None:
    """Before anything is ingested: every worker can run this code on this warehouse's staging folder."""
    probe_dir = warehouse.staging.resolve() / f"dask-probe-{uuid.uuid4().hex}"
    probe_dir.mkdir(parents=True)
    token = uuid.uuid4().hex
    (probe_dir / "coordinator").write_text(token, encoding="utf-8")
    try:
        try:
            reports = client.run(worker_check, str(probe_dir / "coordinator"), token, api_url)
        except Exception as error:  # e.g. the worker cannot import this project
            raise TiersError(
                f"a Dask worker of {address} cannot run the tiers code ({one_line(error)}); install this "
                "project and its requirements.lock in every worker's Python environment (docs/dask.md)"
            ) from None
        mine = code_version()
        for worker, report in sorted(reports.items()):
            if report["code_version"] != mine or report["duckdb"] != duckdb.__version__:
                raise TiersError(
                    f"Dask worker {worker} runs tiers {report['code_version']} with DuckDB {report['duckdb']}, this "
                    f"process tiers {mine} with DuckDB {duckdb.__version__}; install the same version everywhere"
                )
            if report["storage"] or not (report["wrote"] and Path(report["wrote"]).is_file()):
                problem = report["storage"] or f"what it wrote ({report['wrote']}) is not visible here"
                raise TiersError(
                    f"Dask worker {worker}: {problem}; the warehouse's staging folder {warehouse.staging.resolve()} "
                    "must be on storage every worker reads and writes at the same path (docs/dask.md)"
                )
            if report["api"]:
                raise TiersError(
                    f"Dask worker {worker} {report['api']}; set PREFECT_API_URL to a Prefect server that "
                    "the workers can reach (docs/dask.md)"
                )
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)


def shipped_payload() -> bytes:
    """What each bucket task carries to the cluster, pickled as prefect-dask pickles it: the task, and the
    flow run's context, which holds the flow itself. A flow loaded from a file (a deployment whose
    entrypoint is flows/runs.py:month_end) lives in a module named ``runs``, pickled by that name."""
    from prefect.context import serialize_context

    return cloudpickle.dumps({"task": evaluate_bucket, "context": serialize_context()})


def load_shipped(payload: bytes) -> str | None:
    """Runs on the scheduler (which unpickles every task it is sent) and on each worker: None, or why the
    payload cannot be unpickled there."""
    try:
        pickle.loads(payload)
    except Exception as error:
        return one_line(error)
    return None


def _loaded_from_file_advice(problem: str) -> str:
    """When the unknown module is the flow's own: say how to deploy it so that the cluster can import it."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    flow = context.flow if context else None
    module = getattr(getattr(flow, "fn", None), "__module__", None)
    if not module or f"No module named '{module}'" not in problem:
        return ""
    return (f"the flow {flow.name} was loaded from a file as module {module!r}, which only this process knows: "
            f"deploy it by its module path, entrypoint flows.runs.{flow.fn.__name__} as in prefect.yaml, "
            "not by a file path such as flows/runs.py")


def _check_shipping(client: distributed.Client, where: str) -> None:
    """Before anything is ingested: the scheduler and every worker can unpickle what a bucket task carries.
    Otherwise the first bucket would fail with Dask's deserialization error, its cause only in the
    scheduler's log."""
    payload = shipped_payload()
    scheduler = where if where.startswith("the Dask scheduler") else f"the scheduler of {where}"
    try:
        problems = {scheduler: client.run_on_scheduler(load_shipped, payload)}
    except Exception as error:  # the scheduler cannot even import this project
        problems = {scheduler: one_line(error)}
    try:
        problems.update({f"Dask worker {worker}": problem
                         for worker, problem in sorted(client.run(load_shipped, payload).items())})
    except Exception as error:
        problems[f"a Dask worker of {where}"] = one_line(error)
    for who, problem in problems.items():
        if problem:
            advice = (_loaded_from_file_advice(problem)
                      or "the scheduler and every worker must run in this project's environment")
            raise TiersError(f"{who} cannot load the tasks this run sends it ({problem}); {advice} (docs/dask.md)")


def _no_workers(where: str, address: str, timeout: float, doing: str = "", then: str = "") -> TiersError:
    return TiersError(f"{doing}{where} has had no workers for {timeout:g} s (TIERS_DASK_WORKER_TIMEOUT){then}; "
                      f"start some with `dask worker {address}` (docs/dask.md)")


def _unreachable(address: str, timeout: float, error: BaseException) -> TiersError:
    return TiersError(f"--dask-address {address}: cannot reach a Dask scheduler there within {timeout:g} s "
                      f"({one_line(error)}); start one with `dask scheduler` (docs/dask.md)")


def check_reachable(address: str) -> None:
    """Connect to the scheduler and leave: the command line calls this before Prefect starts, so that a
    wrong address fails in a second or two rather than after the run has started."""
    timeout = _timeout()
    try:
        with distributed.Client(address, timeout=timeout, set_as_default=False):
            pass
    except Exception as error:
        raise _unreachable(address, timeout, error) from None


@contextmanager
def dask_cluster(address: str | None, warehouse: Warehouse, partitions: int | None = None) -> Iterator["Fanout"]:
    """The scheduler at ``address``, or a temporary local cluster closed on exit; checked before use.

    ``partitions`` buckets per program-month; by default twice the cluster's worker threads."""
    timeout = _timeout()
    with ExitStack() as stack:
        if address is None:
            try:
                local = stack.enter_context(distributed.LocalCluster(
                    n_workers=LOCAL_WORKERS, threads_per_worker=1, processes=True, host="127.0.0.1",
                    # No dashboard; the scheduler's small HTTP server (health, metrics) on any free local port.
                    dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                    silence_logs=logging.ERROR,
                ))
            except Exception as error:
                raise TiersError(f"could not start a local Dask cluster ({one_line(error)})") from None
            address = local.scheduler_address
            where = f"the temporary local Dask cluster at {address}"
        else:
            where = f"the Dask scheduler at {address}"
        runner = stack.enter_context(DaskTaskRunner(address=address, client_kwargs={"timeout": timeout}))
        try:
            client = runner.client  # connects
        except Exception as error:
            if where.startswith("the temporary"):
                raise TiersError(f"cannot connect to {where} ({one_line(error)})") from None
            raise _unreachable(address, timeout, error) from None
        waiting = worker_timeout()
        try:
            client.wait_for_workers(1, timeout=waiting)
        except TimeoutError:
            raise _no_workers(where, address, waiting) from None
        nthreads = client.nthreads()
        cluster = Cluster(address, where, len(nthreads), sum(nthreads.values()))
        api_url = _api_url()
        _check_workers(client, address, warehouse, api_url)
        _check_shipping(client, where)
        stack.enter_context(_temporary_api_url(api_url))
        yield Fanout(runner, cluster, partitions or cluster.default_partitions())


def _memory_limit_bytes(coordinator_limit: int) -> int:
    """The coordinator's DuckDB limit, capped by a share of this Dask worker's memory limit."""
    try:
        worker_limit = distributed.get_worker().memory_manager.memory_limit
    except (ValueError, AttributeError):  # not on a Dask worker (e.g. a thread pool)
        worker_limit = None
    if worker_limit:
        return min(coordinator_limit, int(worker_limit * WORKER_MEMORY_SHARE))
    return coordinator_limit


@task(name="evaluate-bucket", task_run_name="evaluate-{loaded.name}-{month}-bucket-{bucket}", cache_policy=NO_CACHE,
      persist_result=False, retries=2, retry_delay_seconds=2, retry_condition_fn=tasks._transient)
def evaluate_bucket(run_dir: str, bucket: int, loaded: LoadedProgram, vocab: Vocabularies, month: str,
                    memory_limit_bytes: int) -> dict:
    """One bucket of customers, on whichever worker runs it. The program and vocabularies are the run's
    own, pickled with the task: the rule tables are rebuilt here from them, never from a worker's files."""
    return partitioned.evaluate_bucket(Path(run_dir), bucket, loaded, vocab, Month.parse(month),
                                       _memory_limit_bytes(memory_limit_bytes))


class Fanout:
    """Evaluates one program-month at a time in buckets on the cluster behind ``runner`` (already open)."""

    def __init__(self, runner: DaskTaskRunner, cluster: Cluster, partitions: int):
        self.runner, self.cluster, self.partitions = runner, cluster, partitions
        self.worker_timeout = worker_timeout()

    def _await_workers(self, doing: str) -> None:
        """Before a program-month: at least one worker, or wait for one, up to the worker timeout."""
        client = self.runner.client
        if client.nthreads():
            return
        try:
            client.wait_for_workers(1, timeout=self.worker_timeout)
        except TimeoutError:
            raise _no_workers(self.cluster.where, self.cluster.address, self.worker_timeout, doing) from None

    def _await_buckets(self, futures: list, doing: str) -> None:
        """Until every bucket is done. Dask keeps a task whose worker is gone waiting for another worker,
        however long: with no worker for the worker timeout, the buckets are cancelled and the month fails."""
        client = self.runner.client
        pending = [future.wrapped_future for future in futures]
        left, lock, done = len(pending), threading.Lock(), threading.Event()

        def finished(_future) -> None:
            nonlocal left
            with lock:
                left -= 1
                if left == 0:
                    done.set()

        for future in pending:
            future.add_done_callback(finished)
        poll = min(1.0, self.worker_timeout / 4)
        alone_since = None
        while not done.wait(poll):
            try:
                workers = client.nthreads()
            except Exception:  # the scheduler itself is unreachable: no worker either, as far as this run goes
                workers = {}
            if workers:
                alone_since = None
                continue
            alone_since = alone_since or time.monotonic()
            if time.monotonic() - alone_since >= self.worker_timeout:
                error = _no_workers(self.cluster.where, self.cluster.address, self.worker_timeout,
                                    f"{doing}: {len(pending) - left} of {len(pending)} buckets done, and ",
                                    "; nothing was published for this month")
                client.cancel(pending)  # so that a worker joining later does not run them
                raise error

    def evaluate(self, run: tasks.RunContext, program: str, month: str, run_id: str):
        """Export the program-month in buckets, evaluate them on the workers, stage the whole in run ``run_id``."""
        # The workers see the staging folder at the same path, not this process's working directory.
        run = dataclasses.replace(run, warehouse=Warehouse(run.warehouse.root.resolve()))
        partitions = self.partitions
        self._await_workers(f"{program} {month}: ")
        started = time.perf_counter()
        exported = tasks.export_buckets(run, program, month, partitions, run_id)
        seconds = {"export": time.perf_counter() - started}
        try:
            started = time.perf_counter()
            futures = self.runner.map(evaluate_bucket, {
                "run_dir": unmapped(exported.run_dir), "bucket": range(partitions),
                "loaded": unmapped(run.programs.program(program)), "vocab": unmapped(run.vocab),
                "month": unmapped(month), "memory_limit_bytes": unmapped(exported.memory_limit_bytes),
            })
            self._await_buckets(futures, f"{program} {month}")
            results = []
            for bucket, future in enumerate(futures):
                try:
                    results.append(future.result())
                except TiersError:
                    raise
                except Exception as error:
                    raise TiersError(
                        f"{program} {month}: bucket {bucket} of {partitions} failed on the Dask cluster at "
                        f"{self.cluster.address} ({one_line(error)}); nothing was published for this month"
                    ) from None
            seconds["evaluate"] = time.perf_counter() - started
            executor = {"name": "dask", "scheduler": self.cluster.address, "partitions": partitions,
                        "bucket_seconds": {stage: round(sum(r["seconds"].get(stage, 0) for r in results), 3)
                                           for stage in ("load", "figures", "decisions", "write")}}
            return tasks.stage_buckets(run, program, month, exported, partitions, results, seconds, executor, run_id)
        finally:
            shutil.rmtree(exported.run_dir, ignore_errors=True)
