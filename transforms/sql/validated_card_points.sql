-- name: validated_card_points
-- kind: view
-- reads: checked_card_points, card_point_customers, card_point_duplicates, month_problem
-- validated_card_points: every landed row of one month's card-points file(s), typed, with its first
-- problem (problem_column, reason) or NULLs when the row is good. A view, as validated_transactions.
WITH checked AS (
    SELECT
        c.*,
        -- Points are not converted: no FX problem.
        month_problem(c.row_problem, c.customer_id, u.customer_id IS NOT NULL, d.source_row IS NOT NULL,
                      'entry_id:duplicate_key', NULL) AS problem
    FROM checked_card_points AS c
    LEFT JOIN card_point_customers AS u ON u.customer_id = c.customer_id AND NOT u.known
    LEFT JOIN card_point_duplicates AS d ON d.file_ordinal = c.file_ordinal AND d.source_row = c.source_row
)
SELECT
    source_file, source_row, entry_id, customer_id, posted_on, points,
    day, points_value,
    split_part(problem, ':', 1) AS problem_column,
    split_part(problem, ':', 2) AS reason
FROM checked
