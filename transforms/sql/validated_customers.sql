-- name: validated_customers
-- kind: temp table
-- reads: staged_customers, cell_types
-- registered: staged_customers
-- validated_customers: every staged customer row with its first problem (NULLs when good).
WITH keyed AS (
    SELECT *, count(*) OVER (PARTITION BY customer_id) AS key_rows
    FROM staged_customers
),
checked AS (
    SELECT
        *,
        CASE
            WHEN customer_id IS NULL THEN 'customer_id:missing_value'
            WHEN padded(customer_id) THEN 'customer_id:padded_value'
            WHEN key_rows > 1 THEN 'customer_id:duplicate_key'
        END AS problem
    FROM keyed
)
SELECT
    source_file, source_row, customer_id, segment,
    split_part(problem, ':', 1) AS problem_column,
    split_part(problem, ':', 2) AS reason
FROM checked
