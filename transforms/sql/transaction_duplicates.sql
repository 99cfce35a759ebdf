-- transaction_duplicates: the rows of a month whose txn_id another row shares (whatever else is
-- wrong with them). Ids are first counted by a hash, which is cheaper than comparing text; a hash
-- collision only makes a suspect, never hides one, and only suspects' ids are compared exactly.
WITH suspect AS (
    SELECT hash(txn_id) AS id_hash
    FROM landed_transactions
    WHERE txn_id IS NOT NULL
    GROUP BY id_hash
    HAVING count(*) > 1
),
keyed AS (
    SELECT file_ordinal, source_row, count(*) OVER (PARTITION BY txn_id) AS key_rows
    FROM landed_transactions
    WHERE txn_id IS NOT NULL AND hash(txn_id) IN (SELECT id_hash FROM suspect)
)
SELECT file_ordinal, source_row
FROM keyed
WHERE key_rows > 1
