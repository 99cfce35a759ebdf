"""The ``tiers`` command. Each command runs a Prefect flow (or reads what flows wrote).

Failures the user can fix are ``TiersError``s: printed as one plain line on stderr, exit status 1,
no traceback unless ``--debug``.
"""

from __future__ import annotations

import os
import signal
import sys
from functools import wraps
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from tiers import progress
from tiers.errors import TiersError
from tiers.warehouse import DEFAULT_WAREHOUSE, Warehouse, database_error, keep_private

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Month-end customer tier evaluation.")
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


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show Prefect's logs and full tracebacks.")] = False):
    _state["debug"] = debug
    keep_private()  # whatever any command writes (snapshots, reports, scratch) is owner and group only
    # Before Prefect is imported (commands import flows lazily): quiet unless debugging. Besides its
    # own loggers, Prefect prints its services' warnings through the root logger and its temporary
    # server's through uvicorn's; on the command line the one plain error line is the output.
    levels = _DEBUG_LOGGING if debug else _QUIET_LOGGING
    for setting, level in levels.items():
        os.environ.setdefault(setting, level)


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


def _check_executor(executor: str, dask_address: Optional[str], partitions: Optional[int]) -> None:
    """The executor options, and that the scheduler answers, before Prefect starts its server."""
    from flows.runs import check_executor

    check_executor(executor, dask_address, partitions)
    if dask_address:
        from flows.fanout import check_reachable

        check_reachable(dask_address)


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


@app.command()
@_plain_errors
def run(
    input_dir: InputDir,
    month: Annotated[str, typer.Option("--month", help="The month-end to evaluate, YYYY-MM.")],
    program: Programs = None,
    warehouse: WarehouseDir = DEFAULT_WAREHOUSE,
    max_bad_rows: MaxBadRows = 0,
    wait: Wait = 0,
    executor: Executor = "local",
    dask_address: DaskAddress = None,
    partitions: Partitions = None,
    require_control: RequireControl = False,
):
    """The month-end run: ingest what the window needs, evaluate, publish (and re-run later published months)."""
    from flows.runs import month_end

    _check_executor(executor, dask_address, partitions)
    with progress.reporting(out):
        result = month_end(str(input_dir), month, str(warehouse), program, max_bad_rows, wait,
                           executor, dask_address, partitions, require_control=require_control)
    _print_summary(result)


@app.command()
@_plain_errors
def backfill(
    input_dir: InputDir,
    first: Annotated[str, typer.Option("--from", help="First month, YYYY-MM.")],
    last: Annotated[str, typer.Option("--to", help="Last month, YYYY-MM.")],
    program: Programs = None,
    warehouse: WarehouseDir = DEFAULT_WAREHOUSE,
    max_bad_rows: MaxBadRows = 0,
    wait: Wait = 0,
    executor: Executor = "local",
    dask_address: DaskAddress = None,
    partitions: Partitions = None,
    require_control: RequireControl = False,
):
    """Evaluate every month from --from to --to in order, carrying state month to month."""
    from flows.runs import backfill as backfill_flow

    _check_executor(executor, dask_address, partitions)
    with progress.reporting(out):
        result = backfill_flow(str(input_dir), first, last, str(warehouse), program, max_bad_rows, wait,
                               executor, dask_address, partitions, require_control=require_control)
    _print_summary(result)


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
    program: Annotated[str, typer.Option("--program", help="Program to evaluate.")] = "icbc_star",
):
    """Generate a synthetic landing folder, backfill it, and show the tiers month by month."""
    from data.generator import generate_landing
    from flows.runs import backfill as backfill_flow
    from rules import load_programs
    from tiers.months import Month
    from tiers.report import tier_counts

    [loaded] = load_programs([program])
    last_month = Month.parse(last)
    first_month = last_month.plus(-(months - 1))
    # The first month-end's window reaches back this far, so the landing data starts there.
    history = max(loaded.rules.history_months.values())
    first_data = first_month.plus(-(history - 1))
    out.print(f"Generating {customers:,} customers from {first_data} to {last_month} in {landing_dir} ...")
    generate_landing(landing_dir, customers=customers, first_month=str(first_data), months=months + history - 1)
    out.print(f"Backfilling {program} from {first_month} to {last_month} into {warehouse} ...")
    with progress.reporting(out):
        result = backfill_flow(str(landing_dir), str(first_month), str(last_month), str(warehouse), [program])
    out.print(tier_counts(warehouse, program))
    glob = f"{warehouse}/snapshots/**/*.parquet"
    out.print(f"\nSnapshots: {warehouse}/snapshots ({len(result['evaluated'])} months). Query them with DuckDB:\n")
    out.print(
        "  .venv/bin/python -c \"import duckdb; duckdb.sql(\\\"SELECT as_of, tier_name, count(*) AS customers "
        f"FROM read_parquet('{glob}', hive_partitioning = true) WHERE program = '{program}' "
        "GROUP BY ALL ORDER BY as_of, tier_name\\\").show(max_rows=200)\"",
        markup=False, highlight=False, soft_wrap=True,
    )


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

    from tiers.explain import explain_customer, render_text
    from tiers.months import Month

    if output not in ("text", "json"):
        raise TiersError(f"--format {output}: expected text or json")
    explanations = explain_customer(warehouse, customer_id, Month.parse(month), program)
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
    from tiers.html_report import build_report
    from tiers.months import Month

    for path in build_report(warehouse, Month.parse(month), program):
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
    from flows.whatif import summary_table, whatif as whatif_flow

    result = whatif_flow(str(rules), str(input_dir), first, last, str(warehouse), max_bad_rows)
    out.print(summary_table(result))


@app.command()
@_plain_errors
def sql(
    query: Annotated[Optional[str], typer.Argument(help="A query; none reads statements from standard input.")] = None,
    warehouse: WarehouseDir = DEFAULT_WAREHOUSE,
    max_rows: Annotated[int, typer.Option("--max-rows", min=1, help="Rows shown.")] = 100,
):
    """Query the published Parquet, read-only: views `snapshots`, one per program, `quarantine`, `runs`."""
    from tiers.sql_shell import open_shell, run_query

    if query is None:
        if open_shell(warehouse):
            raise typer.Exit(1)
    else:
        run_query(warehouse, query, max_rows)


@rules_app.command("check")
@_plain_errors
def rules_check(files: Annotated[Optional[list[Path]], typer.Argument(help="Rule files; default: every file in rules/.")] = None):
    """Validate rule files: the file, the key and what was expected, for the first problem found."""
    from rules.loader import load_program, load_programs

    loaded = [load_program(path) for path in files] if files else load_programs()
    for program in loaded:
        # soft_wrap: one line per file however long the path, as the error line is.
        out.print(f"{program.path}: {program.name} ok ({program.version})", markup=False, highlight=False, soft_wrap=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
