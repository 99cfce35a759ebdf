-- transaction_customers: per customer_id that a month's rows name, how many of its rows pass the checks a
-- row makes by itself, how many fail them or cannot be converted to CNY, and whether the customer is known. One scan, once
-- per month: the rows of the few unknown customers are quarantined by joining this small table
-- (not every customer), the counts tell whether the month has bad rows at all, and ingestion
-- remembers the list to tell when a change in the customers file touches the month.
WITH named AS (
    SELECT
        customer_id,
        count(*) FILTER (WHERE row_problem IS NULL) AS rows_passed,
        count(*) FILTER (WHERE row_problem IS NOT NULL) AS rows_failed,
        count(*) FILTER (WHERE row_problem IS NULL AND fx_problem IS NOT NULL) AS rows_not_converted
    FROM checked_transactions
    GROUP BY customer_id
)
SELECT n.customer_id, n.rows_passed, n.rows_failed, n.rows_not_converted, k.customer_id IS NOT NULL AS known
FROM named AS n
LEFT JOIN customers AS k ON k.customer_id = n.customer_id
