-- name: balance_customers
-- kind: temp table
-- reads: balance_accounts, customers
-- balance_customers: per customer_id that a month's balance rows name, how many of its rows pass
-- the checks a row makes by itself, how many fail them or cannot be converted to CNY, and whether
-- the customer is known. The rows of the few unknown customers are quarantined by joining this
-- small table (not every customer), the counts tell whether the month has bad rows at all, and
-- ingestion remembers the list to tell when a change in the customers file touches the month.
WITH named AS (
    SELECT
        customer_id,
        sum(rows_passed) AS rows_passed,
        sum(rows_failed) AS rows_failed,
        sum(rows_not_converted) AS rows_not_converted
    FROM balance_accounts
    GROUP BY customer_id
)
SELECT n.customer_id, n.rows_passed, n.rows_failed, n.rows_not_converted, k.customer_id IS NOT NULL AS known
FROM named AS n
LEFT JOIN customers AS k ON k.customer_id = n.customer_id
