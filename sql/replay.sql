-- `perkflow replay` (engine/replay.py): the inputs a ledger stored, read back as the input files
-- they came from, in pure timestamp order (arrival order among equal timestamps). SYSTEM events
-- (keys starting with system:) are not inputs: the replay's own rules emit them again.
-- Rejected rows never entered the stream and are not replayed. `_arrival` (batch << 32 | row,
-- one sequence for events and operations) places the two kinds among each other.

-- name: events
SELECT p.key AS program_id, e.idempotency_key, e.external_id, e.participant_ref AS participant_id,
       e.recipient_external_id, e.recipient_ref AS recipient_id, e.event_timestamp,
       e.event_data::VARCHAR AS event_data, e.arrival_seq AS _arrival
FROM events e JOIN programs p ON p.id = e.program_id
WHERE NOT starts_with(e.idempotency_key, 'system:')
ORDER BY e.event_timestamp, e.arrival_seq;

-- name: payload_types
-- The type each event's payload was read with, where the run stored one (engine/io/payload_types.py).
SELECT p.key AS program_id, e.idempotency_key, t.arrow_schema AS event_data_type
FROM events e JOIN programs p ON p.id = e.program_id JOIN payload_types t ON t.key = e.event_data_type
WHERE NOT starts_with(e.idempotency_key, 'system:');

-- name: operations
SELECT o.operation, p.key AS program_id, o.idempotency_key, o.external_id, o.participant_ref AS participant_id,
       o.timestamp, o.params::VARCHAR AS params, o.arrival_seq AS _arrival
FROM operations o JOIN programs p ON p.id = o.program_id
ORDER BY o.timestamp, o.arrival_seq;
