"""Every query in docs/queries.md runs through `tiers sql` against a real warehouse and gives the
numbers the golden scenario says."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from interfaces.cli import app
from interfaces.sql_shell import locked_connection

PROJECT = Path(__file__).resolve().parent.parent
GOLDEN = PROJECT / "tests" / "golden"
QUERIES = re.findall(r"```sql\n(.*?)```", (PROJECT / "docs" / "queries.md").read_text(), re.DOTALL)
EXPECTED = list(csv.DictReader((GOLDEN / "icbc_buffers" / "expected" / "icbc_star.csv").open()))


@pytest.fixture(scope="module")
def warehouse(prefect_harness, tmp_path_factory):
    from flows.runs import backfill

    root = tmp_path_factory.mktemp("queries") / "warehouse"
    backfill.fn(str(GOLDEN / "icbc_buffers" / "landing"), "2024-12", "2026-06", str(root), ["icbc_star"])
    return root


def test_the_page_has_its_queries():
    assert len(QUERIES) >= 7


@pytest.mark.parametrize("query", QUERIES[1:], ids=lambda q: q.split("\n")[0][:40])
def test_each_documented_query_runs_through_tiers_sql(warehouse, query):
    result = CliRunner().invoke(app, ["sql", query, "--warehouse", str(warehouse)])
    assert result.exit_code == 0, result.output
    assert "│" in result.output  # a table was printed


def test_documented_queries_give_the_golden_numbers(warehouse):
    with locked_connection(warehouse) as con:
        check_golden_numbers(con)


def check_golden_numbers(con):
    by_month = con.sql(QUERIES[1]).fetchall()
    june = {(tier, count) for as_of, tier, _, count in by_month if str(as_of) == "2025-06-30"}
    expected_june = [r for r in EXPECTED if r["as_of"] == "2025-06-30"]
    assert june == {(int(t), sum(1 for r in expected_june if r["tier"] == t)) for t in {r["tier"] for r in expected_june}}

    history = con.sql(QUERIES[5]).fetchall()
    recovers = [r for r in EXPECTED if r["customer_id"] == "recovers"]
    assert [(str(h[0]), h[6]) for h in history] == [(r["as_of"], r["reason"]) for r in recovers]

    at_risk = con.sql(QUERIES[4]).fetchall()
    last = max(r["as_of"] for r in EXPECTED)
    assert {row[0] for row in at_risk} == {r["customer_id"] for r in EXPECTED if r["as_of"] == last and r["at_risk"] == "true"}


def test_a_bad_query_is_one_plain_error(warehouse):
    result = CliRunner().invoke(app, ["sql", "SELECT nope FROM icbc_star", "--warehouse", str(warehouse)])
    assert result.exit_code == 1
    assert "query failed" in result.output and "Traceback" not in result.output
