-- name: checked_transactions
-- kind: view
-- reads: landed_transactions, month_fx_rates, cell_types
-- registered: landed_transactions
-- params: month_end, month_start, txn_types
-- checked_transactions: every landed transaction row with its first problem that the row shows by
-- itself (row_problem, 'column:reason'), before the checks that need other rows or tables.
-- Written so that the common row costs little: a typed value that is there proves its cell was
-- given (a Parquet DECIMAL is not turned into text just to see that it is not empty), and the
-- patterns and code lists are consulted only for cells that are not the usual ones.
WITH typed AS (
    SELECT
        l.*,
        -- No fee factor means the full amount counts.
        CASE WHEN l.fee_value IS NOT NULL THEN l.fee_value WHEN l.fee_factor IS NULL THEN CAST(1 AS DECIMAL(9, 6)) END AS fee,
        COALESCE(l.currency, 'CNY') AS currency_code,
        -- In CNY; another currency at the day's rate (month_fx_rates), when it has one and the result fits.
        CASE WHEN l.currency IS NULL OR l.currency = 'CNY' THEN l.txn_amount
             WHEN to_cny(l.txn_amount, r.cny_per_unit) < 10000000000000000
                 THEN CAST(to_cny(l.txn_amount, r.cny_per_unit) AS DECIMAL(18, 2))
        END AS amount_cny,
        -- What converting has against it (it counts only for a row without a problem of its own).
        CASE WHEN l.currency IS NULL OR l.currency = 'CNY' THEN NULL
             WHEN r.cny_per_unit IS NULL THEN 'currency:no_fx_rate'
             WHEN to_cny(l.txn_amount, r.cny_per_unit) >= 10000000000000000 THEN 'amount:out_of_range'
        END AS fx_problem
    FROM landed_transactions AS l
    LEFT JOIN month_fx_rates AS r ON r.currency = l.currency AND r.day = l.day
)
SELECT
    t.*,
    CASE
        WHEN t.txn_id IS NULL THEN 'txn_id:missing_value'
        WHEN t.account_id IS NULL THEN 'account_id:missing_value'
        WHEN t.customer_id IS NULL THEN 'customer_id:missing_value'
        WHEN padded(t.txn_id) THEN 'txn_id:padded_value'
        WHEN padded(t.account_id) THEN 'account_id:padded_value'
        WHEN t.day IS NULL AND t.txn_date IS NULL THEN 'txn_date:missing_value'
        WHEN t.txn_type IS NULL THEN 'txn_type:missing_value'
        WHEN t.txn_amount IS NULL AND t.amount IS NULL THEN 'amount:missing_value'
        WHEN t.day IS NULL THEN 'txn_date:unparseable'
        WHEN t.txn_amount IS NULL THEN 'amount:unparseable'
        WHEN t.txn_amount <= 0 THEN 'amount:out_of_range'
        WHEN t.fee IS NULL THEN 'fee_factor:unparseable'
        WHEN t.fee < 0 OR t.fee > 1 THEN 'fee_factor:out_of_range'
        WHEN t.currency_code <> 'CNY' AND NOT regexp_full_match(t.currency_code, '[A-Z]{3}') THEN 'currency:bad_currency'
        WHEN t.merchant_category IS NOT NULL AND NOT regexp_full_match(t.merchant_category, '[0-9]{4}')
            THEN 'merchant_category:unparseable'
        WHEN t.day < $month_start OR t.day > $month_end THEN 'txn_date:outside_month'
        WHEN t.txn_type NOT IN (SELECT unnest($txn_types)) THEN 'txn_type:unknown_code'
    END AS row_problem
FROM typed AS t
