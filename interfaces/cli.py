"""The ``tiers`` command. Each command runs a Prefect flow (or reads what flows wrote).

Failures the user can fix are ``TiersError``s: printed as one plain line on stderr, exit status 1,
no traceback unless ``--debug``. Every argument is checked before Prefect is imported: a typo costs
well under 2 s, not the 20 to 40 s of Prefect's temporary server starting first.
"""

from __future__ import annotations

import http.client
import inspect
import os
import shlex
import shutil
import signal
import socket
import sys
import tomllib
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Annotated, Callable, Optional
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

try:  # typer 0.2x carries its own copy of click, whose exceptions are not click's
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - a typer that uses click itself
    from click import exceptions as click_errors

from ground import progress
from ground.errors import TiersError
from ground.months import Month
from stores.warehouse import DEFAULT_WAREHOUSE, Warehouse, database_error, keep_private


class _PlainUsageErrors(TyperGroup):
    """Click's own argument errors (a missing option, a number out of range) as one plain line on stderr,
    like every other error, instead of a usage block and a framed panel."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            # Not standalone: click hands the errors back here; --help and typer.Exit come back as codes.
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as error:  # the help is already printed
            sys.exit(error.exit_code)
        except click_errors.UsageError as error:
            command = f"{error.ctx.command_path}: " if error.ctx else ""
            hint = f" (see {error.ctx.command_path} --help)" if error.ctx else ""
            _say(f"error: {command}{error.format_message().rstrip('.')}{hint}")
            sys.exit(error.exit_code)
        except click_errors.ClickException as error:
            _say(f"error: {error.format_message()}")
            sys.exit(error.exit_code)
        except typer.Abort:  # end of input at a prompt
            _say("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(cls=_PlainUsageErrors, add_completion=False, no_args_is_help=True,
                  help="Month-end customer tier evaluation.")
rules_app = typer.Typer(no_args_is_help=True, help="Rule files (programs).")
app.add_typer(rules_app, name="rules")

out = Console()
err = Console(stderr=True)
_state = {"debug": False}

InputDir = Annotated[Path, typer.Option("--input", help="The landing folder (data-contract.md section 1).")]
WarehouseDir = Annotated[Path, typer.Option("--warehouse", help="The warehouse folder.")]
Programs = Annotated[
    Optional[list[str]], typer.Option("--program", help="Program to evaluate (repeatable); default: every program.")
]
MaxBadRows = Annotated[int, typer.Option("--max-bad-rows", min=0, help="Bad rows tolerated before nothing is published.")]
RequireControl = Annotated[bool, typer.Option(
    "--require-control", help="A landing file without its control file (<file>.ctl) is not ready: fail the run.")]
Wait = Annotated[float, typer.Option("--wait", min=0, help="Seconds to wait for another run holding the warehouse.")]
Executor = Annotated[str, typer.Option(
    "--executor", help="local: evaluate in this process; dask: each month's customers in buckets on a Dask cluster.")]
DaskAddress = Annotated[Optional[str], typer.Option(
    "--dask-address", help="A Dask scheduler, tcp://HOST:PORT (docs/dask.md); default: a temporary local cluster.")]
Partitions = Annotated[Optional[int], typer.Option(
    "--partitions", min=1, help="Buckets of customers per program-month with --executor dask; default: 2 per worker thread.")]


# DASK_LOGGING__DISTRIBUTED: Dask's own loggers (--executor dask), read when Dask is first imported.
_QUIET_LOGGING = {"PREFECT_LOGGING_LEVEL": "CRITICAL", "PREFECT_LOGGING_ROOT_LEVEL": "CRITICAL",
                  "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL", "DASK_LOGGING__DISTRIBUTED": "critical"}
_DEBUG_LOGGING = {"PREFECT_LOGGING_LEVEL": "INFO", "PREFECT_LOGGING_ROOT_LEVEL": "WARNING",
                  "PREFECT_SERVER_LOGGING_LEVEL": "WARNING", "DASK_LOGGING__DISTRIBUTED": "warning"}


# The rules folder in force (rules/loader.py reads it, at call time, in this process and the ones it starts).
RULES_DIR_VARIABLE = "TIERS_RULES_DIR"


# No telemetry, and a patient start-up for Prefect's temporary local server; a user's own settings win.
_OFFLINE = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}


@app.callback()
def main(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show Prefect's logs and full tracebacks.")] = False,
    rules_dir: Annotated[Optional[Path], typer.Option(
        "--rules-dir", envvar=RULES_DIR_VARIABLE, show_envvar=True,
        help="A bank's own rule folder, for every command; default: the programs shipped in rules/.")] = None,
):
    _state.update(debug=debug, rules_dir_named=None, rules_dir_option=None)
    if rules_dir is not None:
        # Checked by each command that reads it (not here, so that --help works whatever the setting).
        source = ctx.get_parameter_source("rules_dir")
        from_env = source is not None and source.name == "ENVIRONMENT"
        _state["rules_dir_named"] = f"{RULES_DIR_VARIABLE}={rules_dir}" if from_env else f"--rules-dir {rules_dir}"
        _state["rules_dir_option"] = None if from_env else str(rules_dir.resolve())
        # Absolute, so the run's tasks and any Dask worker it starts read the same folder.
        os.environ[RULES_DIR_VARIABLE] = str(rules_dir.resolve())
    keep_private()  # whatever any command writes (snapshots, reports, scratch) is owner and group only
    # Before Prefect is imported (commands import flows lazily): quiet unless debugging. Besides its
    # own loggers, Prefect prints its services' warnings through the root logger and its temporary
    # server's through uvicorn's; on the command line the one plain error line is the output.
    levels = _DEBUG_LOGGING if debug else _QUIET_LOGGING
    for setting, value in {**_OFFLINE, **levels}.items():
        os.environ.setdefault(setting, value)


class Stopped(KeyboardInterrupt):
    """SIGTERM, turned into an exception so a run stops the way Ctrl-C stops it (its clean-up runs)."""


def _stop_on_sigterm(signum, frame):
    raise Stopped()


def _plain_errors(command: Callable) -> Callable:
    @wraps(command)
    def wrapper(*args, **kwargs):
        # Prefect puts its own SIGTERM handler in place while a flow runs (TerminationSignal, below).
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
        try:
            return command(*args, **kwargs)
        except TiersError as error:
            if _state["debug"]:
                raise
            _say(f"error: {error}")
            raise typer.Exit(1) from None
        except BrokenPipeError:
            # Whoever read the output stopped reading (`tiers sql ... | head`): end quietly, as a process
            # that SIGPIPE would have ended does, and keep Python from complaining at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(141) from None
        except OSError as error:  # permission denied, read-only file system, disk full, ...
            if _state["debug"]:
                raise
            where = f"{error.filename}: " if error.filename else ""
            _say(f"error: {where}{error.strerror or error}; nothing further was published")
            raise typer.Exit(1) from None
        except BaseException as error:
            if isinstance(error, (typer.Exit, SystemExit)) or _state["debug"]:
                raise
            stopped = _stopped_by(error)
            if stopped:
                if command.__name__ in WRITING_COMMANDS:
                    _say(f"{stopped}: the run stopped; nothing further was published (a run stopped while "
                         "publishing its months is finished by the next run)")
                else:
                    _say(f"{stopped}: stopped")
                raise typer.Exit(143 if stopped == "terminated (SIGTERM)" else 130) from None
            plain = _plain_database_error(error, kwargs.get("warehouse"))
            if plain:
                _say(f"error: {plain}")
                raise typer.Exit(1) from None
            if not isinstance(error, Exception):
                raise
            # A bug: say so in one line, keep the traceback for --debug.
            _say(f"internal error: {type(error).__name__}: "
                 f"{str(error).strip().splitlines()[0] if str(error).strip() else ''} (run with --debug for the traceback)")
            raise typer.Exit(2) from None

    return wrapper


def _say(line: str) -> None:
    err.print(line, markup=False, highlight=False, soft_wrap=True)


# The commands that write the warehouse (data contract section 3, "Who may write").
WRITING_COMMANDS = ("run", "backfill", "demo")


def _stopped_by(error: BaseException) -> str | None:
    """Ctrl-C, or SIGTERM (ours before a flow starts, Prefect's TerminationSignal while one runs). Ctrl-C
    during a DuckDB query comes back as DuckDB's "Query interrupted"."""
    if isinstance(error, Stopped) or type(error).__name__ == "TerminationSignal":
        return "terminated (SIGTERM)"
    if isinstance(error, KeyboardInterrupt) or (isinstance(error, RuntimeError) and "interrupted" in str(error)):
        return "interrupted (SIGINT)"
    return None


def _plain_database_error(error: BaseException, warehouse_dir: Path | None) -> str | None:
    """DuckDB's I/O and corruption errors (a full disk, a damaged database) are the machine's state, not bugs."""
    import duckdb

    if not isinstance(error, duckdb.Error):
        return None
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if "Corrupt database" in text:
        return str(database_error(Warehouse(Path(warehouse_dir or DEFAULT_WAREHOUSE)).database, error))
    return text if isinstance(error, duckdb.IOException) else None


# -- arguments, checked before Prefect is imported ------------------------------------------------------
# Importing Prefect alone takes 1 to 3 s on a busy 2-core machine, and its temporary server 18 to 33 s
# more, so nothing below imports flows/ or prefect. The flows check the same things again for callers
# that are not this command line (deployments, tests).

def _month(option: str, text: str) -> Month:
    try:
        return Month.parse(text)
    except TiersError as error:
        raise TiersError(f"{option}: {error}") from None


def _span(first: str, last: str) -> tuple[Month, Month]:
    first_month, last_month = _month("--from", first), _month("--to", last)
    if last_month < first_month:
        raise TiersError(f"--to {last} is before --from {first}")
    return first_month, last_month


def _folder(option: str, path: Path, what: str) -> None:
    if not path.exists():
        raise TiersError(f"{option} {path}: no such folder ({what})")
    if not path.is_dir():
        raise TiersError(f"{option} {path}: not a folder ({what})")


def _warehouse_folder(path: Path) -> None:
    """A warehouse that does not exist yet is created by the run; a file in its place is a typo."""
    if path.exists() and not path.is_dir():
        # Worded as Warehouse.prepare words it, for a run that gets that far.
        raise TiersError(f"{path}: --warehouse names a file; expected a folder (it is created when missing)")


def _rules_folder() -> Path:
    from rules.loader import default_rules_dir

    folder = default_rules_dir()
    if not folder.is_dir():
        named = _state.get("rules_dir_named") or f"{RULES_DIR_VARIABLE}={folder}"
        raise TiersError(f"{named}: no such rules folder")
    return folder


def _rules_programs() -> tuple[Path, list[str]]:
    """The rules folder in force and the programs in it (file names only: nothing is parsed yet)."""
    from rules.loader import program_files

    folder = _rules_folder()
    return folder, [path.stem for path in program_files(folder)]


def _check_programs(programs: Optional[list[str]]) -> None:
    folder, known = _rules_programs()
    for name in programs or []:
        if name not in known:
            raise TiersError(f"--program {name}: no such program in {folder} (programs: {', '.join(known) or 'none'})")


def _check_known_program(program: Optional[str], warehouse: Path) -> None:
    """A reader's --program: a program of the rules folder or one published in the warehouse (a program
    whose rule file has gone still has its snapshots), so a typo is not reported as a missing snapshot."""
    if program is None:
        return
    from stores.snapshots import published_programs

    folder, known = _rules_programs()
    published = published_programs(Warehouse(Path(warehouse)))
    if program not in known and program not in published:
        names = ", ".join(sorted(set(known) | set(published))) or "none"
        raise TiersError(f"--program {program}: no such program in {folder} or {warehouse} (programs: {names})")


EXECUTORS = ("local", "dask")  # flows.runs.EXECUTORS, which imports Prefect


def _check_executor(executor: str, dask_address: Optional[str], partitions: Optional[int]) -> None:
    if executor not in EXECUTORS:
        raise TiersError(f"--executor {executor}: expected local or dask")
    if executor == "local" and (dask_address or partitions):
        option = "--dask-address" if dask_address else "--partitions"
        raise TiersError(f"{option} needs --executor dask")
    if dask_address:
        refused = _dask_refused(dask_address)
        if refused:
            raise TiersError(f"--dask-address {dask_address}: cannot reach a Dask scheduler there ({refused}); "
                             "start one with `dask scheduler` (docs/dask.md)")


def _dask_refused(address: str) -> str | None:
    """Why nothing can answer at ``address`` when that is certain at once (no such host, connection
    refused); None otherwise. A slow or silent address is left to Dask's own check and its timeout."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        return "expected tcp://HOST:PORT"
    if parts.scheme not in ("tcp", "tls") or not host or port is None:
        return None
    try:
        socket.create_connection((host, port), timeout=2).close()
    except socket.gaierror:
        return f"no such host {host}"
    except ConnectionRefusedError:
        return "connection refused"
    except OSError:
        return None
    return None


def _check_reachable(dask_address: Optional[str]) -> None:
    """That a Dask scheduler answers, with Dask's own client (it imports Prefect): after the quick checks."""
    if dask_address:
        from flows.fanout import check_reachable

        check_reachable(dask_address)


# -- a Prefect server already running ------------------------------------------------------------------

LOCAL_PREFECT_API = "http://127.0.0.1:4200/api"  # where `prefect server start` listens by default


def _prefect_profile_names_a_server() -> bool:
    """Whether the active Prefect profile sets PREFECT_API_URL (read without importing Prefect)."""
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        profiles = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active")
    settings = profiles.get("profiles", {}).get(active, {}) if active else {}
    return isinstance(settings, dict) and bool(settings.get("PREFECT_API_URL"))


# A closed port answers at once whatever this is. With 0.3 s, one run on a busy 2-core machine (load 6)
# missed a running server and paid 20 s for a temporary one; a second at most is cheap beside that.
PROBE_TIMEOUT = 1.0


def running_prefect_api(url: str | None = None, timeout: float = PROBE_TIMEOUT) -> str | None:
    """``url`` (default LOCAL_PREFECT_API) when a Prefect server answers its health check within
    ``timeout`` seconds, else None. Plain http.client: no proxy applies to this machine's own address."""
    url = url or LOCAL_PREFECT_API
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("GET", parts.path.rstrip("/") + "/health")
        response = connection.getresponse()
        healthy = response.status == 200 and response.read(64).strip() == b"true"
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()
    return url if healthy else None


def _use_running_prefect_server() -> None:
    """Before Prefect is imported: with no server configured, use one running on this machine rather
    than start Prefect's temporary one (18 to 33 s on a busy 2-core machine; see the README)."""
    if os.environ.get("PREFECT_API_URL") or _prefect_profile_names_a_server():
        return
    url = running_prefect_api()
    if url:
        os.environ["PREFECT_API_URL"] = url


def _print_summary(result: dict) -> None:
    for note in result["skipped"] + result["resumed"]:
        out.print(note, style="yellow", markup=False, highlight=False)
    files = Table(title="Input files", title_justify="left")
    for column in ("source", "file", "read", "used", "quarantined", "this run"):
        files.add_column(column, justify="right" if column in ("read", "used", "quarantined") else "left")
    for ingested in result["ingested"]:
        label = f"{ingested.dataset}/{ingested.month}" if ingested.month else ingested.dataset
        for f in ingested.files:
            files.add_row(label, Path(f.path).name, str(f.rows_read), str(f.rows_used), str(f.rows_quarantined),
                          "read" if ingested.read_now else "unchanged")
    out.print(files)
    published = Table(title="Published snapshots", title_justify="left")
    for column in ("month", "program", "customers", "snapshot"):
        published.add_column(column)
    for evaluated in result["evaluated"]:
        published.add_row(evaluated.month, evaluated.program, str(evaluated.customers), evaluated.path)
    out.print(published)


@dataclass(frozen=True)
class WritingRun:
    """The options run and backfill both take after their months, declared once (_writing_command)."""

    program: Programs = None
    warehouse: WarehouseDir = DEFAULT_WAREHOUSE
    max_bad_rows: MaxBadRows = 0
    wait: Wait = 0
    executor: Executor = "local"
    dask_address: DaskAddress = None
    partitions: Partitions = None
    require_control: RequireControl = False

    def check(self) -> None:
        """What a writing run checks before Prefect is imported, and the Prefect server it will use."""
        _check_programs(self.program)
        _warehouse_folder(self.warehouse)
        _check_executor(self.executor, self.dask_address, self.partitions)
        _use_running_prefect_server()
        _check_reachable(self.dask_address)

    def show(self, run_flow: Callable, input_dir: Path, *months: str) -> None:
        """Run the writing flow with progress bars on the terminal, then print its summary."""
        with progress.reporting(out):
            result = run_flow(str(input_dir), *months, str(self.warehouse), self.program, self.max_bad_rows,
                              self.wait, self.executor, self.dask_address, self.partitions,
                              require_control=self.require_control)
        _print_summary(result)


def _writing_command(command: Callable) -> Callable:
    """A command that takes ``options: WritingRun``: typer sees the command's own parameters followed by
    WritingRun's fields as options (it reads ``__signature__`` and the annotations), and the command gets
    them as one WritingRun."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "options"]
    shared = list(inspect.signature(WritingRun, eval_str=True).parameters.values())

    @wraps(command)
    def with_options(**arguments):
        options = WritingRun(**{p.name: arguments.pop(p.name) for p in shared})
        return command(**arguments, options=options)

    with_options.__signature__ = inspect.Signature([*own, *shared])
    with_options.__annotations__ = {p.name: p.annotation for p in (*own, *shared)}
    return with_options


@app.command()
@_plain_errors
@_writing_command
def run(
    input_dir: InputDir,
    month: Annotated[str, typer.Option("--month", help="The month-end to evaluate, YYYY-MM.")],
    options: WritingRun,
):
    """The month-end run: ingest what the window needs, evaluate, publish (and re-run later published months)."""
    _folder("--input", input_dir, "the landing folder")
    _month("--month", month)
    options.check()
    from flows.runs import month_end

    options.show(month_end, input_dir, month)


@app.command()
@_plain_errors
@_writing_command
def backfill(
    input_dir: InputDir,
    first: Annotated[str, typer.Option("--from", help="First month, YYYY-MM.")],
    last: Annotated[str, typer.Option("--to", help="Last month, YYYY-MM.")],
    options: WritingRun,
):
    """Evaluate every month from --from to --to in order, carrying state month to month."""
    _folder("--input", input_dir, "the landing folder")
    _span(first, last)
    options.check()
    from flows.runs import backfill as backfill_flow

    options.show(backfill_flow, input_dir, first, last)


@app.command()
@_plain_errors
def demo(
    customers: Annotated[int, typer.Option("--customers", min=1, help="Synthetic customers.")] = 10_000,
    months: Annotated[int, typer.Option("--months", min=1, max=60, help="Month-ends to evaluate.")] = 12,
    last: Annotated[str, typer.Option("--to", help="The last month-end evaluated.")] = "2025-12",
    landing_dir: Annotated[Path, typer.Option("--landing", help="Where the synthetic landing folder goes.")] = Path(
        "data/landing"
    ),
    warehouse: WarehouseDir = DEFAULT_WAREHOUSE,
    program: Programs = None,
):
    """Generate a synthetic landing folder, backfill every program (or the named ones) over it, and show
    the tiers month by month."""
    from rules import load_programs

    last_month = _month("--to", last)
    if landing_dir.exists() and not landing_dir.is_dir():
        raise TiersError(f"--landing {landing_dir}: not a folder")
    _warehouse_folder(warehouse)
    _check_programs(program)
    loaded = load_programs(program)  # a broken rule file fails here, before the data is generated
    names = [each.name for each in loaded]
    _use_running_prefect_server()
    from data.generator import generate_landing
    from flows.runs import backfill as backfill_flow
    from interfaces.report import tier_counts

    first_month = last_month.plus(-(months - 1))
    # The first month-end's windows reach back this far, so the landing data starts there.
    history = max(max(each.rules.history_months.values()) for each in loaded)
    first_data = first_month.plus(-(history - 1))
    out.print(f"Generating {customers:,} customers from {first_data} to {last_month} in {landing_dir} ...")
    generate_landing(landing_dir, customers=customers, first_month=str(first_data), months=months + history - 1)
    out.print(f"Backfilling {', '.join(names)} from {first_month} to {last_month} into {warehouse} ...")
    with progress.reporting(out):
        result = backfill_flow(str(landing_dir), str(first_month), str(last_month), str(warehouse), names)
    for name in names:
        out.print(tier_counts(warehouse, name))
    months_published = len({evaluated.month for evaluated in result["evaluated"]})
    out.print(f"\nSnapshots: {warehouse}/snapshots ({len(names)} programs, {months_published} months). Try next:\n")
    shown = "icbc_star" if "icbc_star" in names else names[0]  # the richest explain: seven stars, floors, caps
    for command in _next_commands(warehouse, shown, last_month):
        out.print(f"  {command}", markup=False, highlight=False, soft_wrap=True)


def _next_commands(warehouse: Path, program: str, month: Month) -> list[str]:
    """explain, report and sql on what the demo just published, ready to paste: the command as it was
    typed, the options that differ from the defaults, and a customer whose tier changed that month."""
    import duckdb

    from ground.paths import duckdb_path
    from stores.snapshots import snapshot_path

    snapshot = snapshot_path(Warehouse(Path(warehouse)), program, month)
    [(customer,)] = duckdb.execute(
        "SELECT customer_id FROM read_parquet($path) "
        "ORDER BY reason IN ('upgrade', 'downgrade') DESC, tier DESC, customer_id LIMIT 1",
        {"path": duckdb_path(snapshot)}).fetchall()
    tiers_command = _invoked_as()
    if _state.get("rules_dir_option"):
        tiers_command += f" --rules-dir {shlex.quote(_state['rules_dir_option'])}"
    where = "" if Path(warehouse) == Path(DEFAULT_WAREHOUSE) else f" --warehouse {shlex.quote(str(warehouse))}"
    view = program if program.isidentifier() else '"' + program.replace('"', '""') + '"'
    query = f"SELECT as_of, tier, tier_name, count(*) AS customers FROM {view} GROUP BY ALL ORDER BY as_of, tier DESC"
    return [
        f"{tiers_command} explain {shlex.quote(customer)} --month {month} --program {program}{where}",
        f"{tiers_command} report --month {month} --program {program}{where}",
        f"{tiers_command} sql {shlex.quote(query)}{where}",
    ]


def _invoked_as() -> str:
    """`tiers` when that is the command on PATH, else the path it was run by (e.g. .venv/bin/tiers)."""
    typed = sys.argv[0]
    if Path(typed).name != "tiers":  # python -m, a test runner: the installed name is the best guess
        return "tiers"
    on_path = shutil.which("tiers")
    if on_path and Path(on_path).resolve() == Path(typed).resolve():
        return "tiers"
    return shlex.quote(typed)


@app.command()
@_plain_errors
def explain(
    customer_id: Annotated[str, typer.Argument(help="The customer to explain.")],
    month: Annotated[str, typer.Option("--month", help="The month-end, YYYY-MM.")],
    program: Annotated[Optional[str], typer.Option("--program", help="Program; default: every published one.")] = None,
    warehouse: WarehouseDir = DEFAULT_WAREHOUSE,
    output: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
):
    """Why this customer has this tier: figures, thresholds, floors, caps, buffer, next review."""
    import json

    from interfaces.explain import explain_customer, render_text

    if output not in ("text", "json"):
        raise TiersError(f"--format {output}: expected text or json")
    when = _month("--month", month)
    _check_known_program(program, warehouse)
    explanations = explain_customer(warehouse, customer_id, when, program)
    if output == "json":
        print(json.dumps(explanations, indent=2, default=str, ensure_ascii=False))
    else:
        out.print("\n\n".join(render_text(e) for e in explanations), markup=False, highlight=False, soft_wrap=True)


@app.command()
@_plain_errors
def report(
    month: Annotated[str, typer.Option("--month", help="The month-end, YYYY-MM.")],
    program: Annotated[Optional[str], typer.Option("--program", help="Program; default: every published one.")] = None,
    warehouse: WarehouseDir = DEFAULT_WAREHOUSE,
):
    """A self-contained HTML report (charts, no server, no network) under <warehouse>/reports/."""
    when = _month("--month", month)
    _check_known_program(program, warehouse)
    from interfaces.html_report import build_report  # plotly: after the checks

    for path in build_report(warehouse, when, program):
        out.print(f"report: {path}", markup=False, highlight=False)


@app.command()
@_plain_errors
def whatif(
    rules: Annotated[Path, typer.Option("--rules", help="The changed rule file to try.")],
    input_dir: InputDir,
    first: Annotated[str, typer.Option("--from", help="First month, YYYY-MM.")],
    last: Annotated[str, typer.Option("--to", help="Last month, YYYY-MM.")],
    warehouse: WarehouseDir = DEFAULT_WAREHOUSE,
    max_bad_rows: MaxBadRows = 0,
):
    """Evaluate a changed program over past months in a scratch area and show who would move, and why."""
    from rules.loader import load_program
    from stores import snapshots

    if rules.is_dir():
        raise TiersError(f"--rules {rules}: a folder; give the one changed rule file")
    loaded = load_program(rules)  # says which key of the file is wrong
    _folder("--input", input_dir, "the landing folder")
    first_month, last_month = _span(first, last)
    on_record = snapshots.published_months(Warehouse(Path(warehouse)), loaded.name)
    if not any(first_month <= m <= last_month for m in on_record):
        raise TiersError(f"{loaded.name} has no published snapshot from {first} to {last} in {warehouse}; "
                         f"there is nothing to compare {rules} against")
    _use_running_prefect_server()
    from flows.whatif import summary_table, whatif as whatif_flow

    result = whatif_flow(str(rules), str(input_dir), first, last, str(warehouse), max_bad_rows)
    out.print(summary_table(result))


@app.command()
@_plain_errors
def equity(
    month: Annotated[str, typer.Option("--month", help="The month-end, YYYY-MM.")],
    program: Annotated[Optional[str], typer.Option("--program", help="Program; default: every published one.")] = None,
    settings: Annotated[Optional[Path], typer.Option(
        "--settings", help="Equity settings (rates, discount, horizon); default: equity.yaml beside the rules.")] = None,
    warehouse: WarehouseDir = DEFAULT_WAREHOUSE,
    months_back: Annotated[int, typer.Option(
        "--months-back", min=1, max=120, help="Month pairs up to --month that tier moves are counted over.")] = 12,
    whatif_rules: Annotated[Optional[Path], typer.Option(
        "--whatif", help="A changed rule file: equity under it (evaluated in a scratch area) beside the published.")] = None,
    input_dir: Annotated[Optional[Path], typer.Option("--input", help="The landing folder, with --whatif.")] = None,
    max_bad_rows: MaxBadRows = 0,
):
    """Customer equity by tier from the published snapshots: lifetime values over the tier migration matrix."""
    from rules.equity import load_equity_settings
    from rules.loader import load_program, load_programs
    from stores.snapshots import published_programs

    when = _month("--month", month)
    store = Warehouse(Path(warehouse))
    if not store.snapshots.is_dir():
        raise TiersError(f"--warehouse {warehouse}: no snapshots there (run tiers backfill first)")
    if (whatif_rules is None) != (input_dir is None):
        raise TiersError("--whatif RULES_FILE and --input DIR go together")
    trial = None
    if whatif_rules is not None:
        if whatif_rules.is_dir():
            raise TiersError(f"--whatif {whatif_rules}: a folder; give the one changed rule file")
        trial = load_program(whatif_rules)  # says which key of the file is wrong
        _folder("--input", input_dir, "the landing folder")
        if program not in (None, trial.name):
            raise TiersError(f"--program {program}: --whatif {whatif_rules} is a rule file of {trial.name}")
        program = trial.name
    _check_known_program(program, warehouse)
    equity_settings, settings_file = load_equity_settings(settings)
    names = [program] if program else published_programs(store, when)
    if not names:
        raise TiersError(f"no program has a snapshot for {when} in {store.snapshots}")
    folder, known = _rules_programs()
    for name in names:
        if name not in known:
            raise TiersError(f"{name}: no rule file in {folder}; equity reads it to tell balance figures from "
                             "counted ones")
    loaded = load_programs(names)
    from interfaces import equity as model

    if trial is not None:
        [current] = loaded
        _use_running_prefect_server()
        compared = model.whatif_equity(store, trial, current, when, equity_settings, settings_file, months_back,
                                       input_dir, max_bad_rows)
        out.print(model.comparison_table(compared["published"], compared["whatif"], compared["rows"], str(whatif_rules)))
        for note in model.comparison_notes(compared["published"], compared["whatif"], compared["scratch"]):
            out.print(note, markup=False, highlight=False, soft_wrap=True)
        return
    for current in loaded:
        result = model.compute(store, current, when, equity_settings, settings_file, months_back)
        model.publish(store, result)
        for table in model.summary_tables(result):
            out.print(table)
        for note in model.summary_notes(result, store.root / "equity"):
            out.print(note, markup=False, highlight=False, soft_wrap=True)


@app.command()
@_plain_errors
def sql(
    query: Annotated[Optional[str], typer.Argument(help="A query; none reads statements from standard input.")] = None,
    warehouse: WarehouseDir = DEFAULT_WAREHOUSE,
    max_rows: Annotated[int, typer.Option("--max-rows", min=1, help="Rows shown.")] = 100,
):
    """Query the published Parquet, read-only: views `snapshots`, one per program, `quarantine`, `runs`."""
    _rules_folder()  # a view per program of the rules folder
    from interfaces.sql_shell import open_shell, run_query

    if query is None:
        if open_shell(warehouse):
            raise typer.Exit(1)
    else:
        run_query(warehouse, query, max_rows)


@rules_app.command("check")
@_plain_errors
def rules_check(files: Annotated[Optional[list[Path]], typer.Argument(
        help="Rule files; default: every file in the rules folder (--rules-dir).")] = None):
    """Validate rule files: the file, the key and what was expected, for the first problem found."""
    from rules.loader import load_program, load_programs

    if not files:
        _rules_folder()
    loaded = [load_program(path) for path in files] if files else load_programs()
    for program in loaded:
        # soft_wrap: one line per file however long the path, as the error line is.
        out.print(f"{program.path}: {program.name} ok ({program.version})", markup=False, highlight=False, soft_wrap=True)
    if not files:
        _check_equity_settings(loaded)


def _check_equity_settings(loaded: list) -> None:
    """The rules folder's equity settings (not a program), checked against its programs' figures."""
    from rules.equity import figure_rates, load_equity_settings
    from rules.loader import EQUITY_SETTINGS_FILE

    path = _rules_folder() / EQUITY_SETTINGS_FILE.name
    if not path.is_file():
        return
    settings, _ = load_equity_settings(path)
    for program in loaded:
        figure_rates(settings, path, program)
    out.print(f"{path}: equity settings ok (not a program)", markup=False, highlight=False, soft_wrap=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
