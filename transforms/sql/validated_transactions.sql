-- name: validated_transactions
-- kind: view
-- reads: checked_transactions, transaction_customers, transaction_duplicates, cell_types
-- validated_transactions: every landed row of one month's transaction file(s), typed, converted to
-- CNY, with its first problem (problem_column, reason) or NULLs when the row is good. A view: each
-- use scans the landing files once, and nothing of the size of the month is stored.
WITH checked AS (
    SELECT
        c.*,
        CASE
            WHEN c.row_problem IS NOT NULL THEN c.row_problem
            -- A padded customer_id is never in customers (validated_customers quarantines it), so it is
            -- found among the unknown ones without a check on every row of the month.
            WHEN u.customer_id IS NOT NULL AND padded(c.customer_id) THEN 'customer_id:padded_value'
            WHEN u.customer_id IS NOT NULL THEN 'customer_id:unknown_customer'
            WHEN d.source_row IS NOT NULL THEN 'txn_id:duplicate_key'
            ELSE c.fx_problem
        END AS problem
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
