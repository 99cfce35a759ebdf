-- name: transaction_customers
-- kind: temp table
-- reads: transaction_groups, customers
-- transaction_customers: per customer_id that a month's transaction rows name, how many of its rows
-- pass the checks a row makes by itself, how many fail them or cannot be converted to CNY, and
-- whether the customer is known. The rows of the few unknown customers are quarantined by joining
-- this small table (not every customer), the counts tell whether the month has bad rows at all,
-- and ingestion remembers the list to tell when a change in the customers file touches the month.
SELECT g.customer_id, g.rows_passed, g.rows_failed, g.rows_not_converted, k.customer_id IS NOT NULL AS known
FROM transaction_groups AS g
LEFT JOIN customers AS k ON k.customer_id = g.customer_id
WHERE NOT g.is_id_hash
