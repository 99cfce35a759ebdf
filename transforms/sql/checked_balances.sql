-- name: checked_balances
-- kind: view
-- reads: landed_balances, month_fx_rates, cell_types
-- registered: landed_balances
-- params: month_end, month_start, product_codes, risk_classes
-- checked_balances: every landed balance row with its first problem that the row shows by itself
-- (row_problem, 'column:reason'), before the checks that need other rows or tables.
-- Written so that the common row costs little: a typed value that is there proves its cell was
-- given (a Parquet DATE is not turned into text just to see that it is not empty), and the
-- pattern and code lists are consulted only for cells that are not the usual ones.
SELECT
    l.*,
    COALESCE(l.currency, 'CNY') AS currency_code,
    COALESCE(l.risk_class, 'normal') AS risk,
    -- In CNY; another currency at the day's rate (month_fx_rates), when it has one and the result fits.
    CASE WHEN l.currency IS NULL OR l.currency = 'CNY' THEN l.amount
         WHEN to_cny(l.amount, r.cny_per_unit) < 10000000000000000 THEN CAST(to_cny(l.amount, r.cny_per_unit) AS DECIMAL(18, 2))
    END AS balance_cny,
    -- What converting has against it (it counts only for a row without a problem of its own).
    CASE WHEN l.currency IS NULL OR l.currency = 'CNY' THEN NULL
         WHEN r.cny_per_unit IS NULL THEN 'currency:no_fx_rate'
         WHEN to_cny(l.amount, r.cny_per_unit) >= 10000000000000000 THEN 'balance:out_of_range'
    END AS fx_problem,
    CASE
        WHEN l.account_id IS NULL THEN 'account_id:missing_value'
        WHEN l.customer_id IS NULL THEN 'customer_id:missing_value'
        WHEN l.product_code IS NULL THEN 'product_code:missing_value'
        WHEN l.day IS NULL AND l.balance_date IS NULL THEN 'balance_date:missing_value'
        WHEN l.amount IS NULL AND l.balance IS NULL THEN 'balance:missing_value'
        WHEN l.day IS NULL THEN 'balance_date:unparseable'
        WHEN l.amount IS NULL THEN 'balance:unparseable'
        WHEN l.amount < 0 THEN 'balance:out_of_range'
        WHEN l.currency <> 'CNY' AND NOT regexp_full_match(l.currency, '[A-Z]{3}') THEN 'currency:bad_currency'
        WHEN l.day < $month_start OR l.day > $month_end THEN 'balance_date:outside_month'
        WHEN l.product_code NOT IN (SELECT unnest($product_codes)) THEN 'product_code:unknown_code'
        -- No risk_class means normal, which the vocabulary always holds.
        WHEN l.risk_class NOT IN (SELECT unnest($risk_classes)) THEN 'risk_class:unknown_code'
    END AS row_problem
FROM landed_balances AS l
LEFT JOIN month_fx_rates AS r ON r.currency = l.currency AND r.day = l.day
