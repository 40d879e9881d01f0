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
