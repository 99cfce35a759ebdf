-- name: tier_decisions
-- kind: temp table
-- reads: customers, figure_measures, rule_conditions, rule_tiers, rule_floors, rule_caps, rule_buffers, held_products, credit_events, prev_snapshot
-- registered: rule_conditions, rule_tiers, rule_floors, rule_caps, rule_buffers, prev_snapshot
-- params: as_of, cap_tier, default_failed_reviews, fall_to, is_review, meeting_resets_buffer, points_scale
-- tier_decisions: for one program and month-end, the computed tier, floor and cap, and the tier
-- state machine of programs.md section 3 applied to last month's snapshot (prev_snapshot).
WITH customer AS (
    SELECT customer_id FROM customers
),
points AS (
    -- points = points_num / $points_scale exactly; coef is NULL for figures that earn no points.
    SELECT customer_id, sum(coef * num) AS points_num
    FROM figure_measures
    WHERE coef IS NOT NULL
    GROUP BY customer_id
),
measure AS (
    SELECT customer_id, measure, num, scale FROM figure_measures
    UNION ALL
    SELECT customer_id, 'points', points_num, CAST($points_scale AS HUGEINT) FROM points
),
group_check AS (
    -- The value against its threshold, as integers: sign(num * thr_den - thr_num * scale) is -1, 0 or 1;
    -- the condition's operator accepts the outcomes meets_from..meets_to (rules/compile.py, MEETS).
    -- A missing value (NULL) meets no condition: bool_and would skip a NULL, so it counts as false.
    SELECT m.customer_id, k.tier, k.grp,
           bool_and(COALESCE(sign(m.num * k.thr_den - k.thr_num * m.scale) BETWEEN k.meets_from AND k.meets_to,
                             false)) AS holds
    FROM rule_conditions AS k
    JOIN measure AS m ON m.measure = k.measure
    GROUP BY m.customer_id, k.tier, k.grp
),
computed AS (
    -- Bands run from the highest tier down, so the first band that holds is the highest that holds;
    -- the last band (no conditions) is the fallback.
    SELECT c.customer_id, COALESCE(max(g.tier), (SELECT min(tier) FROM rule_tiers)) AS computed_tier
    FROM customer AS c
    LEFT JOIN group_check AS g ON g.customer_id = c.customer_id AND g.holds
    GROUP BY c.customer_id
),
floor_held AS (
    SELECT h.customer_id, max(f.tier) AS floor_tier
    FROM held_products AS h
    JOIN rule_floors AS f ON f.product_code = h.product_code
    WHERE h.opened_on <= $as_of AND (h.closed_on IS NULL OR $as_of < h.closed_on)
    GROUP BY h.customer_id
),
capped AS (
    SELECT DISTINCT e.customer_id
    FROM credit_events AS e
    JOIN rule_caps AS r ON r.event_code = e.event_code
    WHERE e.started_on <= $as_of AND (e.cured_on IS NULL OR $as_of < e.cured_on)
),
step AS (
    -- The next lower tier of each tier, for falls of one step.
    SELECT tier, lead(tier) OVER (ORDER BY tier DESC) AS lower_tier FROM rule_tiers
),
standing AS (
    SELECT
        c.customer_id,
        p.points_num,
        k.computed_tier,
        f.floor_tier,
        x.customer_id IS NOT NULL AS capped,
        earned_tier(k.computed_tier, f.floor_tier) AS earned,
        prev.tier AS prev_tier,
        prev.failed_reviews AS prev_failed,
        prev.buffer_since AS prev_since,
        COALESCE(b.failed_reviews, $default_failed_reviews) AS reviews_to_fall,
        s.lower_tier
    FROM customer AS c
    JOIN computed AS k ON k.customer_id = c.customer_id
    LEFT JOIN points AS p ON p.customer_id = c.customer_id
    LEFT JOIN floor_held AS f ON f.customer_id = c.customer_id
    LEFT JOIN capped AS x ON x.customer_id = c.customer_id
    LEFT JOIN prev_snapshot AS prev ON prev.customer_id = c.customer_id
    LEFT JOIN rule_buffers AS b ON b.tier = prev.tier
    LEFT JOIN step AS s ON s.tier = prev.tier
),
moved AS (
    -- The reasons of rules/states.py (REASONS); earned_tier and falls_at_review are its macros.
    SELECT
        *,
        CASE
            WHEN prev_tier IS NULL THEN 'initial'
            WHEN earned > prev_tier THEN 'upgrade'
            WHEN earned = prev_tier THEN 'meets'
            WHEN NOT $is_review THEN 'held_until_review'
            WHEN falls_at_review(prev_failed, reviews_to_fall) THEN 'downgrade'
            ELSE 'buffer'
        END AS movement
    FROM standing
),
decided AS (
    SELECT
        *,
        CASE movement
            WHEN 'held_until_review' THEN prev_tier
            WHEN 'buffer' THEN prev_tier
            WHEN 'downgrade' THEN
                CASE WHEN $fall_to = 'one_step' THEN greatest(earned, lower_tier) ELSE earned END
            ELSE earned
        END AS moved_tier,
        CASE movement
            WHEN 'held_until_review' THEN prev_failed
            WHEN 'buffer' THEN prev_failed + 1
            WHEN 'meets' THEN CASE WHEN $meeting_resets_buffer THEN 0 ELSE prev_failed END
            ELSE 0
        END AS moved_failed,
        CASE movement
            WHEN 'held_until_review' THEN prev_since
            WHEN 'buffer' THEN COALESCE(prev_since, CAST($as_of AS DATE))
            WHEN 'meets' THEN CASE WHEN $meeting_resets_buffer THEN NULL ELSE prev_since END
        END AS moved_since
    FROM moved
),
final AS (
    -- A credit cap overrides everything, with no buffer.
    SELECT
        customer_id,
        points_num,
        computed_tier,
        floor_tier,
        capped,
        prev_tier AS previous_tier,
        earned,
        CASE WHEN capped THEN least(moved_tier, $cap_tier) ELSE moved_tier END AS tier,
        CASE WHEN capped THEN 'credit_cap' ELSE movement END AS reason,
        CASE WHEN capped THEN 0 ELSE moved_failed END AS failed_reviews,
        CASE WHEN capped THEN NULL ELSE moved_since END AS buffer_since
    FROM decided
)
SELECT *, earned < tier AS at_risk
FROM final
