-- balance_month for one month: daily CNY balances summed per customer, product and loan class, and
-- the balance on the month's last day. A day without a row adds zero (sparse balances).
INSERT INTO balance_month
WITH good AS (
    SELECT customer_id, product_code, risk, day, balance_cny
    FROM validated_balances
    WHERE reason IS NULL
)
SELECT
    CAST($month_start AS DATE) AS month,
    customer_id,
    product_code,
    risk AS risk_class,
    sum(balance_cny) AS day_sum,
    COALESCE(sum(balance_cny) FILTER (WHERE day = $month_end), 0) AS month_end
FROM good
GROUP BY customer_id, product_code, risk
