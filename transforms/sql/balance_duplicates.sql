-- name: balance_duplicates
-- kind: temp table
-- reads: balance_accounts, landed_balances
-- registered: landed_balances
-- params: month_end, month_start
-- balance_duplicates: the rows of a month whose (account_id, balance_date) another row shares.
-- Only rows dated in the month can be duplicates that matter (any other row has an earlier
-- problem). An account has one when it has more dated rows than distinct days (balance_accounts);
-- only those accounts' rows are read again and compared.
WITH suspect AS (
    SELECT account_id
    FROM balance_accounts
    WHERE account_id IS NOT NULL
    GROUP BY account_id
    HAVING sum(dated_rows) > bit_count(bit_or(dated_days))
),
keyed AS (
    SELECT file_ordinal, source_row, account_id, count(*) OVER (PARTITION BY account_id, day) AS key_rows
    FROM landed_balances
    WHERE account_id IN (SELECT account_id FROM suspect) AND day BETWEEN $month_start AND $month_end
)
SELECT file_ordinal, source_row, account_id
FROM keyed
WHERE key_rows > 1
