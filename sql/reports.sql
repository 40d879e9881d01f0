-- Report queries over the views of sql/views.sql. Named sections, as in write_batch.sql.

-- name: balance_count
SELECT count(*) FROM balances;

-- name: balance_totals
-- Per asset: accounts, participants, and what participants hold in each bucket.
SELECT asset_symbol, COUNT(*) AS accounts,
       COUNT(*) FILTER (WHERE entity_type = 'PARTICIPANT') AS participants,
       COALESCE(SUM(available) FILTER (WHERE entity_type = 'PARTICIPANT'), 0) AS available,
       COALESCE(SUM(held) FILTER (WHERE entity_type = 'PARTICIPANT'), 0) AS held,
       COALESCE(SUM(deferred) FILTER (WHERE entity_type = 'PARTICIPANT'), 0) AS deferred
FROM balances
GROUP BY asset_symbol
ORDER BY asset_symbol;

-- name: participant_exists
-- `perkflow balances --external-id`: a participant the ledger does not know is an error to report.
SELECT 1 FROM participants WHERE external_id = $external_id LIMIT 1;

-- name: asset_symbols
SELECT symbol FROM assets ORDER BY symbol;

-- name: participant_balances
-- `perkflow balances`: participants' balances, optionally of one participant and/or one asset;
-- $limit NULL for every row.
SELECT external_id, asset_symbol, available, held, deferred, participant_id
FROM balances
WHERE entity_type = 'PARTICIPANT'
  AND ($external_id::VARCHAR IS NULL OR external_id = $external_id)
  AND ($asset::VARCHAR IS NULL OR asset_symbol = $asset)
ORDER BY external_id, asset_symbol
LIMIT $limit;
