-- name: validated_credit_scores
-- kind: temp table
-- reads: staged_credit_scores, customers, cell_types
-- registered: staged_credit_scores
-- validated_credit_scores: every staged credit-score row, typed, with its first problem (NULLs when
-- good). A score is a whole number in 300..850; a customer has one score per day.
WITH typed AS (
    SELECT
        *,
        text_date(scored_on) AS scored_day,
        CASE WHEN regexp_full_match(score, '-?[0-9]{1,9}') THEN CAST(score AS INTEGER) END AS score_value,
        count(*) OVER (PARTITION BY customer_id, scored_on) AS key_rows
    FROM staged_credit_scores
),
checked AS (
    SELECT
        t.*,
        CASE
            WHEN t.customer_id IS NULL THEN 'customer_id:missing_value'
            WHEN padded(t.customer_id) THEN 'customer_id:padded_value'
            WHEN t.scored_on IS NULL THEN 'scored_on:missing_value'
            WHEN t.score IS NULL THEN 'score:missing_value'
            WHEN t.scored_day IS NULL THEN 'scored_on:unparseable'
            WHEN t.score_value IS NULL THEN 'score:unparseable'
            WHEN t.score_value NOT BETWEEN 300 AND 850 THEN 'score:out_of_range'
            WHEN c.customer_id IS NULL THEN 'customer_id:unknown_customer'
            WHEN t.key_rows > 1 THEN 'scored_on:duplicate_key'
        END AS problem
    FROM typed AS t
    LEFT JOIN customers AS c ON c.customer_id = t.customer_id
)
SELECT
    source_file, source_row, customer_id, scored_on, score, scored_day, score_value,
    split_part(problem, ':', 1) AS problem_column,
    split_part(problem, ':', 2) AS reason
FROM checked
