-- Ledger invariants. Each `-- name:` section returns the rows that VIOLATE the invariant:
-- zero rows means it holds. Read by `perkflow verify` and the Dagster asset checks through
-- engine/verify.py. No trailing work: plain SELECTs, read-only.
-- Those with $part and $parts are read in parts (engine/verify.py: ~1M entries each, by a hash of
-- the entry id or of the account's entity, so that what one row needs lies in its part): whole,
-- their joins and aggregates needed more of DuckDB's memory the larger the ledger. The modulus is
-- UBIGINT: with a BIGINT parameter it is a HUGEINT one, ~50x slower.

-- name: postings_sum_to_zero
-- Double entry: within every journal entry, the postings of each asset sum to zero, and there are
-- two or more of them (semantics.md 1.2), not all zero: entries with no postings, one posting, or
-- only postings of 0 are reported too (an entry must move something; an amount of 0 is a no-op
-- that writes none). `postings` and `moved` are the entry's, over all its assets.
-- The postings are summed per entry and asset before they meet the entries (a join of the
-- whole tables first held more than DuckDB's memory cap at 10M events); an entry id stored twice
-- counts its postings twice, as a join would. In parts by the entry id.
-- Each row names the entry's batch and seq (its first copy's), so that the first break reported is
-- the earliest in the ledger and says where it is; postings without an entry name neither.
WITH sums AS (
    SELECT journal_entry_id, asset_id, SUM(amount) AS imbalance, COUNT(*) AS postings, bool_or(amount <> 0) AS moved
    FROM postings WHERE hash(journal_entry_id) % $parts::UBIGINT = $part::UBIGINT GROUP BY journal_entry_id, asset_id
),
entries AS (
    SELECT id, COUNT(*) AS copies, min(batch_id) AS batch_id, min(seq) AS seq
    FROM journal_entries WHERE hash(id) % $parts::UBIGINT = $part::UBIGINT GROUP BY id
),
per_entry AS (
    SELECT e.id, e.copies, e.batch_id, e.seq, s.asset_id, s.imbalance, s.postings AS asset_postings,
           SUM(s.postings) OVER (PARTITION BY e.id) AS postings, bool_or(s.moved) OVER (PARTITION BY e.id) AS moved
    FROM entries e LEFT JOIN sums s ON s.journal_entry_id = e.id
)
SELECT id AS journal_entry_id, asset_id, COALESCE(imbalance * copies, 0) AS imbalance,
       COALESCE(asset_postings * copies, 0) AS postings, batch_id, seq
FROM per_entry
WHERE asset_id IS NULL OR imbalance <> 0 OR postings < 2 OR NOT moved
UNION ALL
-- Postings whose entry does not exist (an entry with their id would be in this part).
SELECT journal_entry_id, asset_id, imbalance, postings, NULL, NULL
FROM sums s
WHERE NOT EXISTS (SELECT 1 FROM entries e WHERE e.id = s.journal_entry_id)
ORDER BY batch_id NULLS LAST, seq NULLS LAST, journal_entry_id, asset_id;

-- name: balances_match_postings
-- The materialised account_balances equal the sum of postings, account by account
-- (entity, asset, bucket). An account present on only one side counts as zero on the other.
-- In parts by the account's entity. The postings are summed exactly, as whole parts and
-- fractions in units of 10^-18, each a HUGEINT (sql/views.sql's whole_part and fraction_units,
-- written out here so that verify needs nothing the ledger file may lack): an account's running
-- total may pass what DECIMAL(38, 18) holds on the way (a SYSTEM_ISSUANCE account credited and
-- debited 9 * 10^19 again and again) while its balance never does. The difference is compared
-- with zero exactly; `posted` is shown as DECIMAL(38, 18), NULL past what that holds.
WITH posted AS (
    SELECT entity_type, entity_id, asset_id, bucket,
           SUM(trunc(amount)::HUGEINT) AS whole,
           SUM(((amount - trunc(amount)) * 1000000000000000000)::HUGEINT) AS units
    FROM postings
    WHERE hash(entity_id) % $parts::UBIGINT = $part::UBIGINT
    GROUP BY ALL
),
b AS (SELECT * FROM account_balances WHERE hash(entity_id) % $parts::UBIGINT = $part::UBIGINT),
joined AS (
    SELECT COALESCE(b.entity_type, p.entity_type) AS entity_type,
           COALESCE(b.entity_id, p.entity_id) AS entity_id,
           COALESCE(b.asset_id, p.asset_id) AS asset_id,
           COALESCE(b.bucket, p.bucket) AS bucket,
           b.amount AS materialised,
           p.whole, p.units,
           -- materialised - posted, as a whole part and units of 10^-18
           trunc(COALESCE(b.amount, 0))::HUGEINT - COALESCE(p.whole, 0) AS d_whole,
           ((COALESCE(b.amount, 0) - trunc(COALESCE(b.amount, 0))) * 1000000000000000000)::HUGEINT
               - COALESCE(p.units, 0) AS d_units
    FROM b
    FULL OUTER JOIN posted p
      ON p.entity_type = b.entity_type AND p.entity_id = b.entity_id
     AND p.asset_id = b.asset_id AND p.bucket = b.bucket
)
SELECT entity_type, entity_id, asset_id, bucket, materialised,
       TRY_CAST(whole + units // 1000000000000000000 AS DECIMAL(38, 18))
           + (units % 1000000000000000000)::DECIMAL(38, 0) * 0.000000000000000001 AS posted
FROM joined
WHERE d_units % 1000000000000000000 <> 0 OR d_whole + d_units // 1000000000000000000 <> 0
ORDER BY ALL;

-- name: batch_counts
-- Each batch's stored counts reconcile (semantics.md 1.7 and 13: read = completed + failed +
-- duplicates + rejected), its entries_written is the number of journal entries that name it,
-- and the batches' postings_written add up to the postings the ledger holds. The manifest is what
-- a reader audits a run by: counts edited after commit are as much a break as an edited entry.
-- (Postings are counted over the whole ledger: per batch they would need a join of postings and
-- entries, which the checks above read in parts for memory.)
-- The rows a batch processed are stored (semantics.md 1.7: every input row ends in exactly one
-- place, counts reconcile): its events and operations rows are its completed + failed (the input
-- rows, a maintain batch's automation firings) + system_events (SCHEDULE_EVENT / BROADCAST events
-- it processed), and its rejected_rows its rejected (rows `stored_events_and_operations` and
-- `stored_rejected_rows`: the manifest's count, and the rows that name the batch). An event row deleted (a FAILED one has no
-- entry to miss it) or a quarantined row deleted passed before. Batches written before
-- system_events was kept (NULL) are left out of the first.
WITH entries AS (SELECT batch_id, COUNT(*) AS n FROM journal_entries GROUP BY batch_id),
processed AS (
    SELECT batch_id, SUM(n) AS n FROM (
        SELECT batch_id, COUNT(*) AS n FROM events GROUP BY batch_id
        UNION ALL
        SELECT batch_id, COUNT(*) FROM operations GROUP BY batch_id
    ) GROUP BY batch_id
),
quarantined AS (SELECT batch_id, COUNT(*) AS n FROM rejected_rows GROUP BY batch_id)
SELECT b.id AS batch_id, 'rows_read' AS count, b.rows_read AS stored,
       b.completed + b.failed + b.duplicates + b.rejected AS recomputed
FROM batches b
WHERE b.rows_read IS DISTINCT FROM b.completed + b.failed + b.duplicates + b.rejected
UNION ALL
SELECT b.id, 'entries_written', b.entries_written, COALESCE(e.n, 0)
FROM batches b LEFT JOIN entries e ON e.batch_id = b.id
WHERE b.entries_written IS DISTINCT FROM COALESCE(e.n, 0)
UNION ALL
SELECT b.id, 'stored_events_and_operations', b.completed + b.failed + b.system_events, COALESCE(p.n, 0)
FROM batches b LEFT JOIN processed p ON p.batch_id = b.id
WHERE b.system_events IS NOT NULL AND b.completed + b.failed + b.system_events IS DISTINCT FROM COALESCE(p.n, 0)
UNION ALL
SELECT b.id, 'stored_rejected_rows', b.rejected, COALESCE(q.n, 0)
FROM batches b LEFT JOIN quarantined q ON q.batch_id = b.id
WHERE b.rejected IS DISTINCT FROM COALESCE(q.n, 0)
UNION ALL
SELECT NULL, 'postings_written', stored, recomputed
FROM (SELECT (SELECT SUM(postings_written) FROM batches) AS stored, (SELECT COUNT(*) FROM postings) AS recomputed)
WHERE stored IS DISTINCT FROM recomputed AND stored IS NOT NULL
ORDER BY batch_id NULLS LAST, count;

-- name: entries_have_their_source
-- Every entry of an event or operation names one that is stored, COMPLETED and of the entry's
-- program (semantics.md 5.5: a FAILED event writes nothing; 8: an entry names its event or
-- operation): an event row deleted, or its status or program edited after commit, leaves entries
-- that no input accounts for. Time-driven entries (both null) have no source row. In parts by the
-- source's id.
WITH src AS (
    SELECT id, program_id, status FROM events WHERE hash(id) % $parts::UBIGINT = $part::UBIGINT
    UNION ALL
    SELECT id, program_id, status FROM operations WHERE hash(id) % $parts::UBIGINT = $part::UBIGINT
)
SELECT j.id AS journal_entry_id, j.seq, j.batch_id, COALESCE(j.event_id, j.operation_id) AS source_id,
       s.status AS source_status
FROM journal_entries j LEFT JOIN src s ON s.id = COALESCE(j.event_id, j.operation_id)
WHERE COALESCE(j.event_id, j.operation_id) IS NOT NULL
  AND hash(COALESCE(j.event_id, j.operation_id)) % $parts::UBIGINT = $part::UBIGINT
  AND (s.status IS DISTINCT FROM 'COMPLETED' OR s.program_id <> j.program_id)
ORDER BY j.seq;

-- name: no_duplicate_keys
-- The keys these tables have no index for (schema.sql says why) occur once: a participant's id
-- and its external id, an enrolment (participant, program), an account (entity, asset, bucket).
SELECT 'participants.id' AS duplicated_on, id::VARCHAR AS key, COUNT(*) AS occurrences
FROM participants GROUP BY id HAVING COUNT(*) > 1
UNION ALL
SELECT 'participants.external_id', external_id, COUNT(*)
FROM participants GROUP BY external_id HAVING COUNT(*) > 1
UNION ALL
SELECT 'enrollments', participant_id::VARCHAR || '/' || program_id::VARCHAR, COUNT(*)
FROM enrollments GROUP BY participant_id, program_id HAVING COUNT(*) > 1
UNION ALL
SELECT 'account_balances', entity_type || '/' || entity_id::VARCHAR || '/' || asset_id::VARCHAR || '/' || bucket, COUNT(*)
FROM account_balances GROUP BY entity_type, entity_id, asset_id, bucket HAVING COUNT(*) > 1
ORDER BY ALL;

-- name: no_duplicate_entries
-- Every journal entry id occurs once. Ids are name_uuid(event, rule version, action index), so this is
-- also "at most one entry per (event, rule version, action)"; the second half checks that directly.
-- In parts by the entry id, and by the event id for the second half.
SELECT 'id' AS duplicated_on, id::VARCHAR AS key, COUNT(*) AS occurrences
FROM journal_entries
WHERE hash(id) % $parts::UBIGINT = $part::UBIGINT
GROUP BY id
HAVING COUNT(*) > 1
UNION ALL
SELECT 'event_rule_action', event_id::VARCHAR || '/' || rule_version || '/' || action_index::VARCHAR, COUNT(*)
FROM journal_entries
WHERE event_id IS NOT NULL AND hash(event_id) % $parts::UBIGINT = $part::UBIGINT
GROUP BY event_id, rule_version, action_index
HAVING COUNT(*) > 1
ORDER BY ALL;
