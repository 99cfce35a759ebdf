-- name: validated_balances
-- kind: view
-- reads: checked_balances, balance_customers, balance_duplicates, cell_types
-- validated_balances: every landed row of one month's balance file(s), typed, converted to CNY,
-- with its first problem (problem_column, reason) or NULLs when the row is good. A view: each use
-- scans the landing files once, and nothing of the size of the month is stored.
WITH checked AS (
    SELECT
        c.*,
        CASE
            WHEN c.row_problem IS NOT NULL THEN c.row_problem
            -- Found per account in balance_accounts (a few million groups, not every row): only a month
            -- with such an account (or another bad row) is scanned for its bad rows at all.
            WHEN padded(c.account_id) THEN 'account_id:padded_value'
            -- A padded customer_id is never in customers (validated_customers quarantines it), so it is
            -- found among the unknown ones without a check on every row of the month.
            WHEN u.customer_id IS NOT NULL AND padded(c.customer_id) THEN 'customer_id:padded_value'
            WHEN u.customer_id IS NOT NULL THEN 'customer_id:unknown_customer'
            WHEN d.source_row IS NOT NULL THEN 'balance_date:duplicate_key'
            ELSE c.fx_problem
        END AS problem
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
