-- txn_figure_month for one month: each program's transaction figures, counted per transaction as
-- round_half_up(min(amount_cny, cap) * fee_factor, 2) after the program's exclusions, then summed.
INSERT INTO txn_figure_month
WITH good AS (
    SELECT customer_id, txn_type, amount_cny, fee, merchant_category
    FROM validated_transactions
    WHERE reason IS NULL
),
counted AS (
    SELECT
        f.program,
        f.figure,
        t.customer_id,
        CASE
            -- Most rows count in full: no product, no rounding to do.
            WHEN NOT f.apply_fee_factor OR t.fee = 1
                THEN least(t.amount_cny, COALESCE(f.cap_per_transaction, t.amount_cny))
            -- Widened first: DECIMAL(18, 2) * DECIMAL(9, 6) overflows DuckDB's 18-digit multiply.
            ELSE round(CAST(least(t.amount_cny, COALESCE(f.cap_per_transaction, t.amount_cny)) AS DECIMAL(38, 2))
                       * t.fee, 2)
        END AS counted
    FROM good AS t
    JOIN txn_figure_rules AS f ON f.txn_type = t.txn_type
    WHERE (f.exclude_single_above IS NULL OR t.amount_cny <= f.exclude_single_above)
      AND NOT EXISTS (
          SELECT 1 FROM txn_excluded_mcc AS e
          WHERE e.program = f.program AND e.figure = f.figure AND e.mcc = t.merchant_category
      )
)
SELECT program, figure, CAST($month_start AS DATE) AS month, customer_id, sum(counted) AS counted
FROM counted
GROUP BY program, figure, customer_id
