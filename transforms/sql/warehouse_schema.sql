-- name: warehouse_schema
-- kind: statement
-- produces: customers, held_products, credit_events, fx_rates, credit_scores, balance_month, txn_figure_month, card_points_month, ingested, ingested_files, month_customers
-- The warehouse's own tables. Monthly sums, not raw rows: an evaluation reads stored months of sums
-- and only the new month's raw files. Months are stored as their first day.

-- Reference data, replaced whole when its file changes.
CREATE TABLE IF NOT EXISTS customers (customer_id VARCHAR NOT NULL, segment VARCHAR);
CREATE TABLE IF NOT EXISTS held_products (
    customer_id VARCHAR NOT NULL, product_code VARCHAR NOT NULL, opened_on DATE NOT NULL, closed_on DATE
);
CREATE TABLE IF NOT EXISTS credit_events (
    customer_id VARCHAR NOT NULL, event_code VARCHAR NOT NULL, started_on DATE NOT NULL, cured_on DATE
);
CREATE TABLE IF NOT EXISTS fx_rates (
    currency VARCHAR NOT NULL, rate_date DATE NOT NULL, cny_per_unit DECIMAL(18, 8) NOT NULL
);
CREATE TABLE IF NOT EXISTS credit_scores (customer_id VARCHAR NOT NULL, scored_on DATE NOT NULL, score INTEGER NOT NULL);

-- Per customer, month, product, loan class and whether the rows were in a foreign currency (not CNY):
-- the sum of the month's daily CNY balances (a missing day adds zero) and the balance on the month's
-- last day. Independent of any program.
CREATE TABLE IF NOT EXISTS balance_month (
    month DATE NOT NULL, customer_id VARCHAR NOT NULL, product_code VARCHAR NOT NULL,
    risk_class VARCHAR NOT NULL, day_sum DECIMAL(38, 2) NOT NULL, month_end DECIMAL(38, 2) NOT NULL,
    foreign_currency BOOLEAN NOT NULL
);

-- Per customer and month: the points of the month's good card_points entries.
CREATE TABLE IF NOT EXISTS card_points_month (month DATE NOT NULL, customer_id VARCHAR NOT NULL, points BIGINT NOT NULL);

-- Per program transaction figure, month and customer: the counted amount (caps, fee factors and
-- exclusions already applied per transaction). Recomputed when the program's rules change.
CREATE TABLE IF NOT EXISTS txn_figure_month (
    program VARCHAR NOT NULL, figure VARCHAR NOT NULL, month DATE NOT NULL,
    customer_id VARCHAR NOT NULL, counted DECIMAL(38, 2) NOT NULL
);

-- What has been ingested from where: one row per dataset and month (month NULL for reference data)
-- with the fingerprint that decides whether the next run must read the files again, and the
-- customers file it was validated against (a changed customers file re-checks, not re-reads, the month).
CREATE TABLE IF NOT EXISTS ingested (
    dataset VARCHAR NOT NULL, month DATE, fingerprint VARCHAR NOT NULL, customers_sha256 VARCHAR NOT NULL,
    rows_read BIGINT NOT NULL, rows_used BIGINT NOT NULL, rows_quarantined BIGINT NOT NULL,
    ingested_at TIMESTAMP NOT NULL, seconds DOUBLE NOT NULL
);
-- Warehouses made before ingestion was timed.
ALTER TABLE ingested ADD COLUMN IF NOT EXISTS seconds DOUBLE DEFAULT 0;
-- The same counts per source file, for the run summary (rows read = used + quarantined).
CREATE TABLE IF NOT EXISTS ingested_files (
    dataset VARCHAR NOT NULL, month DATE, path VARCHAR NOT NULL, sha256 VARCHAR NOT NULL,
    rows_read BIGINT NOT NULL, rows_used BIGINT NOT NULL, rows_quarantined BIGINT NOT NULL
);
-- The customers each ingested month refers to: known (rows used) or not (rows quarantined as
-- unknown_customer). When the customers file changes, a month is re-read only if one of its known
-- customers is gone or one of its unknown ones has arrived.
CREATE TABLE IF NOT EXISTS month_customers (
    dataset VARCHAR NOT NULL, month DATE NOT NULL, customer_id VARCHAR NOT NULL, known BOOLEAN NOT NULL
);
-- A warehouse whose balance months were summed before foreign_currency was part of their grain: its
-- balance months are forgotten (rows and fingerprints), so each is read again when a window needs it.
DELETE FROM ingested WHERE dataset = 'balances' AND NOT EXISTS (
    SELECT 1 FROM duckdb_columns() WHERE table_name = 'balance_month' AND column_name = 'foreign_currency');
DELETE FROM ingested_files WHERE dataset = 'balances' AND NOT EXISTS (
    SELECT 1 FROM duckdb_columns() WHERE table_name = 'balance_month' AND column_name = 'foreign_currency');
DELETE FROM month_customers WHERE dataset = 'balances' AND NOT EXISTS (
    SELECT 1 FROM duckdb_columns() WHERE table_name = 'balance_month' AND column_name = 'foreign_currency');
DELETE FROM balance_month WHERE NOT EXISTS (
    SELECT 1 FROM duckdb_columns() WHERE table_name = 'balance_month' AND column_name = 'foreign_currency');
ALTER TABLE balance_month ADD COLUMN IF NOT EXISTS foreign_currency BOOLEAN;

-- Landing files were once hashed only when their (path, size, mtime) changed, which took a corrected
-- file of the same size and mtime for unchanged. Content alone decides now (docs/decisions.md).
DROP TABLE IF EXISTS file_checksums;

