-- name: card_point_duplicates
-- kind: temp table
-- reads: landed_card_points
-- registered: landed_card_points
-- card_point_duplicates: the rows of a month whose entry_id another row shares (whatever else is wrong
-- with them), with the customer each names.
WITH keyed AS (
    SELECT file_ordinal, source_row, customer_id, count(*) OVER (PARTITION BY entry_id) AS key_rows
    FROM landed_card_points
    WHERE entry_id IS NOT NULL
)
SELECT file_ordinal, source_row, customer_id
FROM keyed
WHERE key_rows > 1
