-- name: validated_balances
-- kind: view
-- reads: checked_balances, balance_customers, balance_duplicates, cell_types, month_problem
-- validated_balances: every landed row of one month's balance file(s), typed, converted to CNY,
-- with its first problem (problem_column, reason) or NULLs when the row is good. A view: each use
-- scans the landing files once, and nothing of the size of the month is stored.
WITH checked AS (
    SELECT
        c.*,
        month_problem(
            -- A padded account_id comes right after the row's own problems. Found per account in
            -- balance_accounts (a few million groups, not every row): only a month with such an account
            -- (or another bad row) is scanned for its bad rows at all.
            COALESCE(c.row_problem, CASE WHEN padded(c.account_id) THEN 'account_id:padded_value' END),
            c.customer_id, u.customer_id IS NOT NULL, d.source_row IS NOT NULL, 'balance_date:duplicate_key',
            c.fx_problem
        ) AS problem
    FROM checked_balances AS c
    LEFT JOIN balance_customers AS u ON u.customer_id = c.customer_id AND NOT u.known
    LEFT JOIN balance_duplicates AS d ON d.file_ordinal = c.file_ordinal AND d.source_row = c.source_row
)
SELECT
    source_file, source_row, account_id, customer_id, product_code, balance_date, balance, currency, risk_class,
    day, risk,
    balance_cny,
    split_part(problem, ':', 1) AS problem_column,
    split_part(problem, ':', 2) AS reason
FROM checked
