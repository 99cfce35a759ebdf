-- name: transaction_duplicates
-- kind: temp table
-- reads: landed_transactions, transaction_groups
-- registered: landed_transactions
-- transaction_duplicates: the rows of a month whose txn_id another row shares (whatever else is
-- wrong with them), with the customer each names. Only the rows whose id hash more than one row
-- has (transaction_groups) are read again and compared exactly.
WITH keyed AS (
    SELECT file_ordinal, source_row, customer_id, count(*) OVER (PARTITION BY txn_id) AS key_rows
    FROM landed_transactions
    WHERE txn_id IS NOT NULL
      AND hash(txn_id) IN (SELECT id_hash FROM transaction_groups WHERE is_id_hash)
)
SELECT file_ordinal, source_row, customer_id
FROM keyed
WHERE key_rows > 1
