-- name: validated_fx_rates
-- kind: temp table
-- reads: staged_fx_rates, cell_types
-- registered: staged_fx_rates
-- validated_fx_rates: every staged rate row, typed, with its first problem (NULLs when good).
WITH typed AS (
    SELECT
        *,
        text_date(rate_date) AS day,
        CASE WHEN regexp_full_match(cny_per_unit, '-?[0-9]{1,9}(\.[0-9]{1,8})?')
             THEN CAST(cny_per_unit AS DECIMAL(18, 8)) END AS rate,
        count(*) OVER (PARTITION BY currency, rate_date) AS key_rows
    FROM staged_fx_rates
),
checked AS (
    SELECT
        *,
        CASE
            WHEN rate_date IS NULL THEN 'rate_date:missing_value'
            WHEN currency IS NULL THEN 'currency:missing_value'
            WHEN cny_per_unit IS NULL THEN 'cny_per_unit:missing_value'
            WHEN day IS NULL THEN 'rate_date:unparseable'
            WHEN rate IS NULL THEN 'cny_per_unit:unparseable'
            WHEN rate <= 0 THEN 'cny_per_unit:out_of_range'
            WHEN NOT regexp_full_match(currency, '[A-Z]{3}') THEN 'currency:bad_currency'
            WHEN key_rows > 1 THEN 'rate_date:duplicate_key'
        END AS problem
    FROM typed
)
SELECT
    source_file, source_row, rate_date, currency, cny_per_unit, day, rate,
    split_part(problem, ':', 1) AS problem_column,
    split_part(problem, ':', 2) AS reason
FROM checked
