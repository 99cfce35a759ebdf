-- name: month_problem
-- kind: macro
-- reads: cell_types
-- month_problem: a landed row's first problem, in the contract's order, once the month's small tables
-- are joined (validated_balances, validated_transactions, validated_card_points): its own problem
-- (row_problem), then a customer_id it names that is not a known customer (a padded one is never in
-- customers, which validated_customers quarantines, so it is found among the unknown ones without a
-- check on every row of the month), then a key another row shares, then a missing FX rate.
CREATE OR REPLACE TEMP MACRO month_problem(row_problem, customer_id, unknown_customer, shared_key, duplicate_key,
                                           fx_problem) AS
    CASE
        WHEN row_problem IS NOT NULL THEN row_problem
        WHEN unknown_customer AND padded(customer_id) THEN 'customer_id:padded_value'
        WHEN unknown_customer THEN 'customer_id:unknown_customer'
        WHEN shared_key THEN duplicate_key
        ELSE fx_problem
    END;
