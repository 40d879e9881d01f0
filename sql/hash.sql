-- Canonical text of a posting and of an entry, hashed into journal_entries.entry_hash:
-- sha256(entry_text || '#' || its postings' posting_text, ';'-joined in posting id order).
-- The writer (sql/write_batch.sql) and `perkflow verify` (sql/verify.sql) both use these macros,
-- so there is one definition of what is hashed. They are TEMP macros, created by every connection
-- (engine/ledger/db.py) and never stored in the ledger file: verify recomputes hashes with this
-- perkflow's definition, not with one the checked file could have replaced.
--
-- `version` is the hash_version of the entry's batch (batches.hash_version):
--   1  ledgers written before session 13: the entry's description and the posting's program were
--      not covered;
--   2  sessions 13-16: they are (semantics.md 8, "the entry's canonical content"); `seq` too;
--   3  hash_version(), what the writer writes now: as 2 without the entry's `seq`. The seq is the
--      entry's place in the ledger, which depends on how rows were grouped into batches: one
--      participant shard's entries come together (semantics.md 1.5: sharding participants gives
--      the same ledger, so the same entry hashes). The place stays tamper-evident through the
--      batch root, which covers `seq:hash` of every entry of a version-3 batch in seq order
--      (engine/ledger/root.py, sql/write_batch.sql chunk_hashes, sql/verify.sql).
-- concat_ws skips the NULLs, so a version-1 text is exactly what it was; a version-2 text always
-- has one more field than a version-1 one (an empty description is ''); a version-3 text has
-- the program id where versions 1 and 2 have the seq (a UUID is never a number), so no text of
-- one version equals one of another, and a batch's version changed by hand fails verify.

CREATE OR REPLACE TEMP MACRO hash_version() AS 3;

CREATE OR REPLACE TEMP MACRO posting_text(id, entity_type, entity_id, asset_id, bucket, amount, program_id, version) AS
    concat_ws('|', id::VARCHAR, entity_type, entity_id::VARCHAR, asset_id::VARCHAR, bucket,
              amount::DECIMAL(38, 18)::VARCHAR, CASE WHEN version >= 2 THEN program_id::VARCHAR END);

CREATE OR REPLACE TEMP MACRO entry_text(id, seq, program_id, event_id, operation_id, rule_id, rule_version, action_index,
                                        action_type, reference_id, effective_at, allow_negative, description, version) AS
    concat_ws('|', id::VARCHAR, CASE WHEN version < 3 THEN seq::VARCHAR END, program_id::VARCHAR, coalesce(event_id::VARCHAR, ''),
              coalesce(operation_id::VARCHAR, ''), coalesce(rule_id::VARCHAR, ''), coalesce(rule_version, ''),
              coalesce(action_index::VARCHAR, ''), action_type, coalesce(reference_id, ''),
              epoch_us(effective_at)::VARCHAR, allow_negative::VARCHAR,
              CASE WHEN version >= 2 THEN coalesce(description, '') END);
