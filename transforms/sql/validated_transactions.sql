-- name: validated_transactions
-- kind: view
-- reads: checked_transactions, transaction_customers, transaction_duplicates, month_problem
-- validated_transactions: every landed row of one month's transaction file(s), typed, converted to
-- CNY, with its first problem (problem_column, reason) or NULLs when the row is good. A view: each
-- use scans the landing files once, and nothing of the size of the month is stored.
WITH checked AS (
    SELECT
        c.*,
        month_problem(c.row_problem, c.customer_id, u.customer_id IS NOT NULL, d.source_row IS NOT NULL,
                      'txn_id:duplicate_key', c.fx_problem) AS problem
    FROM checked_transactions AS c
    LEFT JOIN transaction_customers AS u ON u.customer_id = c.customer_id AND NOT u.known
    LEFT JOIN transaction_duplicates AS d ON d.file_ordinal = c.file_ordinal AND d.source_row = c.source_row
)
SELECT
    source_file, source_row, txn_id, account_id, customer_id, txn_date, txn_type, amount, currency,
    merchant_category, fee_factor,
    day, fee,
    amount_cny,
    split_part(problem, ':', 1) AS problem_column,
    split_part(problem, ':', 2) AS reason
FROM checked
