-- name: balance_month
-- kind: statement
-- reads: balance_accounts, balance_duplicates, customers, validated_balances, cell_types
-- params: month_end, month_start
-- balance_month for one month: daily CNY balances summed per customer, product, loan class and
-- foreign_currency (the rows were not in CNY), and
-- the balance on the month's last day, over the good rows only. A day without a row adds zero
-- (sparse balances). An account without duplicate keys contributes its sums from balance_accounts
-- (a row there that passed its own checks and converted is good when its customer is known); an
-- account with a duplicate key is summed again from its rows, one by one.
INSERT INTO balance_month BY NAME
WITH duplicated AS (
    SELECT DISTINCT account_id FROM balance_duplicates
),
account_sums AS (
    SELECT a.customer_id, a.product_code, a.risk, a.foreign_currency, a.day_sum, a.month_end, a.rows_passed - a.rows_not_converted AS rows_good
    FROM balance_accounts AS a
    JOIN customers AS k ON k.customer_id = a.customer_id
    -- An account_id with surrounding whitespace is a bad row (validated_balances), checked per account.
    WHERE a.account_id NOT IN (SELECT account_id FROM duplicated) AND NOT padded(a.account_id)
    UNION ALL
    SELECT customer_id, product_code, risk, COALESCE(currency, 'CNY') <> 'CNY', balance_cny, CASE WHEN day = $month_end THEN balance_cny END, 1
    FROM validated_balances
    WHERE reason IS NULL AND account_id IN (SELECT account_id FROM duplicated)
)
SELECT
    CAST($month_start AS DATE) AS month,
    customer_id,
    product_code,
    risk AS risk_class,
    sum(day_sum) AS day_sum,
    COALESCE(sum(month_end), 0) AS month_end,
    foreign_currency
FROM account_sums
WHERE rows_good > 0
GROUP BY customer_id, product_code, risk, foreign_currency
