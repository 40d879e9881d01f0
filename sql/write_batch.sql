-- Statements the ledger writer runs inside one transaction per batch. Sections are named with
-- `-- name: <name>` and executed by engine/ledger/writer.py. The `stage_*` relations are Arrow
-- tables the writer passes to each statement (engine/ledger/db.execute); `$batch_id` is bound as a parameter.
-- Ids are name-based (MD5) UUIDs: pure functions of program, idempotency key, rule version and
-- action index, so the same input always gives the same ids.

-- name: insert_catalog_programs
INSERT INTO programs BY NAME
SELECT id::UUID AS id, key, name, status, on_unknown_participant, source_file, redemption_target_type FROM stage_programs
ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, status = EXCLUDED.status,
    on_unknown_participant = EXCLUDED.on_unknown_participant, source_file = EXCLUDED.source_file,
    redemption_target_type = EXCLUDED.redemption_target_type;

-- name: insert_catalog_group_founders
-- A group's declared members, once: when the group first appears (later changes of membership
-- are operations, written by delete_group_members / insert_group_members).
INSERT INTO group_members
SELECT group_id::UUID, participant_id::UUID, external_id, role, 'ACTIVE', NULL, NULL, $batch_id FROM stage_group_founders
WHERE group_id::UUID NOT IN (SELECT id FROM groups);

-- name: insert_catalog_groups
INSERT INTO groups SELECT id::UUID, key, name, status, definition::JSON, source_file FROM stage_groups
ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, status = EXCLUDED.status, definition = EXCLUDED.definition,
    source_file = EXCLUDED.source_file;

-- name: insert_catalog_program_documents
INSERT OR REPLACE INTO program_documents SELECT id::UUID, key, document::JSON, $batch_id FROM stage_program_documents;

-- name: insert_catalog_automations
-- A new automation is introduced at the ledger's clock before this batch: the latest instant
-- processed so far (events, operations, maintenance planning); null for a ledger with none yet.
-- Runs before insert_events, so this batch's own rows do not count. A changed definition keeps
-- when it was introduced and how far it was planned (also one back in its file after it was
-- removed: maintenance planned past its instants meanwhile, archive_removed_automations).
INSERT INTO automations
SELECT s.id::UUID, s.program_id::UUID, s.key, s.name, s.event_name, s.scope, s.trigger_type, s.status,
       s.definition::JSON,
       (SELECT MAX(t) FROM (SELECT MAX(event_timestamp) AS t FROM events
                            UNION ALL SELECT MAX(timestamp) FROM operations
                            UNION ALL SELECT MAX(planned_through) FROM automations)),
       NULL, $batch_id
FROM stage_automations s
ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, event_name = EXCLUDED.event_name, scope = EXCLUDED.scope,
    trigger_type = EXCLUDED.trigger_type, status = EXCLUDED.status, definition = EXCLUDED.definition;

-- name: archive_removed_automations
-- An automation no longer in its program's file (the program was loaded, the automation was not)
-- is archived (Scrip: deleting an automation archives it): maintenance, which plans from the
-- stored program documents, no longer fires it, and plans past its instants as for a paused
-- one (engine/automations.py), so back in the file it does not make them up; its row stays for
-- the events it fired.
UPDATE automations SET status = 'archived'
WHERE status <> 'archived' AND program_id IN (SELECT id::UUID FROM stage_programs)
  AND id NOT IN (SELECT id::UUID FROM stage_automations);

-- name: update_automations_planned
UPDATE automations SET planned_through = s.planned_through FROM stage_automations_planned s
WHERE automations.id = s.id::UUID;

-- name: insert_catalog_assets
-- name and max_transaction_amount follow the files (Scrip's asset PATCH takes them); the other
-- fields cannot change (engine/catalog/ledger_checks.py refuses files that change them).
INSERT INTO assets
SELECT id::UUID, symbol, name, inventory_mode, issuance_policy, scale, max_transaction_amount FROM stage_assets
ON CONFLICT (id) DO UPDATE SET name = excluded.name, max_transaction_amount = excluded.max_transaction_amount;

-- name: insert_catalog_rewards
INSERT OR REPLACE INTO rewards
SELECT id::UUID, program_id::UUID, key, name, redemption_type, asset_id::UUID, unit_cost, max_total,
       max_per_participant, status, available_from, available_until
FROM stage_rewards;

-- name: insert_catalog_rules
INSERT OR REPLACE INTO rules
SELECT id::UUID, program_id::UUID, key, name, version, "order", status, stop_after_match, condition FROM stage_rules;

-- name: archive_removed_rules
-- A rule no longer in its program's file (the program was loaded, the rule was not) is ARCHIVED:
-- `rules` holds the current version of each rule, and a removed rule has none that runs (it
-- stayed ACTIVE, so two ACTIVE rules could show one `order`). Its row and versions stay, so the
-- entries and evaluations it wrote keep naming it; back in the file, it is what the file says.
UPDATE rules SET status = 'ARCHIVED'
WHERE status <> 'ARCHIVED' AND program_id IN (SELECT id::UUID FROM stage_programs)
  AND id NOT IN (SELECT id::UUID FROM stage_rules);

-- name: archive_removed_rewards
-- Likewise a reward no longer in its program's file: redeem_item no longer finds it, so the
-- catalog shows it ARCHIVED (Scrip's status for a reward withdrawn from the catalog); its row
-- stays for the redemptions that name it, and back in the file it is what the file says.
UPDATE rewards SET status = 'ARCHIVED'
WHERE status <> 'ARCHIVED' AND program_id IN (SELECT id::UUID FROM stage_programs)
  AND id NOT IN (SELECT id::UUID FROM stage_rewards);

-- name: insert_catalog_rule_versions
INSERT OR IGNORE INTO rule_versions SELECT id::UUID, version, definition::JSON, $batch_id FROM stage_rules;

-- name: delete_catalog_fingerprint
DELETE FROM catalog_fingerprint WHERE fingerprint NOT IN (SELECT fingerprint FROM stage_catalog_fingerprint);

-- name: insert_catalog_fingerprint
INSERT INTO catalog_fingerprint SELECT fingerprint, $batch_id FROM stage_catalog_fingerprint
WHERE fingerprint NOT IN (SELECT fingerprint FROM catalog_fingerprint);

-- name: insert_participants
INSERT INTO participants SELECT id::UUID, external_id, 'ACTIVE', created_at, $batch_id FROM stage_participants;

-- name: insert_enrollments
-- The chunk's (participant, program) pairs, existing ones included: only the new are stored.
INSERT INTO enrollments SELECT participant_id::UUID, program_id::UUID, enrolled_at, $batch_id FROM stage_enrollments s
WHERE NOT EXISTS (SELECT 1 FROM enrollments e
                  WHERE e.participant_id = s.participant_id::UUID AND e.program_id = s.program_id::UUID);

-- name: insert_events
INSERT INTO events
SELECT name_uuid('event:' || program_id || ':' || idempotency_key),
       program_id::UUID, participant_id::UUID, external_id, participant_ref,
       recipient_id::UUID, recipient_external_id, recipient_ref,
       idempotency_key, event_timestamp, arrival_seq, event_json::JSON,
       status, error_code, error_message, $batch_id, source, row_number, event_data_type
FROM stage_events;

-- name: insert_payload_types
INSERT OR IGNORE INTO payload_types SELECT key, arrow_schema FROM stage_payload_types;

-- name: insert_operations
INSERT INTO operations
SELECT name_uuid('operation:' || program_id || ':' || idempotency_key), program_id::UUID, operation,
       participant_id::UUID, external_id, participant_ref, idempotency_key, timestamp, arrival_seq, params::JSON,
       status, error_code, error_message, $batch_id, source, row_number
FROM stage_operations;

-- name: update_participant_status
UPDATE participants SET status = s.status FROM stage_statuses s WHERE participants.id = s.id::UUID;

-- name: insert_rejected
INSERT INTO rejected_rows SELECT $batch_id, source, row_number, reason, message, raw FROM stage_rejected;

-- name: insert_evaluations
INSERT INTO rule_evaluations
SELECT name_uuid('event:' || program_id || ':' || idempotency_key), rule_id::UUID, rule_version, outcome, message, $batch_id
FROM stage_evaluations;

-- name: stage_entries
-- The derived ids of every effect, keyed by its `seq`; every effect moves `amount` from one
-- account to another, so an entry has two postings: posting 0 takes it from the source account,
-- posting 1 gives it to the destination (a transfer to several recipients has one more posting
-- per recipient after the first: its `stage_legs`, engine.ledger.writer.entry_legs). An event's
-- entries are keyed by rule version and action index, an operation's by its part, a lot's expiry
-- or maturity by the lot. source_name: 'event:' || program_id || ':' || idempotency_key,
-- 'operation:' || ..., or 'lot:' || lot id. Only ids are materialised (narrow, fixed-width): the
-- wide effect columns are read straight from the Arrow stage by the inserts below, joined on
-- seq. Each level is its own subquery so that every id is computed once per row.
CREATE OR REPLACE TEMP TABLE batch_entries AS
SELECT seq, id, posting_id(id, 0) AS p0_id, posting_id(id, 1) AS p1_id,
       CASE kind WHEN 'event' THEN source_id END AS event_id,
       CASE kind WHEN 'operation' THEN source_id END AS operation_id
FROM (
    SELECT seq, kind, source_id,
           name_uuid('entry:' || source_id || ':' || COALESCE(rule_version, 'op') || ':' || action_index) AS id
    FROM (SELECT seq, kind, rule_version, action_index, name_uuid(source_name) AS source_id FROM stage_effects)
);

-- name: insert_postings
-- The source's posting is of the entry's whole amount (`source_amount`: more than `amount` for a
-- transfer to several recipients).
INSERT INTO postings
SELECT b.p0_id, b.id, e.program_id::UUID, e.from_type, e.from_id::UUID, e.asset_id::UUID, e.from_bucket,
       -(e.source_amount::DECIMAL(38, 18))
FROM stage_effects e JOIN batch_entries b USING (seq)
UNION ALL
SELECT b.p1_id, b.id, e.program_id::UUID, e.to_type, e.to_id::UUID, e.asset_id::UUID, e.to_bucket,
       e.amount::DECIMAL(38, 18)
FROM stage_effects e JOIN batch_entries b USING (seq);

-- name: insert_leg_postings
-- A transfer's recipients after the first: posting leg + 1 of its entry.
INSERT INTO postings
SELECT posting_id(b.id, l.leg + 1), b.id, l.program_id::UUID, l.to_type, l.to_id::UUID, l.asset_id::UUID,
       l.to_bucket, l.amount::DECIMAL(38, 18)
FROM stage_legs l JOIN batch_entries b USING (seq);

-- name: insert_entries
-- The hash covers the entry and all its postings in posting-id order: what verify.sql recomputes
-- from the stored rows with string_agg(... ORDER BY id). An entry of two postings orders its pair
-- inline; an entry with legs (a transfer to several recipients) reads its postings back, as
-- verify does. (With no legs, the join's empty side ends its scan of postings at once. A filter
-- on the stage instead, to send the two kinds of entry different ways, cost ~15% more CPU here.)
INSERT INTO journal_entries
SELECT id, seq, program_id::UUID, event_id, operation_id, rule_id::UUID, rule_version, action_index,
       action_type, reference_id, description, effective_at, allow_negative, $batch_id,
       sha256(entry_text(id, seq, program_id, event_id, operation_id, rule_id, rule_version, action_index,
                         action_type, reference_id, effective_at, allow_negative, description, hash_version())
              || '#' || COALESCE(s.postings, CASE WHEN p0_id < p1_id THEN p0 || ';' || p1 ELSE p1 || ';' || p0 END))
FROM (
    SELECT e.*, b.id, b.p0_id, b.p1_id, b.event_id, b.operation_id,
           posting_text(b.p0_id, e.from_type, e.from_id::UUID, e.asset_id::UUID, e.from_bucket,
                        -(e.source_amount::DECIMAL(38, 18)), e.program_id::UUID, hash_version()) AS p0,
           posting_text(b.p1_id, e.to_type, e.to_id::UUID, e.asset_id::UUID, e.to_bucket, e.amount::DECIMAL(38, 18),
                        e.program_id::UUID, hash_version()) AS p1
    FROM stage_effects e JOIN batch_entries b USING (seq)
) LEFT JOIN (
    SELECT b.seq, string_agg(posting_text(p.id, p.entity_type, p.entity_id, p.asset_id, p.bucket, p.amount,
                                          p.program_id, hash_version()), ';' ORDER BY p.id) AS postings
    FROM (SELECT DISTINCT seq FROM stage_legs) JOIN batch_entries b USING (seq)
    JOIN postings p ON p.journal_entry_id = b.id
    GROUP BY b.seq
) s USING (seq);

-- name: match_balances
-- This chunk's postings summed per account (`stage_balances`, summed by the writer from the
-- stage rather than by scanning the postings table, which grows with every batch), each matched
-- once to its row (`row_id`; null for an account the ledger does not hold yet), keyed by the
-- stage's `row` for the two statements below. One join instead of one in each (an UPDATE .. FROM
-- the stage, then an INSERT .. WHERE NOT EXISTS) halved their CPU: 1.25 -> 0.65 s for 260,000
-- accounts against 2.8M (W2, 1M participants). (Not one INSERT .. ON CONFLICT DO UPDATE: the
-- accounts have no unique index, schema.sql says why; with one, on rows an earlier chunk of the
-- same transaction wrote, that cost about 1 s per 100,000 accounts.)
CREATE OR REPLACE TEMP TABLE batch_accounts AS
SELECT d.row, b.rowid AS row_id
FROM stage_balances d
LEFT JOIN account_balances b ON b.entity_type = d.entity_type AND b.entity_id = d.entity_id::UUID
                            AND b.asset_id = d.asset_id::UUID AND b.bucket = d.bucket;

-- name: update_balances
-- Accounts that exist move by it, updated by rowid (DuckDB's UPDATE .. FROM a stage that also
-- holds accounts not in the table took ~20x longer) ...
UPDATE account_balances SET amount = account_balances.amount + d.amount
FROM stage_balances d JOIN batch_accounts m USING (row)
WHERE account_balances.rowid = m.row_id;

-- name: insert_balances
-- ... and new accounts start at it.
INSERT INTO account_balances
SELECT d.entity_type, d.entity_id::UUID, d.asset_id::UUID, d.bucket, d.amount
FROM stage_balances d JOIN batch_accounts m USING (row)
WHERE m.row_id IS NULL;

-- name: chunk_hashes
-- A chunk's entries in ledger order as the batch root covers them, `seq:entry_hash` (hash version
-- 3: the hash no longer covers the entry's place, the root does; sql/hash.sql), for the root the
-- writer feeds chunk by chunk (engine/ledger/root.py).
SELECT seq::VARCHAR || ':' || entry_hash FROM journal_entries WHERE batch_id = $batch_id AND seq >= $seq_from
ORDER BY seq;

-- name: insert_batch
-- The root (computed by the writer, engine/ledger/root.py) chains this batch's entry hashes,
-- in ledger order, to the previous batch's root. BY NAME: columns added after the table
-- (hash_version, system_events) stand in the order each ledger gained them.
INSERT INTO batches BY NAME
SELECT $batch_id AS id, $fingerprint AS input_fingerprint, $sources AS sources, $catalog_version AS catalog_version,
       $rows_read AS rows_read, $completed AS completed, $failed AS failed, $duplicates AS duplicates,
       $rejected AS rejected, $entries AS entries_written, $postings AS postings_written, now() AS committed_at,
       $root AS root_hash, $prev_root AS prev_root_hash, hash_version() AS hash_version,
       $system_events AS system_events;

-- name: insert_batch_input
-- One input of a batch that booked several (engine/run.py `Backfill.run_days`); its rejected rows
-- are those of the batch read from its files.
INSERT INTO batch_inputs
SELECT $batch_id, $fingerprint, $sources, $rows_read,
       (SELECT count(*) FROM rejected_rows WHERE batch_id = $batch_id AND list_contains($sources, source));

-- name: delete_entity_state
DELETE FROM entity_state USING stage_state_entities s
WHERE entity_state.entity_type = s.entity_type AND entity_state.entity_id = s.entity_id::UUID;

-- name: insert_entity_state
INSERT INTO entity_state
SELECT entity_type, entity_id::UUID, kind, key, text_value, number_value, reset_after_us, last_reset_at, $batch_id
FROM stage_state;

-- name: delete_group_members
DELETE FROM group_members WHERE group_id IN (SELECT id::UUID FROM stage_member_groups);

-- name: insert_group_members
INSERT INTO group_members
SELECT group_id::UUID, participant_id::UUID, external_id, role, status, joined_at, left_at, $batch_id
FROM stage_group_members;

-- name: delete_lots
DELETE FROM lots WHERE id IN (SELECT id::UUID FROM stage_lots);

-- name: insert_lots
INSERT INTO lots BY NAME
SELECT id::UUID AS id, entity_type, entity_id::UUID AS entity_id, asset_id::UUID AS asset_id, amount, remaining,
       status, created_at, expires_at, matures_at, reference_id, program_id::UUID AS program_id, provisional,
       $batch_id AS batch_id
FROM stage_lots;

-- name: upsert_reward_usage
INSERT INTO reward_usage SELECT reward_id::UUID, participant_id, redeemed_count FROM stage_reward_usage
ON CONFLICT DO UPDATE SET redeemed_count = EXCLUDED.redeemed_count;

-- name: keep_redemptions
-- The id and entry of each redemption the chunk rewrites (a reversal changes its row): they stay
-- as first written (a redemption of a ledger from before session 19 has an md5 id, and its entry).
CREATE OR REPLACE TEMP TABLE kept_redemptions AS
SELECT r.program_id, r.idempotency_key, r.id, r.journal_entry_id
FROM redemptions r JOIN stage_redemptions s
    ON r.program_id = s.program_id::UUID AND r.idempotency_key = s.idempotency_key;

-- name: delete_redemptions
DELETE FROM redemptions USING stage_redemptions s
WHERE redemptions.program_id = s.program_id::UUID AND redemptions.idempotency_key = s.idempotency_key;

-- name: insert_redemptions
-- A new redemption's entry is its operation's one entry (part 0: 'op', index 0, as the entries'
-- ids are named above). (No word here may begin with the stages' prefix: the writer runs a
-- statement only when every stage its text names is given.)
INSERT INTO redemptions BY NAME
SELECT COALESCE(k.id, n.id) AS id, s.program_id::UUID AS program_id,
       s.idempotency_key, participant_id::UUID AS participant_id, reward_id::UUID AS reward_id,
       asset_id::UUID AS asset_id, quantity, unit_cost, amount, reversed_amount, reversed_quantity, status,
       lots_taken::JSON AS lots_taken, created_at, $batch_id AS batch_id, target_type,
       target_entity_id::UUID AS target_entity_id,
       COALESCE(k.journal_entry_id, name_uuid('entry:' || n.id || ':op:0')) AS journal_entry_id
FROM stage_redemptions s
CROSS JOIN LATERAL (SELECT name_uuid('operation:' || s.program_id || ':' || s.idempotency_key) AS id) n
LEFT JOIN kept_redemptions k ON k.program_id = s.program_id::UUID AND k.idempotency_key = s.idempotency_key;

-- name: upsert_budget_consumption
INSERT INTO budget_consumption SELECT rule_id::UUID, budget_index, asset_id::UUID, period, consumed FROM stage_budgets
ON CONFLICT DO UPDATE SET consumed = EXCLUDED.consumed;

-- name: insert_catalog_tiers
INSERT OR REPLACE INTO tiers SELECT id::UUID, program_id::UUID, key, name, definition::JSON, lifecycle_since FROM stage_tiers;

-- name: delete_catalog_tier_levels
DELETE FROM tier_levels WHERE tier_id IN (SELECT id::UUID FROM stage_tiers);

-- name: insert_catalog_tier_levels
INSERT INTO tier_levels SELECT tier_id::UUID, key, name, rank, benefits::JSON FROM stage_tier_levels;

-- name: delete_participant_tiers
DELETE FROM participant_tiers USING stage_state_entities s
WHERE s.entity_type = 'PARTICIPANT' AND participant_tiers.participant_id = s.entity_id::UUID;

-- name: insert_participant_tiers
INSERT INTO participant_tiers (participant_id, tier_id, level, achieved_at, reviewed_at, batch_id, expires_at)
SELECT participant_id::UUID, tier_id::UUID, level, achieved_at, reviewed_at, $batch_id, expires_at
FROM stage_participant_tiers;

-- name: insert_tier_history
INSERT INTO tier_history
SELECT seq, program_id::UUID, tier_id::UUID, tier_key, participant_id::UUID, from_level, to_level, reason,
       CASE source_kind WHEN 'event' THEN name_uuid(source_name) END,
       CASE source_kind WHEN 'operation' THEN name_uuid(source_name) END,
       effective_at, $batch_id
FROM stage_tier_history;

-- name: delete_scheduled_events
-- SYSTEM events this batch (or chunk) processed that were waiting from an earlier one.
DELETE FROM scheduled_events USING stage_scheduled_done s
WHERE scheduled_events.program_id = s.program_id::UUID AND scheduled_events.idempotency_key = s.idempotency_key;

-- name: insert_scheduled_events
INSERT INTO scheduled_events
SELECT program_id::UUID, idempotency_key, participant_id::UUID, event_timestamp, event_json::JSON, emit_seq, depth,
       from_broadcast, source, $batch_id
FROM stage_scheduled;
