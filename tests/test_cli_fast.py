"""The command line's fast paths: argument errors before Prefect, a running Prefect server, --rules-dir.

Every argument error of every command comes back as one plain line before Prefect is even imported.
Wall time on a shared 2-core machine flakes, so the proof is structural: the commands run with a
stand-in ``prefect`` package first on the path that leaves a mark when imported, and with a fresh
PREFECT_HOME that must hold no database afterwards (Prefect's temporary server creates one). The
wall time is checked too, generously.
"""

from __future__ import annotations

import http.server
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from rules.loader import SHIPPED_RULES_DIR
from interfaces import cli

TIERS = Path(sys.executable).with_name("tiers")
GOLDEN = Path(__file__).resolve().parent / "golden"
LANDING = GOLDEN / "icbc_money" / "landing"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def quiet_env(tmp_path, monkeypatch):
    """The environment of a subprocess: a fresh PREFECT_HOME, no Prefect server or rules folder named,
    and a stand-in ``prefect`` package that records being imported."""
    shadow = tmp_path / "shadow"
    (shadow / "prefect").mkdir(parents=True)
    marker = tmp_path / "prefect-was-imported"
    (shadow / "prefect" / "__init__.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nraise ImportError('prefect must not be imported here')\n")
    env = {key: value for key, value in os.environ.items()
           if key not in ("PREFECT_API_URL", "TIERS_RULES_DIR", "PREFECT_PROFILE", "PREFECT_LOGGING_LEVEL")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PYTHONPATH=str(shadow), COLUMNS="200")
    return env, marker


def bank_rules(folder: Path, name: str = "acme_star") -> Path:
    """A bank's own rule folder holding one program: the shipped icbc_star under another name."""
    folder.mkdir(parents=True)
    text = (SHIPPED_RULES_DIR / "icbc_star.yaml").read_text(encoding="utf-8")
    (folder / f"{name}.yaml").write_text(text.replace("program: icbc_star", f"program: {name}", 1), encoding="utf-8")
    return folder


# -- every argument error, before Prefect ---------------------------------------------------------------

def _cases(tmp: Path) -> list[tuple[str, list[str], int, str]]:
    """(id, arguments, exit status, what the line says); ``tmp`` holds a file and an empty warehouse."""
    land, file, rules = str(LANDING), str(tmp / "a-file"), str(SHIPPED_RULES_DIR / "icbc_star.yaml")
    empty = str(tmp / "empty-warehouse")
    run = ["run", "--input", land, "--month", "2025-06"]
    return [
        ("run-bad-month", ["run", "--input", land, "--month", "2025-13"], 1, "--month: month '2025-13' is not a month"),
        ("run-no-input-folder", ["run", "--input", str(tmp / "nope"), "--month", "2025-06"], 1,
         f"--input {tmp / 'nope'}: no such folder"),
        ("run-input-is-a-file", ["run", "--input", file, "--month", "2025-06"], 1, "not a folder"),
        ("run-unknown-program", [*run, "--program", "nope"], 1, "--program nope: no such program in"),
        ("run-unknown-executor", [*run, "--executor", "spark"], 1, "--executor spark: expected local or dask"),
        ("run-partitions-without-dask", [*run, "--partitions", "4"], 1, "--partitions needs --executor dask"),
        ("run-dask-refused", [*run, "--executor", "dask", "--dask-address", f"tcp://127.0.0.1:{closed_port()}"], 1,
         "cannot reach a Dask scheduler there (connection refused)"),
        ("run-warehouse-is-a-file", [*run, "--warehouse", file], 1, f"{file}: --warehouse names a file"),
        ("run-missing-option", ["run", "--month", "2025-06"], 2, "tiers run: Missing option '--input'"),
        ("run-negative-bad-rows", [*run, "--max-bad-rows", "-1"], 2, "Invalid value for '--max-bad-rows'"),
        ("run-no-rules-folder", ["--rules-dir", str(tmp / "no-rules"), *run], 1,
         f"--rules-dir {tmp / 'no-rules'}: no such rules folder"),
        ("backfill-from-after-to", ["backfill", "--input", land, "--from", "2025-06", "--to", "2025-01"], 1,
         "--to 2025-01 is before --from 2025-06"),
        ("backfill-bad-from", ["backfill", "--input", land, "--from", "2025-6", "--to", "2025-07"], 1,
         "--from: month '2025-6' is not a month"),
        ("backfill-unknown-program", ["backfill", "--input", land, "--from", "2025-06", "--to", "2025-06",
                                      "--program", "icbc_star", "--program", "nope"], 1, "--program nope: no such program"),
        ("demo-bad-to", ["demo", "--to", "2025-00"], 1, "--to: month '2025-00' is not a month"),
        ("demo-unknown-program", ["demo", "--program", "nope"], 1, "--program nope: no such program"),
        ("demo-no-customers", ["demo", "--customers", "0"], 2, "Invalid value for '--customers'"),
        ("demo-landing-is-a-file", ["demo", "--landing", file], 1, f"--landing {file}: not a folder"),
        ("explain-bad-month", ["explain", "c1", "--month", "June"], 1, "--month: month 'June' is not a month"),
        ("explain-unknown-program", ["explain", "c1", "--month", "2025-06", "--program", "nope", "--warehouse", empty], 1,
         "--program nope: no such program in"),
        ("explain-bad-format", ["explain", "c1", "--month", "2025-06", "--format", "xml"], 1, "--format xml"),
        ("report-bad-month", ["report", "--month", "2025-13"], 1, "--month: month '2025-13' is not a month"),
        ("report-unknown-program", ["report", "--month", "2025-06", "--program", "nope", "--warehouse", empty], 1,
         "--program nope: no such program in"),
        ("whatif-no-rule-file", ["whatif", "--rules", str(tmp / "nope.yaml"), "--input", land, "--from", "2025-06",
                                 "--to", "2025-06"], 1, "nope.yaml: no such rule file"),
        ("whatif-from-after-to", ["whatif", "--rules", rules, "--input", land, "--from", "2025-06", "--to", "2025-05"],
         1, "--to 2025-05 is before --from 2025-06"),
        ("whatif-no-input-folder", ["whatif", "--rules", rules, "--input", str(tmp / "nope"), "--from", "2025-06",
                                    "--to", "2025-06"], 1, "no such folder"),
        ("whatif-nothing-published", ["whatif", "--rules", rules, "--input", land, "--from", "2025-06", "--to",
                                      "2025-06", "--warehouse", empty], 1, "icbc_star has no published snapshot"),
        ("sql-no-warehouse", ["sql", "SELECT 1", "--warehouse", str(tmp / "nope")], 1, "no warehouse there"),
        ("sql-no-rules-folder", ["--rules-dir", str(tmp / "no-rules"), "sql", "SELECT 1", "--warehouse", empty], 1,
         "no such rules folder"),
        ("sql-zero-rows", ["sql", "SELECT 1", "--max-rows", "0"], 2, "Invalid value for '--max-rows'"),
        ("rules-check-no-file", ["rules", "check", str(tmp / "nope.yaml")], 1, "nope.yaml: no such rule file"),
        ("rules-check-no-folder", ["--rules-dir", str(tmp / "no-rules"), "rules", "check"], 1, "no such rules folder"),
        ("unknown-command", ["evaluate"], 2, "No such command 'evaluate'"),
    ]


CASE_IDS = [case[0] for case in _cases(Path("/x"))]


@pytest.mark.parametrize("case", CASE_IDS)
def test_an_argument_error_is_one_line_before_prefect(case, tmp_path, quiet_env):
    env, marker = quiet_env
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "empty-warehouse").mkdir()
    [(_, args, status, says)] = [c for c in _cases(tmp_path) if c[0] == case]

    started = time.monotonic()
    done = subprocess.run([str(TIERS), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    seconds = time.monotonic() - started

    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and says in lines[0], lines[0]
    assert not marker.exists(), "Prefect was imported"
    home = Path(env["PREFECT_HOME"])
    assert not home.exists() or not list(home.rglob("*.db")), "a Prefect server was started"
    assert seconds < 5, f"{seconds:.1f} s"


def test_the_stand_in_prefect_does_catch_an_import(tmp_path, quiet_env):
    """The check above can fail: a command that imports Prefect leaves the mark."""
    env, marker = quiet_env
    done = subprocess.run([str(TIERS), "run", "--input", str(LANDING), "--month", "2025-06", "--warehouse",
                           str(tmp_path / "wh")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and marker.exists()


# -- a Prefect server already running ----------------------------------------------------------------------

class _Health(http.server.BaseHTTPRequestHandler):
    answer = b"true"

    def do_GET(self):  # noqa: N802 - the http.server name
        status = 200 if self.path == "/api/health" else 404
        self.send_response(status)
        self.end_headers()
        self.wfile.write(self.answer if status == 200 else b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def stub_server():
    """A stand-in Prefect API answering its health check on a free local port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api"
    server.shutdown()
    server.server_close()


def test_a_server_that_answers_is_used(stub_server):
    assert cli.running_prefect_api(stub_server) == stub_server


def test_a_closed_port_falls_back_at_once():
    started = time.monotonic()
    assert cli.running_prefect_api(f"http://127.0.0.1:{closed_port()}/api") is None
    assert time.monotonic() - started < 1


def test_a_silent_port_falls_back_after_the_short_timeout():
    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        assert cli.running_prefect_api(f"http://127.0.0.1:{silent.getsockname()[1]}/api", timeout=0.3) is None
        assert time.monotonic() - started < 2


def test_something_else_on_the_port_is_not_taken_for_prefect(stub_server, monkeypatch):
    monkeypatch.setattr(_Health, "answer", b"<html>a web server</html>")
    assert cli.running_prefect_api(stub_server) is None


@pytest.fixture
def run_flow_stub(monkeypatch, tmp_path):
    """`tiers run` with its flow replaced: records PREFECT_API_URL as the flow would see it."""
    import flows.runs

    seen = {}

    def month_end(*args, **kwargs):
        seen["api"] = os.environ.get("PREFECT_API_URL")
        return {"skipped": [], "resumed": [], "ingested": [], "evaluated": []}

    monkeypatch.setattr(flows.runs, "month_end", month_end)
    monkeypatch.setenv("PREFECT_API_URL", "")  # restored after the test whatever the command sets
    monkeypatch.delenv("PREFECT_API_URL")
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    monkeypatch.delenv("PREFECT_PROFILE", raising=False)
    monkeypatch.delenv("PREFECT_PROFILES_PATH", raising=False)

    def invoke():
        result = CliRunner().invoke(cli.app, ["run", "--input", str(LANDING), "--month", "2025-06",
                                              "--warehouse", str(tmp_path / "wh")])
        assert result.exit_code == 0, result.output
        return seen["api"]

    return invoke


def test_run_uses_a_running_local_server(run_flow_stub, stub_server, monkeypatch):
    monkeypatch.setattr(cli, "LOCAL_PREFECT_API", stub_server)
    assert run_flow_stub() == stub_server


def test_run_without_a_local_server_leaves_prefect_to_itself(run_flow_stub, monkeypatch):
    monkeypatch.setattr(cli, "LOCAL_PREFECT_API", f"http://127.0.0.1:{closed_port()}/api")
    assert run_flow_stub() is None


def test_a_configured_server_wins(run_flow_stub, stub_server, monkeypatch, tmp_path):
    monkeypatch.setattr(cli, "LOCAL_PREFECT_API", stub_server)
    # In the active Prefect profile ...
    home = tmp_path / "prefect-home"
    home.mkdir()
    (home / "profiles.toml").write_text('active = "ops"\n[profiles.ops]\nPREFECT_API_URL = "http://prefect.bank:4200/api"\n')
    assert run_flow_stub() is None  # left to Prefect, which reads the profile itself
    # ... or in the environment.
    monkeypatch.setenv("PREFECT_API_URL", "http://prefect.bank:4200/api")
    assert run_flow_stub() == "http://prefect.bank:4200/api"


# -- --rules-dir and TIERS_RULES_DIR ------------------------------------------------------------------

def test_rules_check_reads_the_folder_named(tmp_path, quiet_env):
    env, _ = quiet_env
    folder = bank_rules(tmp_path / "bank [1] rules")

    for args, extra_env in ((["--rules-dir", str(folder), "rules", "check"], {}),
                            (["rules", "check"], {"TIERS_RULES_DIR": str(folder)})):
        done = subprocess.run([str(TIERS), *args], cwd=tmp_path, env={**env, **extra_env}, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [f"{folder / 'acme_star.yaml'}: acme_star ok "
                                            f"({done.stdout.split('(')[-1].strip()}"]

    # The option names what it was given; so does the variable.
    done = subprocess.run([str(TIERS), "rules", "check"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**env, "TIERS_RULES_DIR": str(tmp_path / "gone")})
    assert done.returncode == 1 and done.stderr.strip() == f"error: TIERS_RULES_DIR={tmp_path / 'gone'}: no such rules folder"


def test_sql_has_a_view_per_program_of_the_folder(tmp_path, quiet_env):
    env, _ = quiet_env
    folder = bank_rules(tmp_path / "bank [1] rules")
    warehouse = tmp_path / "warehouse"
    warehouse.mkdir()
    query = ["sql", "SELECT count(*) AS n FROM acme_star", "--warehouse", str(warehouse)]

    done = subprocess.run([str(TIERS), "--rules-dir", str(folder), *query], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert " 0 " in done.stdout

    shipped = subprocess.run([str(TIERS), *query], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert shipped.returncode == 1 and "acme_star" in shipped.stderr  # no such view without the folder


def test_demo_on_a_banks_rules_and_the_commands_it_suggests(tmp_path):
    """One run through Prefect: the demo evaluates the folder's program (its tasks load programs
    themselves), and ends with explain, report and sql commands that work as printed."""
    folder = bank_rules(tmp_path / "bank [1] rules")
    env = {key: value for key, value in os.environ.items() if key not in ("TIERS_RULES_DIR", "PREFECT_LOGGING_LEVEL")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), COLUMNS="200")
    warehouse = tmp_path / "my warehouse"

    done = subprocess.run([str(TIERS), "--rules-dir", str(folder), "demo", "--customers", "40", "--months", "2",
                           "--program", "acme_star", "--landing", str(tmp_path / "landing"),
                           "--warehouse", str(warehouse)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)

    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (warehouse / "snapshots").iterdir()) == ["program=acme_star"]
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.rstrip().endswith("Try next:"))
    suggested = [line.strip() for line in lines[start + 1:] if line.strip()]
    assert [shlex.split(c)[3] for c in suggested] == ["explain", "report", "sql"]
    assert "python -c" not in done.stdout
    for command in suggested:
        words = shlex.split(command)
        assert words[0] in (str(TIERS), "tiers") and words[1:3] == ["--rules-dir", str(folder.resolve())]
        assert words[words.index("--warehouse") + 1] == str(warehouse)
        ran = subprocess.run(words, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0, f"{command}\n{ran.stderr}"
    explained = subprocess.run(shlex.split(suggested[0]), cwd=tmp_path, env=env, capture_output=True, text=True)
    assert "in acme_star at 2025-12-31" in explained.stdout
    assert list((warehouse / "reports").rglob("*.html"))
    counts = duckdb.sql("SELECT count(*) FROM read_parquet($p)", params={
        "p": str(next((warehouse / "snapshots" / "program=acme_star").rglob("data.parquet")))}).fetchall()
    assert counts == [(40,)]
    shutil.rmtree(tmp_path / "landing")
