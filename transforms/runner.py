"""Load and run the SQL files of ``transforms/sql`` with bound parameters."""

from __future__ import annotations

import re
from datetime import date
from functools import cache
from pathlib import Path

import duckdb

from stores.warehouse import Warehouse

SQL_DIR = Path(__file__).resolve().parent / "sql"
_PARAMETER = re.compile(r"\$([a-z_][a-z0-9_]*)")


@cache
def sql_text(name: str) -> str:
    return (SQL_DIR / f"{name}.sql").read_text(encoding="utf-8")


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
    run(con, "warehouse_schema")
    return con


def run(con: duckdb.DuckDBPyConnection, name: str, **params) -> duckdb.DuckDBPyConnection:
    """Execute ``sql/<name>.sql``. Files that produce a table start with CREATE/INSERT themselves."""
    sql = sql_text(name)
    return con.execute(sql, bind(sql, params))


def create_table_as(con: duckdb.DuckDBPyConnection, table: str, name: str, *, temp: bool = True, **params) -> None:
    """``CREATE [TEMP] TABLE table AS <sql/name.sql>``: for files that end in a bare SELECT."""
    sql = sql_text(name)
    kind = "TEMP TABLE" if temp else "TABLE"
    con.execute(f"CREATE OR REPLACE {kind} {table} AS {sql}", bind(sql, params))


def create_view(con: duckdb.DuckDBPyConnection, view: str, name: str, **params) -> None:
    """``CREATE TEMP VIEW view AS <sql/name.sql>``. A view takes no bound parameters, so each one is
    written into the text as a typed literal (dates, strings and lists of strings from our own
    rule and vocabulary files, quoted by ``constant``)."""
    sql = sql_text(name)
    values = bind(sql, params)
    text = _PARAMETER.sub(lambda match: constant(values[match.group(1)]), sql)
    con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS {text}")


def constant(value: object) -> str:
    """A SQL literal of a parameter value: DATE, string, list of strings, integer or NULL."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, str):
        return literal(value)
    if isinstance(value, (list, tuple)):
        return "CAST([" + ", ".join(constant(item) for item in value) + "] AS VARCHAR[])"
    raise TypeError(f"no SQL literal for {value!r}")


def literal(value: object) -> str:
    """A quoted SQL string literal, for the few places DuckDB takes no parameter (COPY ... TO 'path')."""
    return "'" + str(value).replace("'", "''") + "'"
