"""The declared SQL graph of ``transforms/sql``: parse each file's header and run files in the order
their inputs require, with bound parameters.

Every SQL file starts with a header (in the spirit of SQLMesh's MODEL block) that says what it is:

    -- name: checked_balances            the file's name (unique)
    -- kind: view                        table | temp table | view | macro | statement | query
    -- reads: landed_balances, month_fx_rates, cell_types
    -- registered: landed_balances      inputs no SQL file makes: a table or macro made in Python
                                         (con.register of rule tables, landing's views, a macro)
    -- produces: customers, fx_rates     names it makes besides its own (a statement's tables, macros)
    -- params: month_start, month_end   the $parameters its body binds

``build`` runs what a list of files needs, in a topological order of ``reads`` (tests/test_sql_graph.py
checks every header: unique names, every input made by some file or registered, no cycle, params as
used). Kinds: a ``table``/``temp table`` file is a bare SELECT stored as that table; a ``view`` is a
bare SELECT kept as a temp view, whose parameters are bound into the connection's variables (a view
takes no bound parameters; DuckDB folds getvariable() into constants); ``macro`` and ``statement``
files run as written; a ``query`` is a bare SELECT that Python wraps (COPY ... TO).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import duckdb

from stores.warehouse import Warehouse

SQL_DIR = Path(__file__).resolve().parent / "sql"
_PARAMETER = re.compile(r"\$([a-z_][a-z0-9_]*)")
_HEADER = re.compile(r"^-- (name|kind|reads|registered|produces|params): ?(.*)$")
KINDS = ("table", "temp table", "view", "macro", "statement", "query")
# Made by warehouse_schema, which ``connect`` runs: never rebuilt by ``build``.
_SCHEMA = "warehouse_schema"


@dataclass(frozen=True)
class Step:
    """One SQL file as its header declares it."""

    name: str
    kind: str
    reads: tuple[str, ...]
    registered: tuple[str, ...]
    produces: tuple[str, ...]
    params: tuple[str, ...]
    sql: str

    @property
    def makes(self) -> tuple[str, ...]:
        """The names other files may read from this one (a statement that inserts into a table makes none)."""
        own = () if self.kind in ("statement", "query") else (self.name,)
        return own + self.produces


def parse(path: Path) -> Step:
    """A SQL file's header; a file without one, or with an unknown kind, is a bug."""
    fields: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _HEADER.match(line)
        if not match:
            break
        fields[match.group(1)] = match.group(2).strip()

    def names(key: str) -> tuple[str, ...]:
        return tuple(n.strip() for n in fields.get(key, "").split(",") if n.strip())

    if "name" not in fields or fields.get("kind") not in KINDS:
        raise ValueError(f"{path}: the header must start with -- name: and -- kind: (one of {', '.join(KINDS)})")
    return Step(fields["name"], fields["kind"], names("reads"), names("registered"), names("produces"),
                names("params"), path.read_text(encoding="utf-8"))


@cache
def steps() -> dict[str, Step]:
    return {step.name: step for step in map(parse, sorted(SQL_DIR.glob("*.sql")))}


@cache
def producers() -> dict[str, str]:
    """Which file makes each name."""
    return {made: step.name for step in steps().values() for made in step.makes}


def plan(targets: list[str], have: frozenset[str] = frozenset()) -> list[Step]:
    """The files that make ``targets`` (file names), inputs first, skipping what ``have`` names (made
    already on the connection) and the warehouse's tables. A statement (an INSERT into a warehouse table)
    runs whenever it is a target or an input: it makes no name that could say it ran."""
    made_by, order, visiting = producers(), [], set()
    available = set(have) | set(steps()[_SCHEMA].makes)

    def visit(name: str) -> None:
        step = steps()[name]
        if step.makes and all(made in available for made in step.makes):
            return
        if name in visiting:
            raise ValueError(f"SQL graph has a cycle through {name}")
        visiting.add(name)
        for read in step.reads:
            if read not in step.registered and read not in available:
                visit(made_by[read])
        visiting.discard(name)
        available.update(step.makes)
        order.append(step)

    for target in targets:
        visit(target)
    return order


def build(con: duckdb.DuckDBPyConnection, targets: list[str], have: frozenset[str] = frozenset(),
          **params) -> frozenset[str]:
    """Run what ``targets`` need and the targets, in order; returns ``have`` with what was made."""
    made = set(have)
    for step in plan(targets, frozenset(have)):
        execute(con, step, params)
        made.add(step.name)
        made.update(step.makes)
    return frozenset(made)


def execute(con: duckdb.DuckDBPyConnection, step: Step, params: dict) -> duckdb.DuckDBPyConnection:
    values = bind(step.sql, params)
    if step.kind in ("table", "temp table"):
        kind = "TEMP TABLE" if step.kind == "temp table" else "TABLE"
        return con.execute(f"CREATE OR REPLACE {kind} {step.name} AS {step.sql}", values)
    if step.kind == "view":
        for name, value in values.items():
            con.execute(f"SET VARIABLE {name} = $value", {"value": value})
        text = _PARAMETER.sub(lambda match: f"getvariable('{match.group(1)}')", step.sql)
        return con.execute(f"CREATE OR REPLACE TEMP VIEW {step.name} AS {text}")
    if step.kind == "query":
        raise ValueError(f"{step.name} is a query: read it with sql_text and wrap it")
    return con.execute(step.sql, values)


def sql_text(name: str) -> str:
    return steps()[name].sql


def bind(sql: str, params: dict) -> dict:
    """The subset of ``params`` the statement uses; a parameter it uses but was not given is a bug."""
    wanted = set(_PARAMETER.findall(sql))
    missing = wanted - params.keys()
    if missing:
        raise KeyError(f"SQL parameters not given: {sorted(missing)}")
    return {key: params[key] for key in wanted}


def connect(warehouse: Warehouse) -> duckdb.DuckDBPyConnection:
    """A writing connection to the warehouse with the pipeline's tables in place."""
    con = warehouse.connect()
    run(con, _SCHEMA)
    return con


def run(con: duckdb.DuckDBPyConnection, name: str, **params) -> duckdb.DuckDBPyConnection:
    """Execute ``sql/<name>.sql`` alone (its inputs already in place)."""
    return execute(con, steps()[name], params)
