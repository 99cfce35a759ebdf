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

from itertools import groupby
from operator import itemgetter

import duckdb

from transforms import runner

# The list's element type: money sums are DECIMAL(38, 2) (txn_figure_month.counted).
FIGURE_SUM = "STRUCT(program VARCHAR, figure VARCHAR, counted DECIMAL(38, 2))"
# One figure's rule, as bound into the connection's variable ``txn_figure_rules``.
_RULE = ("STRUCT(program VARCHAR, figure VARCHAR, txn_types VARCHAR[], cap DECIMAL(18, 2), "
         "apply_fee_factor BOOLEAN, exclude_single_above DECIMAL(18, 2), excluded_mccs VARCHAR[])")


def _counted(position: int, rule: dict) -> str:
    """The list element of the figure at ``position`` (from 1) in ``txn_figure_rules``: its sum over the
    rows it counts. The rule's values are read with getvariable(), which DuckDB folds into constants
    where the macro is used: nothing of the rules is written into the SQL text, only which of its
    conditions the figure has (a clause it does not need would cost every row)."""
    bound = f"getvariable('txn_figure_rules')[{position}]"
    condition = ["good", f"list_contains({bound}.txn_types, txn_type)"]
    if rule["exclude_single_above"] is not None:
        condition.append(f"amount <= {bound}.exclude_single_above")
    if rule["excluded_mccs"]:
        # A row without a merchant category is never excluded.
        condition.append(f"(mcc IS NULL OR NOT list_contains({bound}.excluded_mccs, mcc))")
    counted = f"txn_counted(amount, fee, {bound}.cap, {bound}.apply_fee_factor)"
    return (f"{{'program': {bound}.program, 'figure': {bound}.figure, "
            f"'counted': sum({counted}) FILTER (WHERE {' AND '.join(condition)})}}")


def define_txn_figure_sums(con: duckdb.DuckDBPyConnection, figure_rules: list[dict], excluded_mcc: list[dict]) -> None:
    """(Re)define ``txn_counted`` and ``txn_figure_sums`` on ``con``.

    ``figure_rules``: per program, figure and txn_type, the figure's cap_per_transaction,
    apply_fee_factor and exclude_single_above; ``excluded_mcc``: per program and figure, an excluded
    merchant category (the shapes of ingestion's rule tables). One rule per figure is bound into the
    variable ``txn_figure_rules``; the macro has one list element per figure, which reads it.
    """
    runner.run(con, "txn_counted")
    by_figure = itemgetter("program", "figure")
    mccs: dict[tuple[str, str], list[str]] = {}
    for row in excluded_mcc:
        mccs.setdefault(by_figure(row), []).append(row["mcc"])
    rules = []
    for (program, figure), rows in groupby(sorted(figure_rules, key=by_figure), key=by_figure):
        rows = list(rows)
        first = rows[0]
        rules.append({"program": program, "figure": figure, "txn_types": [r["txn_type"] for r in rows],
                      "cap": first["cap_per_transaction"], "apply_fee_factor": bool(first["apply_fee_factor"]),
                      "exclude_single_above": first["exclude_single_above"],
                      "excluded_mccs": sorted(mccs.get((program, figure), []))})
    con.execute(f"SET VARIABLE txn_figure_rules = CAST($rules AS {_RULE}[])", {"rules": rules})
    elements = [_counted(position, rule) for position, rule in enumerate(rules, start=1)]
    con.execute(f"CREATE OR REPLACE TEMP MACRO txn_figure_sums(good, txn_type, amount, fee, mcc) AS "
                f"CAST([{', '.join(elements)}] AS {FIGURE_SUM}[])")
