-- Read-only queries the engine runs before writing a batch. Named sections, as in write_batch.sql.

-- name: next_batch_id
SELECT COALESCE(MAX(id), 0) + 1 FROM batches;

-- name: catalog_fingerprint
SELECT fingerprint FROM catalog_fingerprint;

-- name: next_seq
-- The ledger order of the next entry: a running count over the ledger, so that cutting a stream
-- into batches gives each entry the seq, and so the hash, the whole stream gives it. (Ledgers
-- written before session 10 numbered entries batch << 32 | n: new entries continue after them.)
SELECT COALESCE(MAX(seq) + 1, 0) FROM journal_entries;

-- name: last_root
-- The root hash the next batch chains to ('' before the first batch).
SELECT COALESCE((SELECT root_hash FROM batches ORDER BY id DESC LIMIT 1), '');

-- name: committed_batch
-- The first batch that booked these input bytes: as a whole batch, or as one input of a range.
SELECT id, rows_read, duplicates, rejected FROM batches WHERE input_fingerprint = $fingerprint
UNION ALL
SELECT batch_id, rows_read, rows_read - rejected, rejected FROM batch_inputs WHERE input_fingerprint = $fingerprint
ORDER BY 1 LIMIT 1;

-- name: known_events
-- Stored events and operations whose (kind, program, idempotency key) appear in this batch, with
-- what idempotency compares.
SELECT k.kind, k.program_id, e.idempotency_key, NULL::VARCHAR AS operation, e.external_id, e.participant_ref,
       e.recipient_external_id, e.recipient_ref, e.event_timestamp, e.event_data::VARCHAR AS event_json,
       e.participant_id::VARCHAR AS participant_uuid, e.recipient_id::VARCHAR AS recipient_uuid
FROM stage_keys k
JOIN events e ON k.kind = 'event' AND e.program_id = k.program_id::UUID AND e.idempotency_key = k.idempotency_key
UNION ALL
SELECT k.kind, k.program_id, o.idempotency_key, o.operation, o.external_id, o.participant_ref,
       NULL, NULL, o.timestamp, o.params::VARCHAR, o.participant_id::VARCHAR, NULL
FROM stage_keys k
JOIN operations o ON k.kind = 'operation' AND o.program_id = k.program_id::UUID AND o.idempotency_key = k.idempotency_key;

-- name: known_participants
SELECT p.id::VARCHAR AS id, p.external_id, p.status
FROM participants p
WHERE p.external_id IN (SELECT external_id FROM stage_people) OR p.id::VARCHAR IN (SELECT id FROM stage_people);

-- name: entity_states
SELECT entity_type, entity_id::VARCHAR AS entity_id, kind, key, text_value, number_value, reset_after_us, last_reset_at
FROM entity_state WHERE entity_id IN (SELECT TRY_CAST(id AS UUID) FROM stage_entities);

-- name: entity_balances
SELECT entity_type, entity_id::VARCHAR AS entity_id, asset_id::VARCHAR AS asset_id, bucket, amount
FROM account_balances
WHERE entity_id IN (SELECT TRY_CAST(id AS UUID) FROM stage_entities);

-- name: opening_balances
-- The AVAILABLE balances of the batch's participants, for settling its debits set-wise.
SELECT entity_id::VARCHAR AS entity_id, asset_id::VARCHAR AS asset_id, amount
FROM account_balances
WHERE entity_type = 'PARTICIPANT' AND bucket = 'AVAILABLE'
  AND entity_id IN (SELECT TRY_CAST(id AS UUID) FROM stage_entities);

-- name: participants_by_id
SELECT id::VARCHAR AS id, external_id, status, created_at FROM participants WHERE id IN (SELECT TRY_CAST(id AS UUID) FROM stage_entities);

-- name: participant_by_external_id
SELECT id::VARCHAR AS id, external_id, status, created_at FROM participants WHERE external_id = $external_id;

-- name: due_counter_entities
-- Entities (participants, programs) with a counter whose reset_after is due by $as_of.
SELECT DISTINCT entity_id::VARCHAR FROM entity_state
WHERE kind = 'COUNTER' AND reset_after_us IS NOT NULL AND last_reset_at + to_microseconds(reset_after_us) <= $as_of
ORDER BY 1;

-- name: any_counter_due
-- Whether any entity has a counter whose reset_after is due by $until (else a batch ending at
-- $until has no resets to look for).
SELECT EXISTS (SELECT 1 FROM entity_state
               WHERE kind = 'COUNTER' AND reset_after_us IS NOT NULL
                 AND last_reset_at + to_microseconds(reset_after_us) <= $until);

-- name: due_counter_touches
-- Of stage_touches (id: an entity a batch's events touch, now: the latest instant one touches it),
-- the entities with a counter whose reset_after is due by then, with that instant.
SELECT DISTINCT t.id, t.now
FROM stage_touches t JOIN entity_state s ON s.entity_id = TRY_CAST(t.id AS UUID)
WHERE s.kind = 'COUNTER' AND s.reset_after_us IS NOT NULL
  AND s.last_reset_at + to_microseconds(s.reset_after_us) <= t.now
ORDER BY 1;

-- name: budget_consumption
SELECT rule_id::VARCHAR AS rule_id, budget_index, asset_id::VARCHAR AS asset_id, period, consumed FROM budget_consumption;

-- name: has_legacy_budget_usage
SELECT count(*) FROM information_schema.tables WHERE table_name = 'budget_usage' AND table_schema = current_schema();

-- name: legacy_budget_usage
SELECT rule_id::VARCHAR AS rule_id, asset_id::VARCHAR AS asset_id, period, consumed FROM budget_usage;

-- name: operation_status
-- With the journal entries it wrote, in ledger order (Scrip's endpoints answer their ids), and the
-- redemption it made (redeem, redeem_item: its id is the operation's; reversals name it by it).
SELECT o.status, o.error_code, o.error_message,
       list(j.id::VARCHAR ORDER BY j.seq) FILTER (WHERE j.id IS NOT NULL) AS journal_entry_ids,
       r.id::VARCHAR AS redemption_id
FROM operations o LEFT JOIN journal_entries j ON j.operation_id = o.id LEFT JOIN redemptions r ON r.id = o.id
WHERE o.program_id = (SELECT id FROM programs WHERE key = $program OR id::VARCHAR = lower($program))
  AND o.idempotency_key = $key
GROUP BY ALL;

-- name: operation_timestamp
-- The instant a stored operation was given, so that `perkflow op` without --timestamp repeats it.
-- `$program` is what --program says: the program's key or id (any case), as in a row's program_id.
SELECT timestamp FROM operations
WHERE program_id = (SELECT id FROM programs WHERE key = $program OR id::VARCHAR = lower($program))
  AND idempotency_key = $key;

-- name: rejected_in_batch
SELECT reason, message FROM rejected_rows WHERE batch_id = $batch_id ORDER BY row_number;

-- name: entity_lots
-- Lots that still hold value, of the entities a batch names.
SELECT id::VARCHAR AS id, entity_type, entity_id::VARCHAR AS entity_id, asset_id::VARCHAR AS asset_id, amount,
       remaining, status, created_at, expires_at, matures_at, program_id::VARCHAR AS program_id, reference_id,
       provisional
FROM lots
WHERE entity_id IN (SELECT TRY_CAST(id AS UUID) FROM stage_entities) AND status IN ('AVAILABLE', 'DEFERRED', 'HELD');

-- name: lots_by_id
-- Lots named by id, whatever their status: the lots a redemption took value from, for its reversal
-- (entity_lots loads only lots that still hold value; a lot the redemption consumed whole is CONSUMED).
SELECT id::VARCHAR AS id, entity_type, entity_id::VARCHAR AS entity_id, asset_id::VARCHAR AS asset_id, amount,
       remaining, status, created_at, expires_at, matures_at, program_id::VARCHAR AS program_id, reference_id,
       provisional
FROM lots
WHERE id IN (SELECT TRY_CAST(id AS UUID) FROM stage_entities);

-- name: entity_due_lots
-- The lots of the entities a batch names with a maturity or expiry due at or before $until (the
-- batch's last instant): a lot with nothing due by then changes nothing within the batch.
SELECT id::VARCHAR AS id, entity_type, entity_id::VARCHAR AS entity_id, asset_id::VARCHAR AS asset_id, amount,
       remaining, status, created_at, expires_at, matures_at, program_id::VARCHAR AS program_id, reference_id,
       provisional
FROM lots
WHERE entity_id IN (SELECT TRY_CAST(id AS UUID) FROM stage_entities)
  AND status IN ('AVAILABLE', 'DEFERRED', 'HELD') AND remaining > 0
  AND (expires_at <= $until OR (status = 'DEFERRED' AND matures_at <= $until));

-- name: due_lots
-- Lots with a maturity or expiry due at or before $as_of (held lots expire too).
SELECT id::VARCHAR AS id, entity_type, entity_id::VARCHAR AS entity_id, asset_id::VARCHAR AS asset_id, amount,
       remaining, status, created_at, expires_at, matures_at, program_id::VARCHAR AS program_id, reference_id,
       provisional
FROM lots
WHERE status IN ('AVAILABLE', 'DEFERRED', 'HELD') AND remaining > 0
  AND (expires_at <= $as_of OR (status = 'DEFERRED' AND matures_at <= $as_of));

-- name: reward_usage
SELECT reward_id::VARCHAR AS reward_id, participant_id, redeemed_count FROM reward_usage;

-- name: redemption
SELECT idempotency_key, participant_id::VARCHAR AS participant_id, reward_id::VARCHAR AS reward_id,
       asset_id::VARCHAR AS asset_id, quantity, unit_cost, amount, reversed_amount, reversed_quantity, status,
       lots_taken::VARCHAR AS lots_taken, created_at, target_type, target_entity_id::VARCHAR AS target_entity_id
FROM redemptions WHERE program_id::VARCHAR = $program_id AND idempotency_key = $key;

-- name: redemption_key
-- The idempotency key of the redemption with id $id (a reversal may name it by id, as Scrip does).
SELECT idempotency_key FROM redemptions WHERE program_id::VARCHAR = $program_id AND id = TRY_CAST($id AS UUID);

-- name: entity_tiers
SELECT participant_id::VARCHAR AS participant_id, tier_id::VARCHAR AS tier_id, level, achieved_at, reviewed_at,
       expires_at
FROM participant_tiers WHERE participant_id IN (SELECT TRY_CAST(id AS UUID) FROM stage_entities);

-- name: tier_lifecycles
-- Each tier's lifecycle as last stored, and since when (engine/tiers.py attach_since), for the
-- tiers still in their program's file as last stored: one taken out and put back starts anew.
SELECT t.id::VARCHAR AS id, json_extract(t.definition, '$.lifecycle')::VARCHAR AS lifecycle, t.lifecycle_since
FROM tiers t JOIN program_documents d ON d.program_id = t.program_id
WHERE list_contains(json_extract_string(d.document, '$.tiers[*].key'), t.key);

-- name: catalog_clock
-- The ledger's clock before a batch: the latest instant processed so far (events, operations,
-- maintenance planning); null for a ledger with none yet. A catalog entry that starts with a
-- batch (an automation, a tier lifecycle) starts then, as insert_catalog_automations reckons.
SELECT MAX(t) FROM (SELECT MAX(event_timestamp) AS t FROM events UNION ALL SELECT MAX(timestamp) FROM operations
                    UNION ALL SELECT MAX(planned_through) FROM automations);

-- name: timed_tiers
-- Tier types whose levels change with time by $as_of, as stored by the last run (maintenance
-- runs without program files): those with a lifecycle, and those with a tier expiry due. Only
-- tiers still in their program's file as last stored (program_documents): a tier taken out of
-- the file no longer reviews levels nor rolls counters over.
SELECT t.id::VARCHAR AS id, p.key AS program_key, t.definition::VARCHAR AS definition, t.lifecycle_since
FROM tiers t JOIN programs p ON p.id = t.program_id JOIN program_documents d ON d.program_id = t.program_id
WHERE list_contains(json_extract_string(d.document, '$.tiers[*].key'), t.key)
  AND (json_exists(t.definition, '$.lifecycle')
       OR t.id IN (SELECT tier_id FROM participant_tiers WHERE expires_at <= $as_of))
ORDER BY p.key, t.key;

-- name: expiring_holders
-- Participants holding a level whose expiry (set_tier's expires_at) is due by $as_of.
SELECT DISTINCT participant_id::VARCHAR AS id FROM participant_tiers WHERE expires_at <= $as_of ORDER BY id;

-- name: lifecycle_holders
-- Participants holding a level in one of the tiers of stage_tier_ids.
SELECT DISTINCT participant_id::VARCHAR AS id FROM participant_tiers
WHERE tier_id::VARCHAR IN (SELECT id FROM stage_tier_ids) ORDER BY id;

-- name: counter_holders
-- Participants holding a counter named in stage_counter_keys (tier counter rollover; the
-- candidates of a THRESHOLD automation whose test a counter at 0 fails).
SELECT DISTINCT entity_id::VARCHAR AS id FROM entity_state
WHERE entity_type = 'PARTICIPANT' AND kind = 'COUNTER' AND key IN (SELECT key FROM stage_counter_keys) ORDER BY id;

-- name: lot_debts
-- What the participants a batch names owe on LOT assets (docs/decisions.md, "Overdrafts on LOT
-- assets"; engine.lots.owed): how far each AVAILABLE balance is below what its AVAILABLE lots
-- hold, where it is (an overdraft; the value arriving there repays it first).
WITH b AS (
    SELECT b.entity_id, b.asset_id, b.amount
    FROM account_balances b JOIN assets a ON a.id = b.asset_id AND a.inventory_mode = 'LOT'
    WHERE b.entity_type = 'PARTICIPANT' AND b.bucket = 'AVAILABLE'
      AND b.entity_id IN (SELECT TRY_CAST(id AS UUID) FROM stage_entities)
), l AS (
    SELECT entity_id, asset_id, SUM(remaining) AS in_lots
    FROM lots
    WHERE entity_type = 'PARTICIPANT' AND status = 'AVAILABLE'
      AND entity_id IN (SELECT TRY_CAST(id AS UUID) FROM stage_entities)
    GROUP BY ALL
)
SELECT b.entity_id::VARCHAR AS entity_id, b.asset_id::VARCHAR AS asset_id, COALESCE(l.in_lots, 0) - b.amount AS owed
FROM b LEFT JOIN l ON l.entity_id = b.entity_id AND l.asset_id = b.asset_id
WHERE COALESCE(l.in_lots, 0) - b.amount > 0;

-- name: group_members
-- A group's memberships, current and former (engine/state.py Membership fields after the id).
SELECT participant_id::VARCHAR, external_id, role, status, joined_at, left_at
FROM group_members WHERE group_id = $group_id::UUID ORDER BY participant_id;

-- name: stored_group_definitions
SELECT key, definition::VARCHAR FROM groups;

-- name: stores_payload_types
-- Whether the ledger stores payload types (engine/io/payload_types.py): one made before them has
-- none, and a read-only reader (replay, explain) reads its payloads with JSON's mapping.
SELECT COUNT(*) > 0 FROM duckdb_tables() WHERE table_name = 'payload_types';

-- name: payload_type
SELECT t.arrow_schema FROM events e JOIN payload_types t ON t.key = e.event_data_type WHERE e.id::VARCHAR = $id;

-- name: program_documents
-- Every program file a run stored, for `perkflow maintain` to compile again.
SELECT key, document::VARCHAR FROM program_documents ORDER BY key;

-- name: program_documents_with_sources
-- The same, each with the file it was read from (programs.source_file), for `perkflow op`.
SELECT d.key, d.document::VARCHAR, p.source_file FROM program_documents d
LEFT JOIN programs p ON p.id = d.program_id ORDER BY d.key;

-- name: automation_marks
SELECT id::VARCHAR AS id, introduced_at, planned_through, status FROM automations;

-- name: program_first_instants
-- The first instant of each program's stream (events and operations, SYSTEM events included).
SELECT program_id::VARCHAR AS program_id, MIN(t) AS first_at FROM (
    SELECT program_id, MIN(event_timestamp) AS t FROM events GROUP BY ALL
    UNION ALL SELECT program_id, MIN(timestamp) FROM operations GROUP BY ALL
) GROUP BY ALL;

-- name: enrolled_participants
-- Participants enrolled in the program at $instant, with their status now, in id order: the
-- fan-out of a scope `participants` automation (those ACTIVE at $instant: engine/automations.py).
SELECT p.id::VARCHAR AS id, p.external_id, p.status
FROM enrollments e JOIN participants p ON p.id = e.participant_id
WHERE e.program_id = $program_id::UUID AND e.enrolled_at <= $instant
ORDER BY p.id;

-- name: participant_by_ref
-- One participant named by id (in any case, as a UUID) or by external id (a one_time
-- automation's participant_id), existing at the firing $instant (created_at is the stream instant
-- of the row that created it: one created later, by rows maintenance runs after, did not exist at
-- the firing).
SELECT id::VARCHAR AS id, external_id FROM participants
WHERE (id::VARCHAR = lower($ref) OR external_id = $ref) AND created_at <= $instant
ORDER BY id::VARCHAR = lower($ref) DESC LIMIT 1;

-- name: enrolled_attribute
-- Participants enrolled in the program, when, and their attribute $attribute (null when they
-- have none): participant_state automations (each firing keeps those ACTIVE at its instant).
SELECT p.id::VARCHAR AS id, e.enrolled_at, s.text_value
FROM enrollments e JOIN participants p ON p.id = e.participant_id
LEFT JOIN entity_state s ON s.entity_type = 'PARTICIPANT' AND s.entity_id = p.id AND s.kind = 'ATTRIBUTE'
    AND s.key = $attribute
WHERE e.program_id = $program_id::UUID
ORDER BY p.id;

-- name: automation_last_firings
-- Each participant's latest firing of one automation (its events' keys start with $prefix,
-- `system:automation:<key>:`): a THRESHOLD automation fires once per counter period.
SELECT participant_id::VARCHAR AS participant_id, max(event_timestamp) AS fired_at
FROM events
WHERE program_id = $program_id::UUID AND starts_with(idempotency_key, $prefix) AND participant_id IS NOT NULL
GROUP BY participant_id;

-- name: program_enrollments
-- Every participant enrolled in a program, when, and its status now: who a BROADCAST at an
-- instant reaches (enrolled by then and ACTIVE then; engine/kernel.py Emitting).
SELECT e.participant_id::VARCHAR AS participant_id, e.enrolled_at, p.status
FROM enrollments e JOIN participants p ON p.id = e.participant_id
WHERE e.program_id = $program_id::UUID;

-- name: status_changes
-- Every participant status change (a COMPLETED set_participant_status, or upsert_participant
-- with a status): (participant, its instant, the status set), in the order they were processed
-- (batch, then stream order). engine/state.py `status_at` reads a status at an instant from it.
-- With $after, only the participants with a change dated after it (the others' status at any
-- instant from $after on is their status now).
WITH changes AS (
    SELECT participant_id, timestamp, params->>'status' AS status, batch_id, arrival_seq
    FROM operations
    WHERE status = 'COMPLETED' AND operation IN ('set_participant_status', 'upsert_participant')
      AND participant_id IS NOT NULL AND params->>'status' IS NOT NULL
)
SELECT participant_id::VARCHAR AS participant_id, timestamp, status FROM changes
WHERE $after IS NULL OR participant_id IN (SELECT participant_id FROM changes WHERE timestamp > $after)
ORDER BY batch_id, timestamp, arrival_seq;

-- name: due_scheduled_events
-- SYSTEM events waiting in scheduled_events that are due by $reach, in stream order.
SELECT program_id::VARCHAR AS program_id, idempotency_key, participant_id::VARCHAR AS participant_id,
       event_timestamp, event_data::VARCHAR AS event_json, emit_seq, depth, from_broadcast, source
FROM scheduled_events WHERE event_timestamp <= $reach
ORDER BY event_timestamp, emit_seq;

-- name: waiting_scheduled_events
SELECT count(*) FROM scheduled_events;

-- name: ledger_clock
-- The latest instant of a row the ledger has processed (events, SYSTEM events included, and
-- operations), or NULL: a run's SYSTEM events due by it are behind the ledger's clock and are
-- processed after the run's rows (engine/run.py run_batch), as one batch of the whole stream would.
SELECT greatest((SELECT max(event_timestamp) FROM events), (SELECT max("timestamp") FROM operations));

-- name: due_scheduled_count
SELECT count(*) FROM scheduled_events WHERE event_timestamp <= $reach;

-- name: largest_balance
-- The largest stored balance, in absolute value: with what a chunk moves, whether any balance
-- could reach 10^20 (engine/balance_range.py).
SELECT COALESCE(max(abs(amount)), 0) FROM account_balances;

-- name: account_openings
-- The stored balances of the accounts a chunk's set-wise outcome moves (engine/balance_range.py).
SELECT b.entity_type, b.entity_id::VARCHAR AS entity_id, b.asset_id::VARCHAR AS asset_id, b.bucket, b.amount
FROM account_balances b
JOIN stage_accounts s
  ON b.entity_type = s.entity_type AND b.entity_id = TRY_CAST(s.entity_id AS UUID)
 AND b.asset_id = TRY_CAST(s.asset_id AS UUID) AND b.bucket = s.bucket;

-- name: stored_asset_kinds
-- What an asset's balances were made under (engine/catalog/ledger_checks.py): Scrip's fields that
-- "cannot be changed later" (scrip-reference.md 3).
SELECT symbol, inventory_mode, issuance_policy, scale FROM assets;
