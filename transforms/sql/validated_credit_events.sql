-- name: validated_credit_events
-- kind: temp table
-- reads: staged_credit_events, customers
-- registered: staged_credit_events
-- params: credit_event_codes
-- validated_credit_events: every staged credit-event row, typed, with its first problem (NULLs when good).
WITH typed AS (
    SELECT
        *,
        CASE WHEN regexp_full_match(started_on, '[0-9]{4}-[0-9]{2}-[0-9]{2}') THEN TRY_CAST(started_on AS DATE) END
            AS started_day,
        CASE WHEN regexp_full_match(cured_on, '[0-9]{4}-[0-9]{2}-[0-9]{2}') THEN TRY_CAST(cured_on AS DATE) END
            AS cured_day
    FROM staged_credit_events
),
checked AS (
    SELECT
        t.*,
        CASE
            WHEN t.customer_id IS NULL THEN 'customer_id:missing_value'
            -- Leading or trailing whitespace (as the macro padded() in cell_types.sql).
            WHEN regexp_matches(t.customer_id, '^[\s\p{Z}]|[\s\p{Z}]$') THEN 'customer_id:padded_value'
            WHEN t.event_code IS NULL THEN 'event_code:missing_value'
            WHEN t.started_on IS NULL THEN 'started_on:missing_value'
            WHEN t.started_day IS NULL THEN 'started_on:unparseable'
            WHEN t.cured_on IS NOT NULL AND t.cured_day IS NULL THEN 'cured_on:unparseable'
            WHEN NOT list_contains($credit_event_codes, t.event_code) THEN 'event_code:unknown_code'
            WHEN c.customer_id IS NULL THEN 'customer_id:unknown_customer'
            WHEN t.cured_day < t.started_day THEN 'cured_on:end_before_start'
        END AS problem
    FROM typed AS t
    LEFT JOIN customers AS c ON c.customer_id = t.customer_id
)
SELECT
    source_file, source_row, customer_id, event_code, started_on, cured_on, started_day, cured_day,
    split_part(problem, ':', 1) AS problem_column,
    split_part(problem, ':', 2) AS reason
FROM checked
