-- balance_duplicates: the rows of a month whose (account_id, balance_date) another row shares.
-- Only rows with a date in the month can be duplicates that matter (any other row already has an
-- earlier problem). To avoid sorting every row, accounts are first grouped by a hash with a bitmask
-- of their days: a group with fewer distinct days than rows is a suspect (a hash collision only
-- makes a suspect, never hides one), and only suspects' rows are compared exactly.
WITH dated AS (
    SELECT source_file, source_row, account_id, day
    FROM landed_balances
    WHERE account_id IS NOT NULL AND day BETWEEN $month_start AND $month_end
),
suspect AS (
    SELECT hash(account_id) AS account_hash
    FROM dated
    GROUP BY account_hash
    HAVING count(*) > bit_count(bit_or(CAST(1 AS UBIGINT) << day(day)))
),
keyed AS (
    SELECT source_file, source_row, count(*) OVER (PARTITION BY account_id, day) AS key_rows
    FROM dated
    WHERE hash(account_id) IN (SELECT account_hash FROM suspect)
)
SELECT source_file, source_row
FROM keyed
WHERE key_rows > 1
