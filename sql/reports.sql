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

-- name: assets_by_symbol
SELECT symbol, id FROM assets ORDER BY symbol;

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

-- name: participant_id
-- `perkflow balances` and `statement`: a participant the ledger does not know is an error to report.
SELECT id FROM participants WHERE external_id = $external_id;

-- name: statement_balance
-- `perkflow statement`: a participant's balance of one asset (one bucket, or all) from the entries
-- effective before $before (NULL: all of them). The opening balance is this before `--from`, the
-- closing one before `--to`: like Scrip's statement, balances reflect the account's whole history.
SELECT COALESCE(SUM(p.amount), 0)::DECIMAL(38, 18)
FROM postings p JOIN journal_entries j ON j.id = p.journal_entry_id
WHERE p.entity_type = 'PARTICIPANT' AND p.entity_id = $participant_id AND p.asset_id = $asset_id
  AND ($bucket::VARCHAR IS NULL OR p.bucket = $bucket)
  AND ($before::TIMESTAMPTZ IS NULL OR j.effective_at < $before);

-- name: statement_rows
-- `perkflow statement`: the postings of entries effective in [$from, $to) in ledger order, each with
-- the running balance after its entry: $opening plus the postings shown up to it (RANGE: the
-- postings of one entry are peers, as in the participant_statement view). The last row's running
-- balance is the closing balance (an entry processed late, effective before $from, is in $opening).
SELECT j.effective_at, j.seq, pr.key AS program_key, j.action_type, p.bucket, p.amount,
       ($opening + SUM(p.amount) OVER (ORDER BY j.seq RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW))
           ::DECIMAL(38, 18) AS running_balance,
       j.description, j.reference_id, j.event_id, j.operation_id, j.id AS journal_entry_id, p.id AS posting_id
FROM postings p JOIN journal_entries j ON j.id = p.journal_entry_id
LEFT JOIN programs pr ON pr.id = j.program_id
WHERE p.entity_type = 'PARTICIPANT' AND p.entity_id = $participant_id AND p.asset_id = $asset_id
  AND ($bucket::VARCHAR IS NULL OR p.bucket = $bucket)
  AND ($from::TIMESTAMPTZ IS NULL OR j.effective_at >= $from)
  AND ($to::TIMESTAMPTZ IS NULL OR j.effective_at < $to)
ORDER BY j.seq, p.id;
