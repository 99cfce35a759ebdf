-- name: month_fx_rates
-- kind: temp table
-- reads: fx_rates
-- params: month_end, month_start
-- month_fx_rates: for every day of one month and every currency with rates, the rate that converts
-- that day's amounts (data-contract.md: the rate of the day, or the latest before it; NULL when the
-- currency has none yet). A few hundred rows, so every landed row can look its rate up cheaply.
WITH day AS (
    SELECT CAST(unnest(generate_series(CAST($month_start AS DATE), CAST($month_end AS DATE), INTERVAL 1 DAY)) AS DATE) AS day
),
currency AS (
    SELECT DISTINCT currency FROM fx_rates
),
day_currency AS (
    SELECT c.currency, d.day FROM currency AS c CROSS JOIN day AS d
)
SELECT dc.currency, dc.day, r.cny_per_unit
FROM day_currency AS dc
ASOF LEFT JOIN fx_rates AS r ON r.currency = dc.currency AND dc.day >= r.rate_date
