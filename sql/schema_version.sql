-- Which schema (a hash of schema.sql and views.sql) a database has: ensure_schema skips the DDL
-- when it is current. Named sections, as in write_batch.sql.

-- name: create
CREATE TABLE IF NOT EXISTS schema_version (hash VARCHAR NOT NULL);

-- name: current
SELECT hash FROM schema_version;

-- name: record
DELETE FROM schema_version;
INSERT INTO schema_version VALUES ($hash);

-- name: is_ledger
-- Whether the file holds a perkflow ledger: a first run that never committed leaves a DuckDB file
-- with no tables, which the read-only commands then report as such (not as a missing table).
SELECT count(*) > 0 FROM duckdb_tables() WHERE table_name = 'batches';

-- name: opened_path
-- The file the connection's database lives in; NULL when DuckDB opened an in-memory database
-- instead (it does for a path naming an existing Parquet, CSV or JSON file: not a ledger).
SELECT path FROM duckdb_databases() WHERE database_name = current_database();
