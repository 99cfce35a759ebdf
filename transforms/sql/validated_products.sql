-- name: validated_products
-- kind: temp table
-- reads: staged_products, customers
-- registered: staged_products
-- params: held_product_codes
-- validated_products: every staged held-product row, typed, with its first problem (NULLs when good).
WITH typed AS (
    SELECT
        *,
        CASE WHEN regexp_full_match(opened_on, '[0-9]{4}-[0-9]{2}-[0-9]{2}') THEN TRY_CAST(opened_on AS DATE) END
            AS opened_day,
        CASE WHEN regexp_full_match(closed_on, '[0-9]{4}-[0-9]{2}-[0-9]{2}') THEN TRY_CAST(closed_on AS DATE) END
            AS closed_day
    FROM staged_products
),
checked AS (
    SELECT
        t.*,
        CASE
            WHEN t.customer_id IS NULL THEN 'customer_id:missing_value'
            -- Leading or trailing whitespace (as the macro padded() in cell_types.sql).
            WHEN regexp_matches(t.customer_id, '^[\s\p{Z}]|[\s\p{Z}]$') THEN 'customer_id:padded_value'
            WHEN t.product_code IS NULL THEN 'product_code:missing_value'
            WHEN t.opened_on IS NULL THEN 'opened_on:missing_value'
            WHEN t.opened_day IS NULL THEN 'opened_on:unparseable'
            WHEN t.closed_on IS NOT NULL AND t.closed_day IS NULL THEN 'closed_on:unparseable'
            WHEN NOT list_contains($held_product_codes, t.product_code) THEN 'product_code:unknown_code'
            WHEN c.customer_id IS NULL THEN 'customer_id:unknown_customer'
            WHEN t.closed_day < t.opened_day THEN 'closed_on:end_before_start'
        END AS problem
    FROM typed AS t
    LEFT JOIN customers AS c ON c.customer_id = t.customer_id
)
SELECT
    source_file, source_row, customer_id, product_code, opened_on, closed_on, opened_day, closed_day,
    split_part(problem, ':', 1) AS problem_column,
    split_part(problem, ':', 2) AS reason
FROM checked
