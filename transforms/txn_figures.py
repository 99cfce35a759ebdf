"""Every program's transaction figures as one SQL aggregate, defined from the rules.

``txn_figure_sums(good, txn_type, amount, fee, mcc)`` is a macro written from the rules: over a group of
rows, a list with one ``{program, figure, counted}`` per transaction figure of every program, where
``counted`` sums ``txn_counted`` (sql/txn_counted.sql: capped, times the fee factor, to the cent) over
the rows that are ``good``, of a type the figure counts and not excluded by it (a single amount above
its limit, an excluded merchant category), and is NULL when no row counts.

Being an aggregate per group, it lets the month's one scan per customer (transaction_groups) sum every
figure along with its row counts, and the few customers whose rows need a second look (a shared
txn_id) are summed by the very same expression (txn_figure_month).
"""

from __future__ import annotations

from decimal import Decimal
from itertools import groupby
from operator import itemgetter

import duckdb

from transforms import runner

# The list's element type: money sums are DECIMAL(38, 2) (txn_figure_month.counted).
FIGURE_SUM = "STRUCT(program VARCHAR, figure VARCHAR, counted DECIMAL(38, 2))"


def _money(value: Decimal | None) -> str:
    return "NULL" if value is None else f"CAST({runner.literal(value)} AS DECIMAL(18, 2))"


def _counted(program: str, figure: str, rules: list[dict], excluded_mccs: list[str]) -> str:
    """One figure's list element: its sum over the rows it counts (``rules``: one row per txn_type)."""
    first = rules[0]
    condition = ["good", f"txn_type IN ({', '.join(runner.literal(r['txn_type']) for r in rules)})"]
    if first["exclude_single_above"] is not None:
        condition.append(f"amount <= {_money(first['exclude_single_above'])}")
    if excluded_mccs:
        # A row without a merchant category is never excluded.
        condition.append(f"(mcc IS NULL OR mcc NOT IN ({', '.join(map(runner.literal, excluded_mccs))}))")
    counted = (f"txn_counted(amount, fee, {_money(first['cap_per_transaction'])}, "
               f"{'true' if first['apply_fee_factor'] else 'false'})")
    return (f"{{'program': {runner.literal(program)}, 'figure': {runner.literal(figure)}, "
            f"'counted': sum({counted}) FILTER (WHERE {' AND '.join(condition)})}}")


def define_txn_figure_sums(con: duckdb.DuckDBPyConnection, figure_rules: list[dict], excluded_mcc: list[dict]) -> None:
    """(Re)define ``txn_counted`` and ``txn_figure_sums`` on ``con``.

    ``figure_rules``: per program, figure and txn_type, the figure's cap_per_transaction,
    apply_fee_factor and exclude_single_above; ``excluded_mcc``: per program and figure, an excluded
    merchant category (the shapes of ingestion's rule tables). Names and codes come from validated
    rule files; they are quoted as literals all the same.
    """
    runner.run(con, "txn_counted")
    by_figure = itemgetter("program", "figure")
    mccs: dict[tuple[str, str], list[str]] = {}
    for row in excluded_mcc:
        mccs.setdefault(by_figure(row), []).append(row["mcc"])
    elements = [
        _counted(program, figure, list(rules), sorted(mccs.get((program, figure), [])))
        for (program, figure), rules in groupby(sorted(figure_rules, key=by_figure), key=by_figure)
    ]
    con.execute(f"CREATE OR REPLACE TEMP MACRO txn_figure_sums(good, txn_type, amount, fee, mcc) AS "
                f"CAST([{', '.join(elements)}] AS {FIGURE_SUM}[])")
