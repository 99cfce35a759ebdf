-- validated_balances: every staged row of one month's balance file(s), typed, converted to CNY,
-- with its first problem (problem_column, reason) or NULLs when the row is good.
WITH typed AS (
    SELECT
        s.*,
        CASE WHEN regexp_full_match(s.balance_date, '[0-9]{4}-[0-9]{2}-[0-9]{2}')
             THEN TRY_CAST(s.balance_date AS DATE) END AS day,
        -- The sign is allowed by the pattern so that a negative balance reads as out of range.
        CASE WHEN regexp_full_match(s.balance, '-?[0-9]{1,16}(\.[0-9]{1,2})?')
             THEN CAST(s.balance AS DECIMAL(18, 2)) END AS amount,
        COALESCE(s.currency, 'CNY') AS currency_code,
        COALESCE(s.risk_class, 'normal') AS risk
    FROM staged_balances AS s
),
keyed AS (
    SELECT *, count(*) OVER (PARTITION BY account_id, balance_date) AS key_rows
    FROM typed
),
rated AS (
    -- The latest rate on or before the day, for the few foreign-currency rows only: an ASOF join
    -- sorts its whole input, and CNY rows need no rate.
    SELECT k.*, CAST(NULL AS DECIMAL(18, 8)) AS cny_per_unit
    FROM keyed AS k
    WHERE k.currency_code = 'CNY'
    UNION ALL
    SELECT k.*, r.cny_per_unit
    FROM keyed AS k
    ASOF LEFT JOIN fx_rates AS r ON r.currency = k.currency_code AND k.day >= r.rate_date
    WHERE k.currency_code <> 'CNY'
),
checked AS (
    SELECT
        r.*,
        CASE
            WHEN r.account_id IS NULL THEN 'account_id:missing_value'
            WHEN r.customer_id IS NULL THEN 'customer_id:missing_value'
            WHEN r.product_code IS NULL THEN 'product_code:missing_value'
            WHEN r.balance_date IS NULL THEN 'balance_date:missing_value'
            WHEN r.balance IS NULL THEN 'balance:missing_value'
            WHEN r.day IS NULL THEN 'balance_date:unparseable'
            WHEN r.amount IS NULL THEN 'balance:unparseable'
            WHEN r.amount < 0 THEN 'balance:out_of_range'
            WHEN NOT regexp_full_match(r.currency_code, '[A-Z]{3}') THEN 'currency:bad_currency'
            WHEN r.day < $month_start OR r.day > $month_end THEN 'balance_date:outside_month'
            WHEN NOT list_contains($product_codes, r.product_code) THEN 'product_code:unknown_code'
            WHEN NOT list_contains($risk_classes, r.risk) THEN 'risk_class:unknown_code'
            WHEN c.customer_id IS NULL THEN 'customer_id:unknown_customer'
            WHEN r.key_rows > 1 THEN 'balance_date:duplicate_key'
            WHEN r.currency_code <> 'CNY' AND r.cny_per_unit IS NULL THEN 'currency:no_fx_rate'
            -- Converted, it must still fit DECIMAL(18, 2).
            WHEN CAST(r.amount AS DECIMAL(38, 2)) * COALESCE(r.cny_per_unit, 1) >= 10000000000000000 THEN 'balance:out_of_range'
        END AS problem
    FROM rated AS r
    LEFT JOIN customers AS c ON c.customer_id = r.customer_id
)
SELECT
    source_file, source_row, account_id, customer_id, product_code, balance_date, balance, currency, risk_class,
    day, risk,
    -- Converted row by row, rounded half-up to the cent, before anything is summed (widened first:
    -- DECIMAL(18, 2) * DECIMAL(18, 8) overflows DuckDB's 18-digit multiply for large balances).
    CAST(CASE WHEN currency_code = 'CNY' THEN amount ELSE round(CAST(amount AS DECIMAL(38, 2)) * cny_per_unit, 2) END AS DECIMAL(18, 2))
        AS balance_cny,
    split_part(problem, ':', 1) AS problem_column,
    split_part(problem, ':', 2) AS reason
FROM checked
