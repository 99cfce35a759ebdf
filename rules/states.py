"""The terms of the tier state machine (programs.md section 3), each defined once.

The evaluation (transforms/sql/tier_decisions.sql) decides every customer's tier with these terms;
explain and the report read its decisions from the snapshot and describe them with the same terms,
never with a copy. The per-customer terms are DuckDB macros (``define``), so the evaluation SQL and
each reader's query call one definition; a reader evaluates them on the snapshot's own columns.
"""

from __future__ import annotations

import duckdb

# Why the tier in force is what it is (the snapshot's ``reason``), in the order a customer meets them.
REASONS = ("initial", "upgrade", "meets", "held_until_review", "buffer", "downgrade", "credit_cap")

# earned_tier: what this month's figures or a held product earn (a floor lifts, never lowers).
# falls_at_review: a failed review, with failed_before already in the buffer, is the one the tier falls at.
_MACROS = """
CREATE OR REPLACE TEMP MACRO earned_tier(computed_tier, floor_tier) AS
    greatest(computed_tier, COALESCE(floor_tier, 0));
CREATE OR REPLACE TEMP MACRO falls_at_review(failed_before, reviews_to_fall) AS
    failed_before + 1 >= reviews_to_fall;
"""


def define(con: duckdb.DuckDBPyConnection) -> None:
    """Make the state machine's terms callable on ``con`` (temporary: this connection only)."""
    con.execute(_MACROS)


def falls_at_review(con: duckdb.DuckDBPyConnection, failed_before: int, reviews_to_fall: int) -> bool:
    """``falls_at_review`` for one customer, on a connection where ``define`` ran."""
    [(falls,)] = con.execute("SELECT falls_at_review($failed, $k)",
                             {"failed": failed_before, "k": reviews_to_fall}).fetchall()
    return falls
