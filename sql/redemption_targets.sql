-- The group a LEDGER_ENTITY redemption credited, run by engine/ledger/writer.py right after
-- write_batch.sql's insert_redemptions (which writes every other column of the batch's changed
-- redemptions; its column list does not carry this one). Kept so that a reversal in a later batch
-- takes the value back from the group captured at the redemption, whatever the program says then.

-- name: set_redemption_targets
UPDATE redemptions SET target_entity_id = s.target_entity_id::UUID
FROM stage_redemptions s
WHERE s.target_entity_id IS NOT NULL
  AND redemptions.program_id = s.program_id::UUID AND redemptions.idempotency_key = s.idempotency_key;
