-- `perkflow verify`: each section returns the rows that VIOLATE an invariant (zero rows = holds),
-- first violation first. The invariants of sql/checks.sql are run as well.

-- name: entry_hashes
-- Every entry's hash, recomputed from its stored content and postings with the writer's macros:
-- sha256(entry_text || '#' || its postings' posting_text joined by ';' in posting id order), as
-- its batch's hash_version says.
-- Written without an ordered string_agg over all postings (which holds every posting's text in
-- memory at once, beyond DuckDB's memory cap): an entry written by the engine has exactly two
-- postings, found by the min and max of their ids through joins DuckDB can spill to disk; only
-- entries with another number of postings, or two with one id (a tampered ledger), are
-- aggregated in full. Run once per part ($part of $parts, by a hash of the entry id; engine/
-- verify.py): the joins' tables still grew with the ledger past a 700 MB cap at 29M entries.
WITH versions AS (
    -- each entry's batch's hash_version (a batch gone missing: the current one; other checks say so)
    -- (UBIGINT: with a BIGINT parameter the modulus is a HUGEINT one, ~50x slower)
    SELECT j.id AS journal_entry_id, COALESCE(b.hash_version, hash_version()) AS version
    FROM journal_entries j LEFT JOIN batch_hash_versions b ON b.id = j.batch_id
    WHERE hash(j.id) % $parts::UBIGINT = $part::UBIGINT
),
mine AS (
    SELECT p.*, v.version FROM postings p JOIN versions v USING (journal_entry_id)
    WHERE hash(p.journal_entry_id) % $parts::UBIGINT = $part::UBIGINT
),
counted AS (
    SELECT journal_entry_id, count(*) AS n, min(id) AS lo, max(id) AS hi FROM mine GROUP BY journal_entry_id
),
two AS (
    SELECT c.journal_entry_id,
           posting_text(x.id, x.entity_type, x.entity_id, x.asset_id, x.bucket, x.amount, x.program_id, x.version) || ';' ||
           posting_text(y.id, y.entity_type, y.entity_id, y.asset_id, y.bucket, y.amount, y.program_id, y.version) AS postings
    FROM counted c
    JOIN mine x ON x.journal_entry_id = c.journal_entry_id AND x.id = c.lo
    JOIN mine y ON y.journal_entry_id = c.journal_entry_id AND y.id = c.hi
    WHERE c.n = 2 AND c.lo <> c.hi
),
other AS (
    SELECT journal_entry_id,
           string_agg(posting_text(id, entity_type, entity_id, asset_id, bucket, amount, program_id, version), ';'
                      ORDER BY id) AS postings
    FROM mine
    WHERE journal_entry_id IN (SELECT journal_entry_id FROM counted WHERE n <> 2 OR lo = hi)
    GROUP BY journal_entry_id
),
p AS (SELECT * FROM two UNION ALL SELECT * FROM other)
SELECT j.id AS journal_entry_id, j.seq, j.batch_id, j.entry_hash AS stored,
       sha256(entry_text(j.id, j.seq, j.program_id, j.event_id, j.operation_id, j.rule_id, j.rule_version,
                         j.action_index, j.action_type, j.reference_id, j.effective_at, j.allow_negative,
                         j.description, v.version)
              || '#' || COALESCE(p.postings, '')) AS recomputed
FROM journal_entries j JOIN versions v ON v.journal_entry_id = j.id LEFT JOIN p ON p.journal_entry_id = j.id
WHERE hash(j.id) % $parts::UBIGINT = $part::UBIGINT AND stored <> recomputed
ORDER BY j.seq;

-- name: batch_hash_versions
-- Each batch's hash_version, as entry_hashes reads it (a TEMP view: verify opens the ledger
-- read-only). A ledger written before the column existed (and not written to since, which adds
-- it) is all version 1.
CREATE OR REPLACE TEMP VIEW batch_hash_versions AS
SELECT id, hash_version FROM batches;

-- name: batch_hash_versions_before_the_column
CREATE OR REPLACE TEMP VIEW batch_hash_versions AS
SELECT id, 1 AS hash_version FROM batches;

-- name: has_hash_version
SELECT count(*) > 0 FROM duckdb_columns()
WHERE database_name = current_database() AND schema_name = 'main' AND table_name = 'batches' AND column_name = 'hash_version';

-- name: entry_count
SELECT count(*) FROM journal_entries;

-- name: chain_batches
-- The batch chain (check `batch_chain`, engine/verify.py): every batch root recomputed from the
-- stored entry hashes and the previous batch's recomputed root, streamed chunk by chunk into
-- engine/ledger/root.py's BatchRoot as the writer feeds it. The chain starts at the first batch
-- (previous root '') and breaks at a gap in the ids (every later batch is then reported).
SELECT id AS batch_id, root_hash AS stored, prev_root_hash FROM batches ORDER BY id;

-- name: chain_entry_hashes
-- Every entry's stored hash, batch by batch in seq order (read in chunks, never whole), as its
-- batch's root covers it: `seq:entry_hash` in a batch of hash version 3 or later (the entry hash
-- no longer covers the seq; sql/hash.sql), the hash alone before.
SELECT j.batch_id,
       CASE WHEN COALESCE(b.hash_version, hash_version()) >= 3 THEN j.seq::VARCHAR || ':' || j.entry_hash
            ELSE j.entry_hash END AS entry_hash
FROM journal_entries j LEFT JOIN batch_hash_versions b ON b.id = j.batch_id
ORDER BY j.batch_id, j.seq;

-- name: summary_identity
-- issued - redeemed - expired - forfeited = current balance, per program and asset, of the
-- ledger_summary view. Read in parts ($part of $parts, by a hash of the entry id; engine/verify.py):
-- the view over the whole ledger outgrew a 700 MB cap at 29M entries (125 MB at 2.9M). A part
-- is ledger_summary's own exact sums over its entries (ledger_sums_part: whole parts and
-- fractions, so that flows past 10^20 neither overflow nor round); `summary_identity_whole`
-- adds the parts up.
-- The sums cross Arrow (which has no 128-bit integer) as DECIMAL(38, 0); summary_identity_whole
-- makes them HUGEINT again before `//` and `%`, which on a DECIMAL are DOUBLE operations (they
-- rounded a sum of fractions: 91731 read 91730.99999999999).
SELECT program_id, asset_id,
       issued_w::DECIMAL(38, 0) AS issued_w, issued_f::DECIMAL(38, 0) AS issued_f,
       redeemed_w::DECIMAL(38, 0) AS redeemed_w, redeemed_f::DECIMAL(38, 0) AS redeemed_f,
       expired_w::DECIMAL(38, 0) AS expired_w, expired_f::DECIMAL(38, 0) AS expired_f,
       forfeited_w::DECIMAL(38, 0) AS forfeited_w, forfeited_f::DECIMAL(38, 0) AS forfeited_f,
       closing_w::DECIMAL(38, 0) AS closing_w, closing_f::DECIMAL(38, 0) AS closing_f
FROM ledger_sums_part(NULL, NULL, $part, $parts);

-- name: summary_identity_whole
-- The parts' rows (`parts`, an Arrow table of summary_identity's) added up per program and asset,
-- the identity checked on the exact sums; the amounts as ledger_summary shows them (NULL past
-- what DECIMAL(38, 18) holds).
WITH sums AS (
    SELECT program_id, asset_id,
           SUM(issued_w::HUGEINT) AS iw, SUM(issued_f::HUGEINT) AS i_f,
           SUM(redeemed_w::HUGEINT) AS rw, SUM(redeemed_f::HUGEINT) AS r_f,
           SUM(expired_w::HUGEINT) AS ew, SUM(expired_f::HUGEINT) AS e_f,
           SUM(forfeited_w::HUGEINT) AS fw, SUM(forfeited_f::HUGEINT) AS f_f,
           SUM(closing_w::HUGEINT) AS cw, SUM(closing_f::HUGEINT) AS c_f
    FROM parts
    GROUP BY program_id, asset_id
)
SELECT pr.key AS program_key, a.symbol AS asset_symbol,
       exact_amount(COALESCE(iw, 0), COALESCE(i_f, 0)) AS total_issued,
       exact_amount(COALESCE(rw, 0), COALESCE(r_f, 0)) AS total_redeemed,
       exact_amount(COALESCE(ew, 0), COALESCE(e_f, 0)) AS total_expired,
       exact_amount(COALESCE(fw, 0), COALESCE(f_f, 0)) AS total_forfeited,
       exact_amount(cw, c_f) AS current_balance
FROM sums s
JOIN programs pr ON pr.id = s.program_id
JOIN assets a ON a.id = s.asset_id
WHERE NOT exact_zero(COALESCE(iw, 0) - COALESCE(rw, 0) - COALESCE(ew, 0) - COALESCE(fw, 0) - cw,
                     COALESCE(i_f, 0) - COALESCE(r_f, 0) - COALESCE(e_f, 0) - COALESCE(f_f, 0) - c_f)
ORDER BY program_key, asset_symbol;

-- name: negative_balances
-- Balances go negative only through allow_negative (semantics.md 8): a participant's or group's
-- AVAILABLE balance below zero needs an entry that was allowed to overdraw it; no other account
-- may be below zero at all (HELD and DEFERRED buckets, program wallets, breakage, redemption),
-- save SYSTEM_ISSUANCE, the source every issued unit is drawn from.
-- The negative accounts first, then only their postings meet the entries: the correlated NOT
-- EXISTS this was joined every posting to its entry (60 MB of DuckDB's memory at 2.9M entries
-- even with no negative balance; 40 MB at 0.7M).
WITH negative AS (
    SELECT entity_type, entity_id, asset_id, bucket, amount
    FROM account_balances
    WHERE entity_type <> 'SYSTEM_ISSUANCE' AND amount < 0
),
allowed AS (
    SELECT DISTINCT p.entity_type, p.entity_id, p.asset_id, p.bucket
    FROM postings p
    SEMI JOIN negative n ON n.entity_type = p.entity_type AND n.entity_id = p.entity_id
                        AND n.asset_id = p.asset_id AND n.bucket = p.bucket
    JOIN journal_entries j ON j.id = p.journal_entry_id
    WHERE j.allow_negative AND p.entity_type IN ('PARTICIPANT', 'GROUP') AND p.bucket = 'AVAILABLE'
)
SELECT n.entity_id AS participant_id, n.asset_id, n.amount, n.entity_type, n.bucket
FROM negative n
ANTI JOIN allowed a ON a.entity_type = n.entity_type AND a.entity_id = n.entity_id
                   AND a.asset_id = n.asset_id AND a.bucket = n.bucket
ORDER BY ALL;

-- name: lot_remainders
-- For LOT assets, what the lots still hold equals the AVAILABLE, DEFERRED and HELD balances
-- (accounts overdrawn through allow_negative hold no lots and are left out). In parts by the
-- account's entity (sql/checks.sql says why).
WITH held AS (
    SELECT entity_type, entity_id, asset_id, status AS bucket, SUM(remaining) AS in_lots
    FROM lots WHERE status IN ('AVAILABLE', 'DEFERRED', 'HELD') AND hash(entity_id) % $parts::UBIGINT = $part::UBIGINT GROUP BY ALL
),
b AS (SELECT * FROM account_balances WHERE hash(entity_id) % $parts::UBIGINT = $part::UBIGINT)
SELECT b.entity_type, b.entity_id, b.asset_id, b.bucket, b.amount AS balance, COALESCE(h.in_lots, 0) AS in_lots
FROM b
JOIN assets a ON a.id = b.asset_id AND a.inventory_mode = 'LOT'
LEFT JOIN held h ON h.entity_type = b.entity_type AND h.entity_id = b.entity_id AND h.asset_id = b.asset_id
                AND h.bucket = b.bucket
WHERE b.entity_type IN ('PARTICIPANT', 'GROUP', 'PROGRAM_WALLET') AND b.bucket IN ('AVAILABLE', 'DEFERRED', 'HELD')
  AND b.amount >= 0 AND b.amount <> COALESCE(h.in_lots, 0)
ORDER BY ALL;

-- name: tier_levels_match_history
-- Tiers: each participant's current level in a tier is the last change of its tier history
-- ('current'), and every change starts from the level the previous one set ('chain').
WITH h AS (
    SELECT participant_id, tier_id, seq, from_level, to_level,
           lag(to_level) OVER (PARTITION BY participant_id, tier_id ORDER BY seq) AS previous,
           row_number() OVER (PARTITION BY participant_id, tier_id ORDER BY seq DESC) AS from_last
    FROM tier_history
)
SELECT 'current' AS problem, COALESCE(t.participant_id, h.participant_id) AS participant_id,
       COALESCE(t.tier_id, h.tier_id) AS tier_id, t.level AS stored, h.to_level AS in_history
FROM participant_tiers t
FULL OUTER JOIN (SELECT * FROM h WHERE from_last = 1) h ON h.participant_id = t.participant_id AND h.tier_id = t.tier_id
WHERE t.level IS DISTINCT FROM h.to_level
UNION ALL
SELECT 'chain', participant_id, tier_id, from_level, previous FROM h WHERE from_level IS DISTINCT FROM previous
ORDER BY ALL;

-- name: ledger_tables
-- The ledger's own tables (a ledger written before a catalog table has none of it).
SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = 'main';

-- name: catalog_ids
-- Catalog rows whose id is UUIDv5 of their keys (docs/tables.md; engine/catalog/integrity.py
-- recomputes it from `name`, the id's name parts: a part NULL when the row's program is gone).
-- Entries and postings name programs, assets, rules and groups by these ids, which their hashes
-- cover: a key edited after commit no longer derives the id the chain vouches for.
-- $tables: the tables this ledger has (one written before tiers, groups or automations lacks them).
SELECT 'programs' AS "table", id::VARCHAR AS id, ['program', key] AS name FROM programs
UNION ALL
SELECT 'assets', id::VARCHAR, ['asset', symbol] FROM assets
UNION ALL
SELECT 'rules', r.id::VARCHAR, ['rule', p.key, r.key] FROM rules r LEFT JOIN programs p ON p.id = r.program_id
UNION ALL
SELECT 'rewards', w.id::VARCHAR, ['reward', p.key, w.key] FROM rewards w LEFT JOIN programs p ON p.id = w.program_id;

-- name: catalog_ids_tiers
SELECT 'tiers' AS "table", t.id::VARCHAR AS id, ['tier', p.key, t.key] AS name
FROM tiers t LEFT JOIN programs p ON p.id = t.program_id;

-- name: catalog_ids_groups
SELECT 'groups' AS "table", id::VARCHAR AS id, ['group', key] AS name FROM groups;

-- name: catalog_ids_automations
SELECT 'automations' AS "table", a.id::VARCHAR AS id, ['automation', p.key, a.key] AS name
FROM automations a LEFT JOIN programs p ON p.id = a.program_id;

-- name: catalog_rule_versions
-- Every rule version with its program's key (NULL: the rule or its program row is gone), and the
-- `rules` row of the rule when this is its current version (NULLs otherwise): the version is the
-- content hash of the program key and the stored definition (engine/catalog/integrity.py).
SELECT v.rule_id::VARCHAR AS rule_id, v.version, v.definition::VARCHAR AS definition, v.first_batch_id,
       p.key AS program_key, r.id IS NOT NULL AS has_rule,
       CASE WHEN r.current_version = v.version THEN r.key END AS current_key,
       CASE WHEN r.current_version = v.version THEN r.name END AS current_name,
       CASE WHEN r.current_version = v.version THEN r."order" END AS current_order,
       CASE WHEN r.current_version = v.version THEN r.stop_after_match END AS current_stop_after_match
FROM rule_versions v LEFT JOIN rules r ON r.id = v.rule_id LEFT JOIN programs p ON p.id = r.program_id
ORDER BY v.first_batch_id, v.rule_id, v.version;

-- name: catalog_versions_named
-- Rule versions that a rule's current_version, a journal entry or a rule evaluation names and
-- rule_versions lacks (the definition behind an entry deleted): (batch, where, rule, version).
-- Time-driven entries name their kind in rule_version and no rule; they are left out.
WITH named AS (
    SELECT min(batch_id) AS batch_id, 'journal_entries' AS "where", rule_id, rule_version AS version
    FROM journal_entries WHERE rule_id IS NOT NULL GROUP BY rule_id, rule_version
    UNION ALL
    SELECT min(batch_id), 'rule_evaluations', rule_id, rule_version FROM rule_evaluations GROUP BY rule_id, rule_version
    UNION ALL
    SELECT NULL, 'rules', id, current_version FROM rules
)
SELECT n.batch_id, n."where", n.rule_id::VARCHAR AS rule_id, n.version
FROM named n ANTI JOIN rule_versions v ON v.rule_id = n.rule_id AND v.version = n.version
ORDER BY n.batch_id NULLS LAST, n."where", n.rule_id, n.version;

-- name: entry_seqs
-- Every entry's batch, seq and its batch's hash version, in (batch, seq) order, streamed in chunks
-- (engine/verify.py entry_seqs checks that the seqs count up by one).
SELECT j.batch_id, j.seq, COALESCE(b.hash_version, hash_version()) AS version
FROM journal_entries j LEFT JOIN batch_hash_versions b ON b.id = j.batch_id
ORDER BY j.batch_id, j.seq;

-- name: chain_head
-- The last batch and its stored root (`perkflow verify` prints it: the anchor to keep elsewhere).
SELECT id, root_hash FROM batches ORDER BY id DESC LIMIT 1;

-- name: participant_ids
-- Participants whose id is not UUIDv5 of `participant:<external_id>` (docs/tables.md), with the
-- batch that created them: postings name participants by id, and entry hashes cover it; the
-- external id is who that is to every report, so an edited one gives a balance to another
-- customer. `name_uuid` here is verify's TEMP copy of schema.sql's (db.define_id_macros).
SELECT created_batch_id AS batch_id, external_id, id::VARCHAR AS stored,
       name_uuid('participant:' || external_id)::VARCHAR AS recomputed
FROM participants
WHERE id IS DISTINCT FROM name_uuid('participant:' || external_id)
ORDER BY batch_id, external_id;

-- name: stored_views
-- The views the ledger file stores, by name, with the SQL DuckDB keeps for them (check
-- `stored_definitions`, engine/verify.py: compared with a fresh ledger's).
SELECT view_name, sql FROM duckdb_views()
WHERE database_name = current_database() AND schema_name = 'main' AND NOT internal;

-- name: stored_macros
-- The macros the ledger file stores (its TEMP ones, such as verify's hash macros, are not in it).
SELECT function_name || '(' || parameters::VARCHAR || ') ' || function_type AS name, macro_definition
FROM duckdb_functions()
WHERE database_name = current_database() AND schema_name = 'main' AND function_type IN ('macro', 'table_macro');
