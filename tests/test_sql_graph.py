"""The declared SQL graph (transforms/runner.py): every sql/*.sql file's header is complete and true,
the run order comes from it; and no Python source writes a value into SQL text."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import duckdb
import pytest

from transforms import runner

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ground", "rules", "stores", "data", "transforms", "flows", "interfaces")
STEPS = runner.steps()
# Table functions and names that follow FROM/JOIN without being a table (FROM (SELECT ...) is skipped).
_NOT_TABLES = {"unnest", "read_parquet", "generate_series", "range", "duckdb_columns", "lateral"}


def test_every_sql_file_has_a_header_and_names_are_unique():
    files = sorted(runner.SQL_DIR.glob("*.sql"))
    assert [runner.parse(f).name for f in files] == [f.stem for f in files]
    made = [name for step in STEPS.values() for name in step.makes]
    assert len(made) == len(set(made)), sorted(n for n in made if made.count(n) > 1)


@pytest.mark.parametrize("name", sorted(STEPS))
def test_the_header_says_what_the_body_reads_and_binds(name):
    step = STEPS[name]
    body = "\n".join(line for line in step.sql.splitlines() if not line.lstrip().startswith("--"))
    body = body.replace("DISTINCT FROM", "")
    assert set(step.params) == set(re.findall(r"\$([a-z_][a-z0-9_]*)", body)), "-- params: must list the $parameters"
    ctes = set(re.findall(r"\b([a-z_]+) AS \(", body))
    tables = {t for t in re.findall(r"\b(?:FROM|JOIN)\s+([a-z_][a-z0-9_]*)\b(?!\s*\()", body)} - ctes - _NOT_TABLES
    # A statement may read what it makes itself (the schema's migrations).
    assert tables <= set(step.reads) | set(step.makes), f"-- reads: misses {sorted(tables - set(step.reads))}"
    made_by = runner.producers()
    for read in step.reads:
        assert (read in made_by) != (read in step.registered), (
            f"{read}: an input is made by exactly one SQL file, or declared -- registered: (made in Python)")


def test_the_graph_has_no_cycle_and_orders_inputs_first():
    everything = runner.plan(sorted(STEPS))
    position = {step.name: i for i, step in enumerate(everything)}
    made_by = runner.producers()
    schema = set(STEPS["warehouse_schema"].makes)
    for step in everything:
        for read in step.reads:
            if read not in step.registered and read not in schema:
                assert position[made_by[read]] < position[step.name], (step.name, read)


def test_a_month_of_balances_validates_in_the_declared_order():
    order = [step.name for step in runner.plan(["validated_balances"])]
    assert order == ["month_fx_rates", "cell_types", "checked_balances", "balance_accounts", "balance_customers",
                     "balance_duplicates", "month_problem", "validated_balances"]
    # What is already on the connection is not built again; a statement runs as asked.
    have = frozenset(step for name in order for step in STEPS[name].makes)
    assert [step.name for step in runner.plan(["balance_month"], have)] == ["balance_month"]


def test_a_cycle_is_refused(monkeypatch):
    fake = {
        "warehouse_schema": runner.Step("warehouse_schema", "statement", (), (), (), (), ""),
        "a": runner.Step("a", "temp table", ("b",), (), (), (), "SELECT 1"),
        "b": runner.Step("b", "temp table", ("a",), (), (), (), "SELECT 1"),
    }
    monkeypatch.setattr(runner, "steps", lambda: fake)
    monkeypatch.setattr(runner, "producers", lambda: {"a": "a", "b": "b"})
    with pytest.raises(ValueError, match="cycle"):
        runner.plan(["a"])


def test_a_view_reads_its_parameters_bound_not_written_into_it():
    con = duckdb.connect()
    runner.run(con, "warehouse_schema")
    con.execute("CREATE TEMP VIEW landed_balances AS SELECT * FROM (VALUES (NULL::VARCHAR, NULL::VARCHAR, "
                "NULL::VARCHAR, NULL::VARCHAR, NULL::DATE, NULL::DECIMAL(18, 2), NULL::VARCHAR, NULL::VARCHAR, NULL::VARCHAR)) "
                "AS t(account_id, customer_id, product_code, currency, day, amount, risk_class, balance_date, balance) "
                "WHERE false")  # not read: only defined
    quote = "it's; DROP TABLE customers; --"
    runner.build(con, ["checked_balances"], month_start=__import__("datetime").date(2025, 6, 1),
                 month_end=__import__("datetime").date(2025, 6, 30), product_codes=[quote], risk_classes=["normal"])
    [(text,)] = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'checked_balances'").fetchall()
    assert "2025-06" not in text and "DROP TABLE" not in text
    assert con.execute("SELECT getvariable('product_codes')").fetchone()[0] == [quote]


# -- no value written into SQL text ------------------------------------------------------------------------

_SQL = re.compile(r"\b(SELECT|INSERT|CREATE|COPY|DELETE|UPDATE|SET|ALTER|DROP)\b")
# Not run with values of ours: a message showing the user a query to type (the value is the point), and
# the synthetic generator's module constants (its mix tables, code rather than data).
_SHOWN_NOT_RUN = {("transforms/evaluate.py", "check_tiers_defined"), ("data/generator.py", "")}


def _pasted_values(path: Path) -> list[str]:
    """f-strings and .format() calls that look like SQL and hold a value: an interpolation inside quotes
    (other than a getvariable() name), one with a conversion or format spec, or a quoting helper other
    than ground.paths.path_literal in a COPY ... TO or a view's read_parquet."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def function_of(node) -> str:
        while node in parents:
            node = parents[node]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return node.name
        return ""

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format" \
                and isinstance(node.func.value, ast.Constant) and isinstance(node.func.value.value, str) \
                and _SQL.search(node.func.value.value):
            found.append(f"{path}:{node.lineno}: SQL built with .format()")
        if not isinstance(node, ast.JoinedStr):
            continue
        text = "".join(v.value if isinstance(v, ast.Constant) else "\x00" for v in node.values)
        if not _SQL.search(text) or (str(path.relative_to(ROOT)), function_of(node)) in _SHOWN_NOT_RUN:
            continue
        pieces = text.split("\x00")
        values = [v for v in node.values if isinstance(v, ast.FormattedValue)]
        for index, value in enumerate(values):
            before, after = pieces[index], pieces[index + 1]
            quoted = before.endswith("'") and after.startswith("'") and not before.endswith("getvariable('")
            helper = isinstance(value.value, ast.Call) and getattr(value.value.func, "attr",
                                                                    getattr(value.value.func, "id", ""))
            if quoted or value.conversion != -1 or value.format_spec is not None:
                found.append(f"{path}:{node.lineno}: a value in quotes or formatted into SQL text")
            elif helper in ("literal", "constant", "repr", "str"):
                found.append(f"{path}:{node.lineno}: {helper}() writes a value into SQL text")
            elif helper == "path_literal" and not re.search(r"( TO |read_parquet\()\s*$", before):
                found.append(f"{path}:{node.lineno}: path_literal() outside COPY ... TO and a view's read_parquet")
    return found


def test_no_python_source_writes_a_value_into_sql_text():
    found = [problem for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
             for problem in _pasted_values(path)]
    assert found == []


def test_the_scan_finds_a_pasted_value(tmp_path):
    sample = ROOT / "transforms" / "_pasted_sample.py"
    sample.write_text('def f(con, month, day):\n'
                      '    con.execute(f"DELETE FROM t WHERE month = \'{month}\'")\n'
                      '    con.execute(f"SELECT * FROM t WHERE day = {literal(day)}")\n'
                      '    con.execute("UPDATE t SET a = {}".format(day))\n')
    try:
        assert len(_pasted_values(sample)) == 3
    finally:
        sample.unlink()
