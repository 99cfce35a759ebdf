-- name: transaction_groups
-- kind: temp table
-- reads: checked_transactions, landed_transactions, txn_figure_sums
-- registered: landed_transactions, txn_figure_sums
-- transaction_groups: one month's transaction rows grouped two ways. Per customer_id, in the month's
-- one full scan: how many rows pass the checks a row makes by itself, fail them, or cannot be
-- converted to CNY, and every program's transaction figures summed over the rows that pass and
-- convert (txn_figure_sums). Per hash of txn_id: the hashes that more than one row has (suspects
-- of a duplicate key; a hash collision only makes a suspect, never hides one), counted apart so
-- that its many groups carry nothing else. Everything else ingestion needs to know of the month
-- is read from this small table.
SELECT
    false AS is_id_hash,
    CAST(NULL AS UBIGINT) AS id_hash,
    customer_id,
    count(*) FILTER (WHERE row_problem IS NULL) AS rows_passed,
    count(*) FILTER (WHERE row_problem IS NOT NULL) AS rows_failed,
    count(*) FILTER (WHERE row_problem IS NULL AND fx_problem IS NOT NULL) AS rows_not_converted,
    txn_figure_sums(row_problem IS NULL AND fx_problem IS NULL, txn_type, amount_cny, fee, merchant_category)
        AS figure_sums
FROM checked_transactions
GROUP BY customer_id
UNION ALL
SELECT true, hash(txn_id) AS id_hash, NULL, NULL, NULL, NULL, NULL
FROM landed_transactions
WHERE txn_id IS NOT NULL
GROUP BY id_hash
HAVING count(*) > 1
