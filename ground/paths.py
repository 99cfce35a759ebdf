"""Paths handed to DuckDB, taken literally.

DuckDB expands glob patterns (``*``, ``?``, ``[...]``) in every path its readers take, even in bound
parameters, so a landing folder named ``landing[2025]`` would be read as the pattern matching
``landing2``. Every path of ours that reaches a DuckDB reader goes through ``duckdb_path``: each glob
character becomes a one-character class (``[`` -> ``[[]``), which matches only itself.
"""

from __future__ import annotations

import re
from pathlib import Path

_GLOB_CHARACTER = re.compile(r"([\[*?])")


def duckdb_path(path: Path | str) -> str:
    """``path`` as a DuckDB reader pattern that matches exactly that one file."""
    return _GLOB_CHARACTER.sub(r"[\1]", str(path))


def path_literal(path: Path | str) -> str:
    """A quoted SQL string literal of a path, for where DuckDB takes no parameter: COPY ... TO 'path', and
    a view's read_parquet (a view keeps no bound values). The one way a value is written into SQL text
    (tests/test_sql_graph.py checks); readers' patterns go through ``duckdb_path`` first."""
    return "'" + str(path).replace("'", "''") + "'"
