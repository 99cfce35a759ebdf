-- name: txn_figure_month
-- kind: statement
-- reads: transaction_duplicates, transaction_groups, customers, validated_transactions, txn_figure_sums
-- registered: txn_figure_sums
-- params: month_start
-- txn_figure_month for one month: each program's transaction figures per customer, each transaction
-- counted as txn_counted after the program's exclusions, over the good rows only (txn_figure_sums).
-- The month's scan (transaction_groups) summed every customer's rows that pass their own checks and
-- convert; for a known customer none of whose rows shares its txn_id, those are exactly the good rows.
-- A customer with a shared txn_id is summed again from the validated rows. An unknown customer's rows
-- are all bad: no figures.
INSERT INTO txn_figure_month
WITH duplicated AS (
    SELECT DISTINCT customer_id FROM transaction_duplicates WHERE customer_id IS NOT NULL
),
customer_sums AS (
    SELECT g.customer_id, g.figure_sums
    FROM transaction_groups AS g
    JOIN customers AS k ON k.customer_id = g.customer_id
    WHERE NOT g.is_id_hash AND g.customer_id NOT IN (SELECT customer_id FROM duplicated)
    UNION ALL
    SELECT customer_id, txn_figure_sums(reason IS NULL, txn_type, amount_cny, fee, merchant_category)
    FROM validated_transactions
    WHERE customer_id IN (SELECT customer_id FROM duplicated)
    GROUP BY customer_id
),
figure_sum AS (
    SELECT customer_id, unnest(figure_sums) AS f FROM customer_sums
)
SELECT f.program, f.figure, CAST($month_start AS DATE) AS month, customer_id, f.counted
FROM figure_sum
WHERE f.counted IS NOT NULL
