-- name: txn_counted
-- kind: macro
-- txn_counted: what one transaction counts toward a figure (programs.md), in CNY:
-- round_half_up(min(amount, cap) * fee_factor, 2) when the figure applies the fee factor, else
-- min(amount, cap). cap is NULL for no cap. Most rows count in full (fee 1): no rounding to do.
-- Widened first: DECIMAL(18, 2) * DECIMAL(9, 6) overflows DuckDB's 18-digit multiply.
CREATE OR REPLACE TEMP MACRO txn_counted(amount, fee, cap, apply_fee_factor) AS
    CASE
        WHEN NOT apply_fee_factor OR fee = 1 THEN least(amount, COALESCE(cap, amount))
        ELSE round(CAST(least(amount, COALESCE(cap, amount)) AS DECIMAL(38, 2)) * fee, 2)
    END;
