-- name: card_points_month
-- kind: statement
-- reads: card_point_customers, card_point_duplicates, customers, validated_card_points
-- params: month_start
-- card_points_month for one month: each customer's points over the good rows only. A known customer
-- none of whose rows shares its entry_id has exactly the rows that passed their own checks
-- (card_point_customers); a customer with a shared entry_id is summed again from the validated rows.
-- An unknown customer's rows are all bad: no points.
INSERT INTO card_points_month
WITH duplicated AS (
    SELECT DISTINCT customer_id FROM card_point_duplicates WHERE customer_id IS NOT NULL
),
customer_points AS (
    SELECT customer_id, points
    FROM card_point_customers
    WHERE known AND rows_passed > 0 AND customer_id NOT IN (SELECT customer_id FROM duplicated)
    UNION ALL
    SELECT customer_id, sum(points_value)
    FROM validated_card_points
    WHERE reason IS NULL AND customer_id IN (SELECT customer_id FROM duplicated)
    GROUP BY customer_id
)
SELECT CAST($month_start AS DATE) AS month, customer_id, CAST(points AS BIGINT) AS points
FROM customer_points
WHERE points IS NOT NULL
