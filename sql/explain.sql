-- Queries behind `perkflow explain`. Named sections, as in write_batch.sql.

-- name: event
SELECT e.id::VARCHAR, p.key, e.idempotency_key, e.external_id, e.event_timestamp, e.event_data::VARCHAR,
       e.status, e.error_code, e.error_message, e.source
FROM events e JOIN programs p ON p.id = e.program_id
WHERE e.id::VARCHAR = $ref OR e.idempotency_key = $ref
ORDER BY e.arrival_seq;

-- name: evaluations
SELECT r.key, ev.outcome || COALESCE(': ' || ev.message, '')
FROM rule_evaluations ev JOIN rules r ON r.id = ev.rule_id
WHERE ev.event_id::VARCHAR = $id;

-- name: versions
-- Per rule of the event's program, the version that evaluated the event and its condition: the
-- one its recorded outcome names, else (no outcome is recorded for a rule that did not match)
-- the latest version the ledger held by the event's batch. None for a rule added after it. With
-- that version's order and the rule's status now: a rule no longer in the files is shown from them.
SELECT r.key, v.version, v.definition->>'$.condition', (v.definition->>'$.order')::BIGINT, r.status
FROM events e JOIN rules r ON r.program_id = e.program_id JOIN rule_versions v ON v.rule_id = r.id
WHERE e.id::VARCHAR = $id AND v.version = COALESCE(
    (SELECT x.rule_version FROM rule_evaluations x WHERE x.event_id = e.id AND x.rule_id = r.id),
    (SELECT arg_max(w.version, w.first_batch_id) FROM rule_versions w
     WHERE w.rule_id = r.id AND w.first_batch_id <= e.batch_id));

-- name: entries
SELECT r.key, j.action_type, p.amount::VARCHAR
FROM journal_entries j
JOIN rules r ON r.id = j.rule_id
JOIN postings p ON p.journal_entry_id = j.id AND p.entity_type = 'PARTICIPANT'
WHERE j.event_id::VARCHAR = $id
ORDER BY j.seq;

-- name: tier_changes
SELECT h.tier_key, p.external_id, h.from_level, h.to_level, h.reason
FROM tier_history h JOIN participants p ON p.id = h.participant_id
WHERE h.event_id::VARCHAR = $id
ORDER BY h.seq;

-- name: emitted_by
-- The event that emitted a SYSTEM event (its `source` is 'system:' || that event's id).
SELECT e.idempotency_key FROM events e WHERE 'system:' || e.id::VARCHAR = $source;

-- name: emitted
-- The SYSTEM events an event emitted: processed (events) or still waiting (scheduled_events).
SELECT idempotency_key, event_data->>'type', event_timestamp, status FROM events WHERE source = $source
UNION ALL
SELECT idempotency_key, event_data->>'type', event_timestamp, 'SCHEDULED' FROM scheduled_events WHERE source = $source
ORDER BY 3, 1;
