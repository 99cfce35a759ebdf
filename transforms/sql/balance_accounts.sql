-- name: balance_accounts
-- kind: temp table
-- reads: checked_balances
-- params: month_end, month_start
-- balance_accounts: one month's balance rows summed per account (with the customer, product and loan
-- class its rows give) in the month's one full scan; everything else ingestion needs of the month
-- is read from this much smaller table. Only the rows without a problem of their own and with a
-- CNY amount are summed (a row that cannot be converted has none).
SELECT
    account_id,
    customer_id,
    product_code,
    risk,
    currency_code <> 'CNY' AS foreign_currency,
    count(*) FILTER (WHERE row_problem IS NULL) AS rows_passed,
    count(*) FILTER (WHERE row_problem IS NOT NULL) AS rows_failed,
    count(*) FILTER (WHERE row_problem IS NULL AND fx_problem IS NOT NULL) AS rows_not_converted,
    -- For duplicate keys: the rows dated in the month, and the set of their days as bits.
    count(*) FILTER (WHERE day BETWEEN $month_start AND $month_end) AS dated_rows,
    bit_or(CAST(1 AS UBIGINT) << day(day)) FILTER (WHERE day BETWEEN $month_start AND $month_end) AS dated_days,
    sum(balance_cny) FILTER (WHERE row_problem IS NULL) AS day_sum,
    sum(balance_cny) FILTER (WHERE row_problem IS NULL AND day = $month_end) AS month_end
FROM checked_balances
GROUP BY account_id, customer_id, product_code, risk, foreign_currency
