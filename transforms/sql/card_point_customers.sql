-- name: card_point_customers
-- kind: temp table
-- reads: checked_card_points, customers
-- card_point_customers: per customer_id that a month's card-points rows name, in the month's one full
-- scan: how many rows pass the checks a row makes by itself, how many fail them, the points of those
-- that pass, and whether the customer is known (as balance_customers: the unknown ones' rows are
-- quarantined by joining this small table, and ingestion remembers the list).
WITH named AS (
    SELECT
        customer_id,
        count(*) FILTER (WHERE row_problem IS NULL) AS rows_passed,
        count(*) FILTER (WHERE row_problem IS NOT NULL) AS rows_failed,
        -- Points need no conversion: every row that passes is used.
        CAST(0 AS BIGINT) AS rows_not_converted,
        sum(points_value) FILTER (WHERE row_problem IS NULL) AS points
    FROM checked_card_points
    GROUP BY customer_id
)
SELECT n.*, k.customer_id IS NOT NULL AS known
FROM named AS n
LEFT JOIN customers AS k ON k.customer_id = n.customer_id
