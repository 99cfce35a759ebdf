"""`tiers sql`: the warehouse's published Parquet as DuckDB views, read-only, for a query or a shell.

Views: `snapshots` (every program, hive columns program and as_of), one per program (e.g. `icbc_star`),
`quarantine` (every quarantined row), `runs` (the run log), `equity_customers`, `equity_tiers`,
`equity_migration` and `equity_summary` (`tiers equity`), and one `equity_<name>` per other dataset
under `equity/`. With nothing published yet each view is still there, empty, with the
schema of `EMPTY_SCHEMAS`.

Locked down (data-contract.md section 3, "Who may write"): the views live in a throw-away DuckDB file in
a temporary folder, opened read-only; then the connection may read only the warehouse's output folders
(`allowed_directories` with `enable_external_access = false`), loads no extension and its configuration
is locked. ATTACH, COPY TO, INSTALL/LOAD, reading any other file (the writer's `tiers.duckdb` included)
and SET all fail inside DuckDB; statements other than queries are refused before DuckDB sees them.
Nothing here opens the writer's database or takes its lock, so a query never blocks a run.
"""

from __future__ import annotations

import re
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb

from rules.loader import program_files
from ground.errors import TiersError
from ground.paths import duckdb_path, path_literal
from stores.snapshots import published_programs
from stores.warehouse import Warehouse

_SNAPSHOT_COLUMNS = (
    ("customer_id", "VARCHAR"), ("points", "DECIMAL(18,2)"), ("computed_tier", "INTEGER"),
    ("floor_tier", "INTEGER"), ("capped", "BOOLEAN"), ("previous_tier", "INTEGER"), ("tier", "INTEGER"),
    ("tier_name", "VARCHAR"), ("reason", "VARCHAR"), ("failed_reviews", "INTEGER"), ("buffer_since", "DATE"),
    ("at_risk", "BOOLEAN"), ("next_review", "DATE"), ("effective_from", "DATE"), ("rules_version", "VARCHAR"),
    ("as_of", "DATE"), ("program", "VARCHAR"),
)
# The schema of each view while nothing is published for it (a fresh warehouse, a failed first run).
EMPTY_SCHEMAS: dict[str, tuple[tuple[str, str], ...]] = {
    "snapshots": _SNAPSHOT_COLUMNS,
    "program": _SNAPSHOT_COLUMNS,  # each per-program view
    "quarantine": (
        ("dataset", "VARCHAR"), ("month", "VARCHAR"), ("source_file", "VARCHAR"), ("source_row", "BIGINT"),
        ("problem_column", "VARCHAR"), ("reason", "VARCHAR"),
    ),
    # One file per run, runs/run-<run_id>.parquet, written by the writing commands.
    "runs": (
        ("run_id", "VARCHAR"), ("command", "VARCHAR"), ("started_at", "TIMESTAMP WITH TIME ZONE"),
        ("finished_at", "TIMESTAMP WITH TIME ZONE"), ("months", "VARCHAR[]"), ("programs", "VARCHAR[]"),
        ("outcome", "VARCHAR"), ("message", "VARCHAR"), ("rows_read", "BIGINT"), ("rows_used", "BIGINT"),
        ("rows_quarantined", "BIGINT"),
    ),
    # tiers equity (interfaces/equity.py): hive columns program and as_of after each dataset's own.
    "equity_customers": (
        ("customer_id", "VARCHAR"), ("tier", "INTEGER"), ("tier_name", "VARCHAR"), ("m", "DOUBLE"), ("clv", "DOUBLE"),
        ("as_of", "DATE"), ("program", "VARCHAR"),
    ),
    "equity_tiers": (
        ("tier", "INTEGER"), ("tier_name", "VARCHAR"), ("customers", "BIGINT"), ("mean_margin", "DOUBLE"),
        ("clv", "DOUBLE"), ("equity", "DOUBLE"), ("value_equity", "DOUBLE"), ("retention_equity", "DOUBLE"),
        ("share", "DOUBLE"), ("as_of", "DATE"), ("program", "VARCHAR"),
    ),
    "equity_migration": (
        ("from_tier", "INTEGER"), ("from_state", "VARCHAR"), ("to_tier", "INTEGER"), ("to_state", "VARCHAR"),
        ("customers", "BIGINT"), ("probability", "DOUBLE"), ("month_pairs", "INTEGER"), ("as_of", "DATE"),
        ("program", "VARCHAR"),
    ),
    "equity_summary": (
        ("customers", "BIGINT"), ("value_equity", "DOUBLE"), ("retention_equity", "DOUBLE"),
        ("customer_equity", "DOUBLE"), ("brand_equity", "DOUBLE"), ("brand_equity_note", "VARCHAR"),
        ("discount_rate", "DOUBLE"), ("horizon_months", "INTEGER"), ("month_pairs", "INTEGER"),
        ("first_pair_from", "DATE"), ("figures_without_rate", "VARCHAR[]"), ("settings_file", "VARCHAR"),
        ("rules_version", "VARCHAR"), ("as_of", "DATE"), ("program", "VARCHAR"),
    ),
}
EQUITY_VIEWS = ("equity_customers", "equity_tiers", "equity_migration", "equity_summary")
# What an analyst may run: queries (DESCRIBE, SUMMARIZE and SHOW parse as SELECT). Anything else (CREATE,
# INSERT, SET, ATTACH, COPY, LOAD, PRAGMA, CALL, and EXPLAIN, whose ANALYZE runs the statement it explains)
# is refused before DuckDB sees it. The filter is what stops a write into the output folders themselves:
# DuckDB's allowed_directories lets a COPY write where it lets a query read.
ALLOWED_STATEMENTS = {"SELECT"}
_IDENTIFIER = re.compile(r"[^a-z0-9_]+")


def _output_folders(warehouse: Warehouse) -> dict[str, Path]:
    root = warehouse.root
    return {"snapshots": warehouse.snapshots, "quarantine": warehouse.quarantine, "runs": root / "runs",
            "equity": root / "equity"}


def _empty(schema: str) -> str:
    columns = ", ".join(f"CAST(NULL AS {kind}) AS {name}" for name, kind in EMPTY_SCHEMAS[schema])
    return f"SELECT {columns} WHERE false"


def _parquet(folder: Path, glob: str, hive: bool) -> str:
    """Every file under ``folder`` matching ``glob``: the folder taken literally (duckdb_path: DuckDB
    globs every path it reads, so a warehouse named wh[1] must not read wh1), the glob as a pattern."""
    options = ", hive_partitioning = true" if hive else ""
    return f"SELECT * FROM read_parquet({path_literal(duckdb_path(folder) + '/' + glob)}{options}, union_by_name = true)"


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _has_files(folder: Path, pattern: str) -> bool:
    return folder.is_dir() and any(folder.glob(pattern))


def _program_names(warehouse: Warehouse) -> list[str]:
    """Published programs and those of rules/, so `SELECT * FROM icbc_star` works before its first run."""
    return sorted(set(published_programs(warehouse)) | {path.stem for path in program_files()})


def view_statements(warehouse_dir: Path) -> list[str]:
    warehouse = Warehouse(Path(warehouse_dir).resolve())
    folders = _output_folders(warehouse)
    snapshots = folders["snapshots"]
    # snapshots/<program>/<as_of>/*.parquet: the tree holds published Parquet only (staging is elsewhere).
    statements = [
        "CREATE VIEW snapshots AS " + (_parquet(snapshots, "*/*/*.parquet", hive=True)
                                       if _has_files(snapshots, "*/*/*.parquet") else _empty("snapshots"))
    ]
    for program in _program_names(warehouse):
        folder = snapshots / f"program={program}"
        body = (_parquet(folder, "*/*.parquet", hive=True) if _has_files(folder, "*/*.parquet")
                else _empty("program"))
        statements.append(f"CREATE VIEW {_quoted(program)} AS {body}")
    quarantine = folders["quarantine"]
    statements.append("CREATE VIEW quarantine AS " + (
        _parquet(quarantine, "**/*.parquet", hive=False) if _has_files(quarantine, "**/*.parquet")
        else _empty("quarantine")))
    runs = folders["runs"]
    statements.append("CREATE VIEW runs AS " + (
        _parquet(runs, "*.parquet", hive=False) if _has_files(runs, "*.parquet") else _empty("runs")))
    equity = folders["equity"]
    viewed = set()
    if equity.is_dir():
        # One view per dataset, a Parquet file or a folder of them (`tiers equity` writes folders
        # <dataset>/program=<P>/as_of=<date>/); equity/.staging holds files being written, never Parquet.
        for entry in sorted(equity.iterdir()):
            if entry.name.startswith("."):
                continue
            name = "equity_" + _IDENTIFIER.sub("_", entry.name.removesuffix(".parquet").lower())
            if entry.is_dir() and _has_files(entry, "**/*.parquet"):
                statements.append(f"CREATE VIEW {_quoted(name)} AS " + _parquet(entry, "**/*.parquet", hive=True))
            elif entry.is_file() and entry.suffix == ".parquet":
                statements.append(f"CREATE VIEW {_quoted(name)} AS SELECT * FROM read_parquet({path_literal(duckdb_path(entry))})")
            else:
                continue
            viewed.add(name)
    # `tiers equity`'s datasets have their view before its first run, like the snapshots'.
    for name in EQUITY_VIEWS:
        if name not in viewed:
            statements.append(f"CREATE VIEW {_quoted(name)} AS {_empty(name)}")
    return statements


def _allowed_directories(warehouse: Warehouse) -> list[str]:
    """The output folders, as DuckDB checks them: the pattern a view reads (escaped) and the files it
    expands to (raw) must both fall under an allowed prefix."""
    allowed = []
    for folder in _output_folders(warehouse).values():
        escaped = duckdb_path(folder)
        if escaped != str(folder) and Path(escaped).exists():
            # The escaped form is allowed as a prefix too: were it a real folder (a sibling literally named
            # "wh [[]x]"), its files would be readable. Refuse rather than open it up.
            raise TiersError(f"{escaped} exists beside the warehouse {warehouse.root}; tiers sql cannot tell "
                             "its files from the warehouse's: rename one of them")
        for text in {str(folder), escaped}:
            allowed.append(text.rstrip("/") + "/")
    return sorted(set(allowed))


@contextmanager
def locked_connection(warehouse_dir: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection holding the views, able to read the warehouse's output folders only."""
    warehouse = Warehouse(Path(warehouse_dir).resolve())
    if not warehouse.root.is_dir():
        raise TiersError(f"{warehouse_dir}: no warehouse there (run `tiers run` or `tiers backfill` first)")
    statements = view_statements(warehouse.root)
    with tempfile.TemporaryDirectory(prefix="tiers-sql-") as scratch:
        views = Path(scratch) / "views.duckdb"
        try:
            with duckdb.connect(str(views)) as builder:
                for statement in statements:
                    builder.execute(statement)
        except duckdb.Error as error:
            raise TiersError(f"cannot read the warehouse's Parquet in {warehouse.root}: {_first_line(error)}") from None
        con = duckdb.connect(str(views), read_only=True, config={
            "autoinstall_known_extensions": False, "autoload_known_extensions": False,
        })
        try:
            # allowed_directories cannot be given to connect() in DuckDB 2.0.1 ("before the database is
            # started"), so it is SET, then external access goes off, then nothing can be changed back.
            con.execute("SET allowed_directories = $folders", {"folders": _allowed_directories(warehouse)})
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
            yield con
        finally:
            con.close()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _refused(error: duckdb.Error) -> bool:
    text = str(error)
    return isinstance(error, duckdb.PermissionException) or "configuration has been locked" in text \
        or "read-only mode" in text


def execute(con: duckdb.DuckDBPyConnection, query: str) -> duckdb.DuckDBPyRelation | None:
    """Run ``query`` if every statement in it is a query; a TiersError of one line otherwise."""
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as error:
        raise TiersError(f"query failed: {_first_line(error)}") from None
    for statement in statements:
        kind = statement.type.name
        if kind not in ALLOWED_STATEMENTS:
            raise TiersError(f"query refused: tiers sql is read-only, {kind} statements are not allowed "
                             f"(only {', '.join(sorted(ALLOWED_STATEMENTS))})")
    try:
        return con.sql(query)
    except duckdb.Error as error:
        raise _query_error(error) from None


def _query_error(error: duckdb.Error) -> TiersError:
    return TiersError(f"query {'refused' if _refused(error) else 'failed'}: {_first_line(error)}")


def show(relation: duckdb.DuckDBPyRelation | None, max_rows: int | None = None) -> None:
    if relation is None:
        return
    try:
        # Reading the files happens here, not in con.sql(): their errors are the query's too.
        if max_rows is None:
            relation.show(max_width=10_000)
        else:
            relation.show(max_rows=max_rows, max_width=10_000)
    except duckdb.Error as error:
        raise _query_error(error) from None


def run_query(warehouse_dir: Path, query: str, max_rows: int) -> None:
    with locked_connection(warehouse_dir) as con:
        show(execute(con, query), max_rows)


def open_shell(warehouse_dir: Path) -> int:
    """Statements from standard input, one per `;`, on the locked connection. Never the external DuckDB
    shell: it could not be given the lock-down before the analyst's first statement. Returns how many
    statements failed or were refused (a script piped in must not exit 0 past a refusal)."""
    failures = 0
    with locked_connection(warehouse_dir) as con:
        if sys.stdin.isatty():
            names = [row[0] for row in con.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY view_name").fetchall()]
            print(f"tiers sql, read-only (statements end with ';', Ctrl-D quits). Views: {', '.join(names)}.")
        pending = ""
        for line in sys.stdin:
            pending += line
            if pending.strip().endswith(";"):
                try:
                    show(execute(con, pending))
                except TiersError as error:
                    print(f"error: {error}", file=sys.stderr)
                    failures += 1
                pending = ""
    return failures
