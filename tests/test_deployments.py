"""Deployments with ``executor=dask``, against a real cluster: a ``dask scheduler`` and two ``dask worker``
processes started with docs/dask.md's commands, in a folder where nothing but the installed project is
importable (as on a cluster's machines).

- The cluster's processes listen on 127.0.0.1 only, their HTTP servers included.
- The month-end deployment, served by ``python -m flows.serve`` and run through the Prefect API, publishes
  the snapshots of a local run, row for row.
- A flow loaded from its file (entrypoint flows/runs.py:month_end, module ``runs``) is refused by the
  pre-flight check, in one line naming the module, before anything is ingested.
- A task the scheduler cannot unpickle fails in one line holding Dask's whole message and its cause.
- With every worker gone, a run fails after TIERS_DASK_WORKER_TIMEOUT naming the scheduler.

Without a cluster: the entrypoints load the flows of ``flows.runs``, and what a task carries then
unpickles in a fresh interpreter (a file-loaded flow's does not); `prefect deploy --all` registers
prefect.yaml's deployments by module path, and flows.serve then refuses to serve beside them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import yaml

from test_dask_executor import GOLDEN, assert_same_snapshots, buffers_single, icbc_run  # noqa: F401 (a fixture)
from stores import snapshots
from ground.errors import TiersError
from ground.months import Month
from stores.warehouse import Warehouse

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DOCS = PROJECT / "docs" / "dask.md"
LANDING = GOLDEN / "icbc_buffers" / "landing"


def quiet_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "DO_NOT_TRACK": "1", **extra}
    env.pop("PYTHONPATH", None)  # nothing importable but the installed project
    return env


# -- offline ---------------------------------------------------------------------------------------------

UNPICKLE = textwrap.dedent("""
    import pickle, sys
    for line in sys.stdin.buffer.read().split(b"\\n--\\n"):
        try:
            pickle.loads(bytes.fromhex(line.decode()))
            print("ok")
        except Exception as error:
            print(type(error).__name__ + ": " + str(error))
""")


def test_entrypoints_load_the_flows_of_flows_runs_which_unpickle_anywhere(tmp_path):
    """What prefect-dask ships with each task (the task and the flow run's context, flow included),
    pickled in this process and unpickled in a fresh one elsewhere: fine for every deployment's
    entrypoint; a flow loaded from flows/runs.py is module `runs`, which no other process can import."""
    import cloudpickle
    from prefect.flows import load_flow_from_entrypoint

    from flows import fanout, runs
    from flows.serve import deployments

    declared = [d["entrypoint"] for d in yaml.safe_load((PROJECT / "prefect.yaml").read_text())["deployments"]]
    served = [d.entrypoint for d in deployments("/srv/landing", "/srv/warehouse")]
    assert declared == served == ["flows.runs.month_end", "flows.runs.backfill"]
    flows = [load_flow_from_entrypoint(entrypoint) for entrypoint in declared]
    assert flows == [runs.month_end, runs.backfill] and {f.fn.__module__ for f in flows} == {"flows.runs"}

    # The file-loaded flow, in a child process so that this one's modules stay as they are.
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, cloudpickle; from prefect.flows import load_flow_from_entrypoint; "
         "flow = load_flow_from_entrypoint(sys.argv[1]); print(flow.fn.__module__); "
         "print(cloudpickle.dumps({'flow': flow}).hex())", f"{PROJECT / 'flows' / 'runs.py'}:month_end"],
        cwd=tmp_path, env=quiet_env(), capture_output=True, text=True, timeout=120, check=True,
    ).stdout.split()
    assert loaded[0] == "runs"
    payloads = [cloudpickle.dumps({"task": fanout.evaluate_bucket, "flow": flow}).hex() for flow in flows]
    unpickled = subprocess.run([sys.executable, "-c", UNPICKLE], input="\n--\n".join(payloads + [loaded[1]]),
                               cwd=tmp_path, env=quiet_env(), capture_output=True, text=True, timeout=120, check=True)
    assert unpickled.stdout.splitlines() == ["ok", "ok", "ModuleNotFoundError: No module named 'runs'"]


def test_serving_is_refused_while_the_prefect_yaml_deployments_exist():
    from prefect.exceptions import ObjectNotFound

    from flows import serve

    class Client:
        def __init__(self, existing):
            self.existing = existing

        def read_deployment_by_name(self, name):
            if name not in self.existing:
                raise ObjectNotFound(None)
            return object()

    served = serve.deployments("/srv/landing", "/srv/warehouse")
    # Its own earlier deployments do not count: serving again replaces only those.
    assert serve.deployed_twins(served, Client({"tiers-month-end/month-end-served"})) == []
    assert serve.deployed_twins(served, Client({"tiers-month-end/month-end", "tiers-backfill/backfill"})) == [
        "tiers-month-end/month-end", "tiers-backfill/backfill"]


def test_prefect_deploy_and_flows_serve_keep_to_their_own_deployments(prefect_harness, tmp_path):
    """`prefect deploy --all` from prefect.yaml registers month-end and backfill, by module path, with the
    work pool; flows.serve then refuses in one line rather than schedule the month-end a second time."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL

    env = quiet_env(PREFECT_API_URL=PREFECT_API_URL.value(), TIERS_PROJECT_DIR=str(PROJECT),
                    PREFECT_HOME=str(tmp_path / "prefect-home"))
    shutil.copy(PROJECT / "prefect.yaml", tmp_path / "prefect.yaml")  # deploy from a copy: it may write beside it
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="tiers", type="process"))
        try:
            deployed = subprocess.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], cwd=tmp_path, env=env,
                                      capture_output=True, text=True, timeout=180)
            assert deployed.returncode == 0, deployed.stdout + deployed.stderr
            month_end = client.read_deployment_by_name("tiers-month-end/month-end")
            backfill = client.read_deployment_by_name("tiers-backfill/backfill")
            assert (month_end.entrypoint, backfill.entrypoint) == ("flows.runs.month_end", "flows.runs.backfill")
            assert month_end.work_pool_name == backfill.work_pool_name == "tiers"
            assert (month_end.parameters["poll_seconds"], month_end.parameters["deadline"]) == (900, "12:00")

            before = sorted(d.name for d in client.read_deployments())
            served = subprocess.run([sys.executable, "-m", "flows.serve", "--input", str(tmp_path)], cwd=tmp_path,
                                    env=env, capture_output=True, text=True, timeout=120)
            assert served.returncode == 1
            assert served.stderr.strip() == (
                "error: tiers-month-end/month-end, tiers-backfill/backfill are already deployed on this Prefect server "
                "(prefect deploy --all, prefect.yaml); serving would schedule the month-end a second time: run that "
                "work pool's worker instead, or delete them first (prefect deployment delete tiers-month-end/month-end)")
            # Nothing served was registered, and what was deployed is as it was.
            assert sorted(d.name for d in client.read_deployments()) == before
            assert client.read_deployment_by_name("tiers-month-end/month-end").work_pool_name == "tiers"
        finally:
            for deployment in client.read_deployments():
                if deployment.name in ("month-end", "backfill"):
                    client.delete_deployment(deployment.id)
            client.delete_work_pool("tiers")


# -- a real cluster --------------------------------------------------------------------------------------

def docs_commands() -> dict[str, list[str]]:
    """docs/dask.md's `dask scheduler` and `dask worker` lines, with HOST as the docs set it."""
    text = DOCS.read_text()
    assert "HOST=127.0.0.1 " in text and "SCHEDULER=127.0.0.1 " in text
    commands = {}
    for line in text.splitlines():
        if not line.strip().startswith("dask "):
            continue
        words = shlex.split(line.strip(), comments=True)
        if words[:2] in (["dask", "scheduler"], ["dask", "worker"]):
            commands[words[1]] = [word.replace("$HOST", "127.0.0.1") for word in words]
    assert set(commands) == {"scheduler", "worker"}
    return commands


class Cluster:
    def __init__(self, folder: Path):
        self.folder, self.processes, self.workers = folder, [], []
        commands = docs_commands()
        scheduler_file = folder / "scheduler.json"
        # Any free port rather than the docs' fixed ones: other runs may hold those.
        scheduler = [{"8786": "0", "127.0.0.1:8787": "127.0.0.1:0"}.get(w, w) for w in commands["scheduler"]]
        self.start(scheduler + ["--scheduler-file", str(scheduler_file)], "scheduler")
        deadline = time.monotonic() + 60
        while not scheduler_file.is_file() and time.monotonic() < deadline:
            self.check_alive()
            time.sleep(0.2)
        self.address = json.loads(scheduler_file.read_text())["address"]
        worker = [self.address if w == "tcp://$SCHEDULER:8786" else w for w in commands["worker"]]
        assert self.address in worker
        self.workers = [self.start(worker, f"worker-{n}") for n in range(2)]
        import distributed

        with distributed.Client(self.address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=60)

    def start(self, command: list[str], name: str) -> subprocess.Popen:
        log = (self.folder / f"{name}.log").open("w")
        process = subprocess.Popen([str(BIN / command[0]), *command[1:]], cwd=self.folder, env=quiet_env(),
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def check_alive(self) -> None:
        for process in self.processes:
            assert process.poll() is None, self.logs()

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.folder.glob("*.log")))

    def stop(self, processes: list[subprocess.Popen]) -> None:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # the group this test started: the worker and its nanny
                process.wait(5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    started = Cluster(tmp_path_factory.mktemp("real-cluster"))
    try:
        yield started
    finally:
        started.stop(list(reversed(started.processes)))


@pytest.mark.slow
def test_the_docs_cluster_commands_listen_on_127_0_0_1_only(cluster):
    listening = []
    for process in cluster.processes:
        parent = psutil.Process(process.pid)
        for member in [parent, *parent.children(recursive=True)]:  # a worker runs under its nanny
            listening += [(member.pid, c.laddr.ip, c.laddr.port) for c in member.net_connections(kind="inet")
                          if c.status == psutil.CONN_LISTEN]
    # The scheduler's comm and HTTP ports; each worker's comm and HTTP ports and its nanny's.
    assert len(listening) >= 2 + 2 * 3, listening
    assert {ip for _, ip, _ in listening} == {"127.0.0.1"}, listening


@pytest.mark.slow
def test_a_served_deployment_on_the_cluster_equals_a_local_run(cluster, buffers_single, prefect_harness, tmp_path):
    """`python -m flows.serve`, then `run_deployment` with executor=dask: the served deployment runs as a work
    pool's would (`python -m prefect.engine` loads its entrypoint), and re-evaluates May and June on the
    cluster's workers, equal to the single-process run."""
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    warehouse = tmp_path / "warehouse"
    shutil.copytree(buffers_single, warehouse)
    log = (tmp_path / "serve.log").open("w")
    serving = subprocess.Popen(
        [sys.executable, "-m", "flows.serve", "--input", str(LANDING), "--warehouse", str(warehouse)], cwd=tmp_path,
        env=quiet_env(PREFECT_API_URL=PREFECT_API_URL.value(), PREFECT_RUNNER_POLL_FREQUENCY="1"),
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + 60
            while True:
                assert serving.poll() is None, (tmp_path / "serve.log").read_text()
                try:
                    client.read_deployment_by_name("tiers-month-end/month-end-served")
                    break
                except ObjectNotFound:
                    assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                    time.sleep(0.5)
        run = run_deployment("tiers-month-end/month-end-served", timeout=120, poll_interval=1, parameters={
            "month": "2025-05", "programs": ["icbc_star"], "executor": "dask", "dask_address": cluster.address,
            "partitions": 3, "require_control": False})
        assert run.state.is_completed(), f"{run.state.message}\n{(tmp_path / 'serve.log').read_text()[-5000:]}"
    finally:
        serving.send_signal(signal.SIGINT)
        try:
            serving.wait(30)
        except subprocess.TimeoutExpired:
            serving.kill()
            serving.wait(5)
    assert assert_same_snapshots(buffers_single, warehouse) == 6 * 7
    for month in ("2025-05", "2025-06"):
        manifest = json.loads(snapshots.manifest_path(Warehouse(warehouse), "icbc_star", Month.parse(month)).read_text())
        assert manifest["executor"]["scheduler"] == cluster.address and manifest["executor"]["partitions"] == 3
    cluster.check_alive()


@pytest.mark.slow
def test_a_flow_loaded_from_its_file_is_refused_before_anything_is_ingested(cluster, prefect_harness, tmp_path):
    """The deployment of the issue (entrypoint flows/runs.py:month_end): one line, naming the module."""
    from prefect.settings import PREFECT_API_URL

    warehouse = tmp_path / "warehouse"
    script = textwrap.dedent("""
        import sys
        from prefect.flows import load_flow_from_entrypoint
        from ground.errors import TiersError

        month_end = load_flow_from_entrypoint(sys.argv[1])
        try:
            month_end(input_dir=sys.argv[2], month="2025-06", warehouse_dir=sys.argv[3], programs=["icbc_star"],
                      executor="dask", dask_address=sys.argv[4], partitions=2)
        except TiersError as error:
            print(f"error: {error}")
    """)
    done = subprocess.run(
        [sys.executable, "-c", script, f"{PROJECT / 'flows' / 'runs.py'}:month_end", str(LANDING), str(warehouse),
         cluster.address], cwd=tmp_path, env=quiet_env(PREFECT_API_URL=PREFECT_API_URL.value(),
                                                       PREFECT_LOGGING_LEVEL="CRITICAL"),
        capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == (
        f"error: the Dask scheduler at {cluster.address} cannot load the tasks this run sends it "
        "(ModuleNotFoundError: No module named 'runs'); the flow tiers-month-end was loaded from a file as module "
        "'runs', which only this process knows: deploy it by its module path, entrypoint flows.runs.month_end as "
        "in prefect.yaml, not by a file path such as flows/runs.py (docs/dask.md)"), done.stdout + done.stderr
    assert not list((warehouse / "snapshots").rglob("*.parquet"))
    assert not list((warehouse / "staging").glob("partitioned-*"))
    cluster.check_alive()


def only_here():
    """An object of a module that this process alone has: pickled by reference, unpickled nowhere else."""
    import types

    module = sys.modules.setdefault("tiers_test_only_here", types.ModuleType("tiers_test_only_here"))
    if not hasattr(module, "Thing"):
        module.Thing = type("Thing", (), {"__module__": "tiers_test_only_here"})
    return module.Thing()


@pytest.mark.slow
def test_a_task_the_scheduler_cannot_unpickle_is_one_whole_line(cluster, buffers_single, tmp_path):
    """Dask's message spans lines and its cause (the missing module) is what matters: both, on one line."""
    from flows import fanout

    warehouse = Warehouse(tmp_path / "warehouse")
    shutil.copytree(buffers_single, warehouse.root)
    # What the bucket tasks carry (the run's vocabularies here) is something only this process can unpickle.
    run = dataclasses.replace(icbc_run(warehouse), vocab=only_here())
    with fanout.dask_cluster(cluster.address, warehouse, partitions=2) as fan:
        with pytest.raises(TiersError) as failed:
            fan.evaluate(run, "icbc_star", "2025-06", "test-run")
    message = str(failed.value)
    assert "\n" not in message, message
    assert message.startswith(f"icbc_star 2025-06: bucket 0 of 2 failed on the Dask cluster at {cluster.address} "
                              "(RuntimeError: Error during deserialization of the task graph. This frequently occurs "
                              "if the Scheduler and Client have different environments."), message
    assert message.endswith("; caused by ModuleNotFoundError: No module named 'tiers_test_only_here'); nothing was "
                            "published for this month"), message
    cluster.check_alive()


@pytest.mark.slow
def test_with_every_worker_gone_a_run_fails_after_the_worker_timeout(cluster, buffers_single, prefect_harness,
                                                                     tmp_path, monkeypatch):
    """Last: it stops the cluster's workers."""
    from flows.runs import month_end

    cluster.stop(cluster.workers)
    monkeypatch.setenv("TIERS_DASK_WORKER_TIMEOUT", "2")
    warehouse = tmp_path / "warehouse"
    shutil.copytree(buffers_single, warehouse)
    started = time.monotonic()
    with pytest.raises(TiersError) as failed:
        month_end.fn(str(LANDING), "2025-06", str(warehouse), ["icbc_star"], executor="dask",
                     dask_address=cluster.address)
    assert time.monotonic() - started < 30
    assert str(failed.value) == (
        f"the Dask scheduler at {cluster.address} has had no workers for 2 s (TIERS_DASK_WORKER_TIMEOUT); start "
        f"some with `dask worker {cluster.address}` (docs/dask.md)")
    assert assert_same_snapshots(buffers_single, warehouse) == 6 * 7  # nothing changed
