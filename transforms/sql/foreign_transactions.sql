-- foreign_transactions: each otherwise good transaction row in another currency than CNY: the latest rate on
-- or before its day, the amount in CNY (converted row by row and rounded half-up to the cent,
-- before anything is summed), and the conversion's problem: no rate, or a result too large for
-- DECIMAL(18, 2). Few rows: an ASOF join sorts its input, and CNY rows need no rate.
WITH rated AS (
    SELECT
        c.source_file,
        c.source_row,
        r.cny_per_unit,
        -- Widened first: DECIMAL(18, 2) * DECIMAL(18, 8) overflows DuckDB's 18-digit multiply.
        round(CAST(c.txn_amount AS DECIMAL(38, 2)) * r.cny_per_unit, 2) AS converted
    FROM checked_transactions AS c
    ASOF LEFT JOIN fx_rates AS r ON r.currency = c.currency_code AND c.day >= r.rate_date
    WHERE c.currency_code <> 'CNY' AND c.row_problem IS NULL
)
SELECT
    source_file,
    source_row,
    cny_per_unit,
    CAST(CASE WHEN converted < 10000000000000000 THEN converted END AS DECIMAL(18, 2)) AS amount_cny,
    CASE
        WHEN cny_per_unit IS NULL THEN 'currency:no_fx_rate'
        WHEN converted >= 10000000000000000 THEN 'amount:out_of_range'
    END AS fx_problem
FROM rated
