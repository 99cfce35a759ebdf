-- name: whatif_movers
-- kind: statement
-- produces: movers
-- params: published, whatif
-- whatif_movers: One row per customer and month whose what-if tier differs from the published one (a customer on one
-- side only counts too), with the what-if points and figures that explain the new tier.
CREATE OR REPLACE TEMP TABLE movers AS
WITH published AS (
    SELECT strftime(as_of, '%Y-%m') AS month, customer_id, tier, tier_name, reason, points
    FROM read_parquet($published, hive_partitioning = true, union_by_name = true)
), whatif AS (
    SELECT strftime(as_of, '%Y-%m') AS month, customer_id, tier, tier_name, reason, points, computed_tier,
           COLUMNS('^(fig|pts)_')
    FROM read_parquet($whatif, hive_partitioning = true, union_by_name = true)
)
SELECT month, customer_id,
       p.tier AS from_tier, p.tier_name AS from_tier_name, w.tier AS to_tier, w.tier_name AS to_tier_name,
       p.reason AS from_reason, w.reason AS to_reason, p.points AS from_points, w.points AS to_points,
       w.computed_tier AS to_computed_tier, COLUMNS('^(fig|pts)_')
FROM whatif AS w FULL JOIN published AS p USING (month, customer_id)
WHERE w.tier IS DISTINCT FROM p.tier
ORDER BY month, customer_id
