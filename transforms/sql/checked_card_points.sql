-- name: checked_card_points
-- kind: view
-- reads: landed_card_points, cell_types
-- registered: landed_card_points
-- params: month_end, month_start
-- checked_card_points: every landed card-points row with its first problem that the row shows by
-- itself (row_problem, 'column:reason'), before the checks that need other rows or tables. Points are
-- a whole number > 0 (`12.5` is unparseable, `0` and `-3` are out of range).
SELECT
    l.*,
    CASE
        WHEN l.entry_id IS NULL THEN 'entry_id:missing_value'
        WHEN l.customer_id IS NULL THEN 'customer_id:missing_value'
        WHEN padded(l.entry_id) THEN 'entry_id:padded_value'
        WHEN l.day IS NULL AND l.posted_on IS NULL THEN 'posted_on:missing_value'
        WHEN l.points_value IS NULL AND l.points IS NULL THEN 'points:missing_value'
        WHEN l.day IS NULL THEN 'posted_on:unparseable'
        WHEN l.points_value IS NULL THEN 'points:unparseable'
        WHEN l.points_value <= 0 THEN 'points:out_of_range'
        WHEN l.day < $month_start OR l.day > $month_end THEN 'posted_on:outside_month'
    END AS row_problem
FROM landed_card_points AS l
