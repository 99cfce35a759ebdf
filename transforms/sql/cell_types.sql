-- name: cell_types
-- kind: macro
-- produces: text_date, text_money, padded, typed_money, text_fee, typed_fee, text_integer, typed_integer, to_cny
-- cell_types: how a landing cell becomes a typed value (data-contract.md section 1). Text cells must
-- match the contract's pattern exactly; a Parquet column already of a fitting type (DATE, DECIMAL with
-- at most the allowed decimals; landing.py rejects any other type with the file) is taken as it is,
-- with the same limits as the pattern.
-- A cell that does not fit is NULL, which validation reports as unparseable.
CREATE OR REPLACE TEMP MACRO text_date(cell) AS
    CASE WHEN regexp_full_match(cell, '[0-9]{4}-[0-9]{2}-[0-9]{2}') THEN TRY_CAST(cell AS DATE) END;
-- Money: at most 16 digits before the point and 2 after (the sign is allowed so that a negative
-- amount reads as out of range, not as unparseable).
CREATE OR REPLACE TEMP MACRO text_money(cell) AS
    CASE WHEN regexp_full_match(cell, '-?[0-9]{1,16}(\.[0-9]{1,2})?') THEN CAST(cell AS DECIMAL(18, 2)) END;
-- An id (customer_id, account_id, txn_id) with leading or trailing whitespace (any Unicode space,
-- e.g. a fixed-width export's trailing blanks or an ideographic space) is a bad row, `padded_value`:
-- `T1 ` is neither `T1` nor another id. Ids are otherwise compared exactly as written. About 0.066 s
-- per million cells (2 cores): a balance's account_id is checked per account, a month's customer_id
-- among its unknown customers only (validated_*).
CREATE OR REPLACE TEMP MACRO padded(id) AS regexp_matches(id, '^[\s\p{Z}]|[\s\p{Z}]$');
CREATE OR REPLACE TEMP MACRO typed_money(cell) AS TRY_CAST(cell AS DECIMAL(18, 2));
-- A fee factor: at most 2 digits before the point and 6 after.
CREATE OR REPLACE TEMP MACRO text_fee(cell) AS
    CASE WHEN regexp_full_match(cell, '-?[0-9]{1,2}(\.[0-9]{1,6})?') THEN CAST(cell AS DECIMAL(9, 6)) END;
CREATE OR REPLACE TEMP MACRO typed_fee(cell) AS
    CASE WHEN abs(cell) < 100 THEN CAST(cell AS DECIMAL(9, 6)) END;
-- A count (card points): an integer of at most 18 digits; `12.5` is not one (unparseable). A Parquet
-- integer column is taken as it is (one that does not fit a BIGINT reads as unparseable).
CREATE OR REPLACE TEMP MACRO text_integer(cell) AS
    CASE WHEN regexp_full_match(cell, '-?[0-9]{1,18}') THEN CAST(cell AS BIGINT) END;
CREATE OR REPLACE TEMP MACRO typed_integer(cell) AS TRY_CAST(cell AS BIGINT);
-- An amount in CNY: converted row by row and rounded half-up to the cent, before anything is summed
-- (widened first: DECIMAL(18, 2) * DECIMAL(18, 8) overflows DuckDB's 18-digit multiply).
CREATE OR REPLACE TEMP MACRO to_cny(amount, rate) AS round(CAST(amount AS DECIMAL(38, 2)) * rate, 2);
