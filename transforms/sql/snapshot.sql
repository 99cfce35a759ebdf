-- name: snapshot
-- kind: query
-- reads: figure_measures, tier_decisions, rule_tiers
-- registered: rule_tiers
-- params: effective_from, next_review, points_scale, rules_version
-- snapshot: the published rows of one program and month-end, in the column order of
-- data-contract.md section 3, then the program's explanatory columns (the lists pts_list and
-- fig_list, which the publisher spreads into pts_<figure> per scored figure and fig_<figure> per figure). Shown points are cut,
-- not rounded, to the cent, so a shown figure reaches a threshold only when the exact one does.
WITH component_points AS (
    -- Lists in figure order: collected as (ord, value) pairs and sorted by ord, which costs far
    -- less than an ordered aggregate over every customer's figures.
    SELECT customer_id,
           list_transform(list_sort(list({'ord': ord, 'value': CAST(CAST(coef * num * 100 // $points_scale AS DECIMAL(38, 0)) * 0.01 AS DECIMAL(18, 2))})
                FILTER (WHERE coef IS NOT NULL)), lambda pair: pair.value) AS pts_list,
           -- Each figure's CNY value (an average daily balance, a month-end balance, a counted
           -- amount), cut to the cent: what `tiers explain` shows as the figures that decided.
           -- Cut downwards for a negative (net) figure too: // truncates toward zero.
           list_transform(list_sort(list({'ord': ord, 'value': CAST(CAST(
               CASE WHEN num >= 0 THEN num * 100 // scale ELSE -((scale - 1 - num * 100) // scale) END
               AS DECIMAL(38, 0)) * 0.01 AS DECIMAL(18, 2))})),
                lambda pair: pair.value) AS fig_list
    FROM figure_measures
    GROUP BY customer_id
)
SELECT
    d.customer_id,
    CAST(CAST(d.points_num * 100 // $points_scale AS DECIMAL(38, 0)) * 0.01 AS DECIMAL(18, 2)) AS points,
    CAST(d.computed_tier AS INTEGER) AS computed_tier,
    CAST(d.floor_tier AS INTEGER) AS floor_tier,
    d.capped,
    CAST(d.previous_tier AS INTEGER) AS previous_tier,
    CAST(d.tier AS INTEGER) AS tier,
    t.tier_name,
    d.reason,
    CAST(d.failed_reviews AS INTEGER) AS failed_reviews,
    CAST(d.buffer_since AS DATE) AS buffer_since,
    d.at_risk,
    CAST($next_review AS DATE) AS next_review,
    CAST($effective_from AS DATE) AS effective_from,
    CAST($rules_version AS VARCHAR) AS rules_version,
    p.pts_list,
    p.fig_list
FROM tier_decisions AS d
JOIN rule_tiers AS t ON t.tier = d.tier
LEFT JOIN component_points AS p ON p.customer_id = d.customer_id
ORDER BY d.customer_id
