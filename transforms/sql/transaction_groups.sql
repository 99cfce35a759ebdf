-- transaction_groups: one month's transaction rows counted two ways in one scan. Per customer_id:
-- how many rows pass the checks a row makes by itself, fail them, or cannot be converted to CNY.
-- Per hash of txn_id: the hashes that more than one row has (suspects of a duplicate key; a hash
-- collision only makes a suspect, never hides one). Everything else ingestion needs to know of the
-- month before summing it is read from this small table.
SELECT
    grouping(id_hash) = 0 AS is_id_hash,
    id_hash,
    customer_id,
    count(*) FILTER (WHERE row_problem IS NULL) AS rows_passed,
    count(*) FILTER (WHERE row_problem IS NOT NULL) AS rows_failed,
    count(*) FILTER (WHERE row_problem IS NULL AND fx_problem IS NOT NULL) AS rows_not_converted
FROM (SELECT CASE WHEN txn_id IS NOT NULL THEN hash(txn_id) END AS id_hash, * FROM checked_transactions)
GROUP BY GROUPING SETS ((id_hash), (customer_id))
HAVING grouping(id_hash) = 1 OR (id_hash IS NOT NULL AND count(*) > 1)
