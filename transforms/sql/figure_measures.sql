-- name: figure_measures
-- kind: temp table
-- reads: customers, rule_figures, eval_figures, rule_figure_codes, balance_month, txn_figure_month, card_points_month, credit_scores
-- registered: rule_figures, eval_figures, rule_figure_codes
-- params: month_start, as_of, program
-- figure_measures: for one program and month-end, every customer's every figure as an exact
-- fraction num / scale of CNY (num in cents; scale = 100 * days of the window for averages, else 100),
-- read from stored monthly sums (balance_month, txn_figure_month, card_points_month) and reference data
-- (credit_scores), never from raw rows.
WITH customer AS (
    SELECT customer_id FROM customers
),
figure AS (
    SELECT f.figure, f.ord, f.source, f.basis, f.foreign_only, f.absent_is_null,
           e.first_month, e.num_factor, e.scale, e.coef
    FROM rule_figures AS f
    JOIN eval_figures AS e ON e.figure = f.figure
),
balance_amount AS (
    -- sign -1 subtracts a code's balances day by day (a net figure).
    SELECT b.customer_id, f.ord,
           sum(c.sign * CASE WHEN f.basis = 'month_end' THEN b.month_end ELSE b.day_sum END) AS amount
    FROM figure AS f
    JOIN rule_figure_codes AS c ON c.figure = f.figure
    JOIN balance_month AS b
      ON b.product_code = c.code
     AND b.risk_class = c.risk_class
     AND b.month BETWEEN f.first_month AND $month_start
    WHERE f.source = 'balances' AND (b.foreign_currency OR NOT f.foreign_only)
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
ledger_amount AS (
    SELECT p.customer_id, f.ord, sum(p.points) AS amount
    FROM figure AS f
    JOIN card_points_month AS p ON p.month BETWEEN f.first_month AND $month_start
    WHERE f.source = 'card_points'
    GROUP BY p.customer_id, f.ord
),
value_in_force AS (
    -- The latest score on or before the month-end.
    SELECT s.customer_id, f.ord, arg_max(s.score, s.scored_on) AS amount
    FROM figure AS f
    JOIN credit_scores AS s ON s.scored_on <= $as_of
    WHERE f.source = 'credit_scores'
    GROUP BY s.customer_id, f.ord
),
-- As the exact numerator: money in cents, a ledger or a score as it is (figures are keyed by their
-- integer ord: cheaper to group and join).
amount AS (
    SELECT customer_id, ord, CAST(amount * 100 AS HUGEINT) AS num FROM balance_amount
    UNION ALL
    SELECT customer_id, ord, CAST(amount * 100 AS HUGEINT) FROM transaction_amount
    UNION ALL
    SELECT customer_id, ord, CAST(amount AS HUGEINT) FROM ledger_amount
    UNION ALL
    SELECT customer_id, ord, CAST(amount AS HUGEINT) FROM value_in_force
)
-- Every customer gets every figure: zero when nothing counted (customers are rated every month),
-- except a value in force, which is NULL when there is none. num_factor brings a figure valued in
-- another currency to its exact fraction (rules/compile.py).
SELECT
    c.customer_id,
    f.figure AS measure,
    f.ord,
    CASE WHEN f.absent_is_null THEN a.num ELSE COALESCE(a.num, 0) END * CAST(f.num_factor AS HUGEINT) AS num,
    CAST(f.scale AS HUGEINT) AS scale,
    CAST(f.coef AS HUGEINT) AS coef
FROM customer AS c
CROSS JOIN figure AS f
LEFT JOIN amount AS a ON a.customer_id = c.customer_id AND a.ord = f.ord
