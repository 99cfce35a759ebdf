-- validated_transactions: every staged row of one month's transaction file(s), typed, converted to
-- CNY, with its first problem (problem_column, reason) or NULLs when the row is good.
WITH typed AS (
    SELECT
        s.*,
        CASE WHEN regexp_full_match(s.txn_date, '[0-9]{4}-[0-9]{2}-[0-9]{2}')
             THEN TRY_CAST(s.txn_date AS DATE) END AS day,
        CASE WHEN regexp_full_match(s.amount, '-?[0-9]{1,16}(\.[0-9]{1,2})?')
             THEN CAST(s.amount AS DECIMAL(18, 2)) END AS txn_amount,
        CASE WHEN s.fee_factor IS NULL THEN CAST(1 AS DECIMAL(9, 6))
             WHEN regexp_full_match(s.fee_factor, '-?[0-9]{1,2}(\.[0-9]{1,6})?')
             THEN CAST(s.fee_factor AS DECIMAL(9, 6)) END AS fee,
        COALESCE(s.currency, 'CNY') AS currency_code
    FROM staged_transactions AS s
),
keyed AS (
    SELECT *, count(*) OVER (PARTITION BY txn_id) AS key_rows
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
            WHEN r.txn_id IS NULL THEN 'txn_id:missing_value'
            WHEN r.account_id IS NULL THEN 'account_id:missing_value'
            WHEN r.customer_id IS NULL THEN 'customer_id:missing_value'
            WHEN r.txn_date IS NULL THEN 'txn_date:missing_value'
            WHEN r.txn_type IS NULL THEN 'txn_type:missing_value'
            WHEN r.amount IS NULL THEN 'amount:missing_value'
            WHEN r.day IS NULL THEN 'txn_date:unparseable'
            WHEN r.txn_amount IS NULL THEN 'amount:unparseable'
            WHEN r.txn_amount <= 0 THEN 'amount:out_of_range'
            WHEN r.fee IS NULL THEN 'fee_factor:unparseable'
            WHEN r.fee < 0 OR r.fee > 1 THEN 'fee_factor:out_of_range'
            WHEN NOT regexp_full_match(r.currency_code, '[A-Z]{3}') THEN 'currency:bad_currency'
            WHEN r.merchant_category IS NOT NULL AND NOT regexp_full_match(r.merchant_category, '[0-9]{4}')
                THEN 'merchant_category:unparseable'
            WHEN r.day < $month_start OR r.day > $month_end THEN 'txn_date:outside_month'
            WHEN NOT list_contains($txn_types, r.txn_type) THEN 'txn_type:unknown_code'
            WHEN c.customer_id IS NULL THEN 'customer_id:unknown_customer'
            WHEN r.key_rows > 1 THEN 'txn_id:duplicate_key'
            WHEN r.currency_code <> 'CNY' AND r.cny_per_unit IS NULL THEN 'currency:no_fx_rate'
            -- Converted, it must still fit DECIMAL(18, 2).
            WHEN CAST(r.txn_amount AS DECIMAL(38, 2)) * COALESCE(r.cny_per_unit, 1) >= 10000000000000000 THEN 'amount:out_of_range'
        END AS problem
    FROM rated AS r
    LEFT JOIN customers AS c ON c.customer_id = r.customer_id
)
SELECT
    source_file, source_row, txn_id, account_id, customer_id, txn_date, txn_type, amount, currency,
    merchant_category, fee_factor,
    day, fee,
    CAST(CASE WHEN currency_code = 'CNY' THEN txn_amount ELSE round(CAST(txn_amount AS DECIMAL(38, 2)) * cny_per_unit, 2) END
         AS DECIMAL(18, 2)) AS amount_cny,
    split_part(problem, ':', 1) AS problem_column,
    split_part(problem, ':', 2) AS reason
FROM checked
