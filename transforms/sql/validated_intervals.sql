-- name: validated_intervals
-- kind: temp table
-- reads: customers, cell_types
-- params: staged, codes, code_column, start_column, end_column
-- validated_intervals: every staged row of a reference interval source (products, credit_events: a
-- customer holds a code from a start date to an optional end date), typed, with its first problem (NULLs
-- when good). One validation for all of them: the staged table and its column names come bound from the
-- source's declaration (rules/sources.py, DataSource.interval_params); the staged columns pass through.
WITH named AS (
    SELECT
        t.*,
        struct_extract(t, $code_column) AS code,
        struct_extract(t, $start_column) AS start_text,
        struct_extract(t, $end_column) AS end_text
    FROM query_table($staged) AS t
),
typed AS (
    SELECT *, text_date(start_text) AS start_day, text_date(end_text) AS end_day
    FROM named
),
checked AS (
    SELECT
        t.*,
        CASE
            WHEN t.customer_id IS NULL THEN 'customer_id:missing_value'
            WHEN padded(t.customer_id) THEN 'customer_id:padded_value'
            WHEN t.code IS NULL THEN $code_column || ':missing_value'
            WHEN t.start_text IS NULL THEN $start_column || ':missing_value'
            WHEN t.start_day IS NULL THEN $start_column || ':unparseable'
            WHEN t.end_text IS NOT NULL AND t.end_day IS NULL THEN $end_column || ':unparseable'
            WHEN NOT list_contains($codes, t.code) THEN $code_column || ':unknown_code'
            WHEN c.customer_id IS NULL THEN 'customer_id:unknown_customer'
            WHEN t.end_day < t.start_day THEN $end_column || ':end_before_start'
        END AS problem
    FROM typed AS t
    LEFT JOIN customers AS c ON c.customer_id = t.customer_id
)
SELECT
    * EXCLUDE (code, start_text, end_text, problem),
    split_part(problem, ':', 1) AS problem_column,
    split_part(problem, ':', 2) AS reason
FROM checked
