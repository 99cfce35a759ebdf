-- name: figure_measures
-- kind: temp table
-- reads: customers, rule_figures, eval_figures, rule_figure_codes, balance_month, txn_figure_month
-- registered: rule_figures, eval_figures, rule_figure_codes
-- params: month_start, program
-- figure_measures: for one program and month-end, every customer's every figure as an exact
-- fraction num / scale of CNY (num in cents; scale = 100 * days of the window for averages, else 100),
-- read from stored monthly sums (balance_month, txn_figure_month), never from raw rows.
WITH customer AS (
    SELECT customer_id FROM customers
),
figure AS (
    SELECT f.figure, f.ord, f.source, f.basis, e.first_month, e.scale, e.coef
    FROM rule_figures AS f
    JOIN eval_figures AS e ON e.figure = f.figure
),
balance_amount AS (
    SELECT b.customer_id, f.ord,
           sum(CASE WHEN f.basis = 'month_end' THEN b.month_end ELSE b.day_sum END) AS amount
    FROM figure AS f
    JOIN rule_figure_codes AS c ON c.figure = f.figure
    JOIN balance_month AS b
      ON b.product_code = c.code
     AND b.risk_class = c.risk_class
     AND b.month BETWEEN f.first_month AND $month_start
    WHERE f.source = 'balances'
    GROUP BY b.customer_id, f.ord
),
transaction_amount AS (
    SELECT t.customer_id, f.ord, sum(t.counted) AS amount
    FROM figure AS f
    JOIN txn_figure_month AS t
      ON t.program = $program
     AND t.figure = f.figure
     AND t.month BETWEEN f.first_month AND $month_start
    WHERE f.source = 'transactions'
    GROUP BY t.customer_id, f.ord
),
-- In cents, as the exact numerator (figures are keyed by their integer ord: cheaper to group and join).
amount AS (
    SELECT customer_id, ord, CAST(amount * 100 AS HUGEINT) AS num FROM balance_amount
    UNION ALL
    SELECT customer_id, ord, CAST(amount * 100 AS HUGEINT) FROM transaction_amount
)
-- Every customer gets every figure: zero when nothing counted (customers are rated every month).
SELECT
    c.customer_id,
    f.figure AS measure,
    f.ord,
    COALESCE(a.num, 0) AS num,
    CAST(f.scale AS HUGEINT) AS scale,
    CAST(f.coef AS HUGEINT) AS coef
FROM customer AS c
CROSS JOIN figure AS f
LEFT JOIN amount AS a ON a.customer_id = c.customer_id AND a.ord = f.ord
