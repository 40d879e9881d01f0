-- Reporting views over the ledger. Recreated at the start of every batch.

-- One row per entity and asset, buckets side by side, DECIMAL amounts.
CREATE OR REPLACE VIEW balances AS
SELECT
    b.entity_type,
    b.entity_id,
    CASE WHEN b.entity_type = 'PARTICIPANT' THEN b.entity_id END AS participant_id,
    p.external_id,
    b.asset_id,
    a.symbol AS asset_symbol,
    SUM(b.amount) FILTER (WHERE b.bucket = 'AVAILABLE') AS available,
    SUM(b.amount) FILTER (WHERE b.bucket = 'HELD')      AS held,
    SUM(b.amount) FILTER (WHERE b.bucket = 'DEFERRED')  AS deferred
FROM (
    SELECT * FROM account_balances
    UNION ALL  -- every account shows all three buckets, zeros included
    SELECT DISTINCT entity_type, entity_id, asset_id, bk.bucket, 0::DECIMAL(38, 18)
    FROM account_balances, (VALUES ('AVAILABLE'), ('HELD'), ('DEFERRED')) bk(bucket)
) b
JOIN assets a ON a.id = b.asset_id
LEFT JOIN participants p ON p.id = b.entity_id AND b.entity_type = 'PARTICIPANT'
GROUP BY ALL;

-- Per program and asset: what was issued, taken back, and what participants hold now.
-- Identity: total_issued - total_redeemed - total_expired - total_forfeited = current_balance.
CREATE OR REPLACE VIEW ledger_summary AS
WITH participant_postings AS (
    SELECT j.program_id, j.action_type, p.asset_id, p.entity_id, p.amount
    FROM postings p JOIN journal_entries j ON j.id = p.journal_entry_id
    WHERE p.entity_type = 'PARTICIPANT'
)
SELECT
    pr.key AS program_key,
    a.symbol AS asset_symbol,
    COALESCE(SUM(amount) FILTER (WHERE action_type IN ('CREDIT', 'ADJUSTMENT', 'TRANSFER') AND amount > 0), 0) AS total_issued,
    COALESCE(-SUM(amount) FILTER (WHERE action_type IN ('DEBIT', 'REDEMPTION', 'ADJUSTMENT', 'TRANSFER') AND amount < 0), 0)
      - COALESCE(SUM(amount) FILTER (WHERE action_type = 'REDEMPTION_REVERSAL'), 0) AS total_redeemed,
    COALESCE(-SUM(amount) FILTER (WHERE action_type = 'EXPIRATION'), 0) AS total_expired,
    COALESCE(-SUM(amount) FILTER (WHERE action_type = 'FORFEIT'), 0) AS total_forfeited,
    COALESCE(SUM(amount), 0) AS current_balance,
    COUNT(DISTINCT entity_id) AS participant_count
FROM participant_postings pp
JOIN programs pr ON pr.id = pp.program_id
JOIN assets a ON a.id = pp.asset_id
GROUP BY ALL
ORDER BY program_key, asset_symbol;

CREATE OR REPLACE VIEW participant_state AS
SELECT s.entity_id AS participant_id, p.external_id, s.kind, s.key, s.text_value, s.number_value,
       s.reset_after_us, s.last_reset_at
FROM entity_state s LEFT JOIN participants p ON p.id = s.entity_id
WHERE s.entity_type = 'PARTICIPANT';

CREATE OR REPLACE VIEW program_state AS
SELECT s.entity_id AS program_id, pr.key AS program_key, s.kind, s.key, s.text_value, s.number_value,
       s.reset_after_us, s.last_reset_at
FROM entity_state s LEFT JOIN programs pr ON pr.id = s.entity_id
WHERE s.entity_type = 'PROGRAM';
