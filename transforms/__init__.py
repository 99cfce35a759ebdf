"""The SQL stages: landing files -> validated warehouse tables -> monthly figures -> evaluated tiers.

Each file in ``sql/`` produces one table (or one result) as a chain of CTEs ending in one SELECT,
with parameters bound (``$month_start``), never formatted into the text.
"""
