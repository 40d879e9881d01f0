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

-- Value flows: what each journal entry did to holders' accounts (participants and groups: the
-- entities that hold value of the program's members), each amount in exactly one category, signed,
-- so that for any set of entries
--     SUM(issued) - SUM(redeemed) - SUM(expired) - SUM(forfeited) = SUM(net_amount)
--                                    = sum of their PARTICIPANT and GROUP postings   (by construction).
-- Value moved between holders (a transfer to a group) nets to 0: INTERNAL. Program wallets and
-- system accounts are not holders: a redemption is REDEEMED whichever system account it posts to.
-- Classification (docs/reports.md):
--   EXPIRATION -> EXPIRED; FORFEIT -> FORFEITED (both count -amount);
--   CREDIT, VOID_HOLD -> ISSUED (+amount; a voided hold un-issues the held credit it cancels);
--   DEBIT, REDEMPTION, REDEMPTION_REVERSAL -> REDEEMED (-amount; a reversal gives back, so it lowers it),
--   but a REDEMPTION / REDEMPTION_REVERSAL posting to a GROUP (the LEDGER_ENTITY target: only
--   participants redeem) -> ISSUED (the value stays with a holder, so the group's side is issued);
--   any other type (ADJUSTMENT, TRANSFER, and HOLD/RELEASE/SETTLE/MATURITY/FUND/BURN, whose participant
--   net is 0 when well formed) by the sign of the entry's net per asset: > 0 ISSUED, < 0 REDEEMED,
--   0 INTERNAL (a transfer between participants nets to 0).
-- Rows: one per participant posting for the types classified by type (their category does not depend
-- on netting), one per entry and asset for the types classified by sign.
CREATE OR REPLACE MACRO flow_category(action_type, net_amount) AS
    CASE
        WHEN action_type = 'EXPIRATION' THEN 'EXPIRED'
        WHEN action_type = 'FORFEIT' THEN 'FORFEITED'
        WHEN action_type IN ('CREDIT', 'VOID_HOLD') THEN 'ISSUED'
        WHEN action_type IN ('DEBIT', 'REDEMPTION', 'REDEMPTION_REVERSAL') THEN 'REDEEMED'
        WHEN net_amount > 0 THEN 'ISSUED'
        WHEN net_amount < 0 THEN 'REDEEMED'
        ELSE 'INTERNAL'
    END;

-- Exact sums of DECIMAL(38, 18) amounts. A plain SUM overflows once its running total passes
-- ~1.7 * 10^20 (DuckDB adds the scaled values in one HUGEINT), which flows reach long before any
-- balance does: ten events that each credit then debit 9 * 10^19 issue 9 * 10^20 while every
-- balance stays below 10^20. So an amount is summed as its whole part and its fraction in units
-- of 10^-18, each a HUGEINT (whole parts overflow past 10^38, fractions past 10^20 rows); no
-- float anywhere. exact_amount gives such a sum back as DECIMAL(38, 18), NULL past what that
-- holds (|x| >= 10^20: docs/decisions.md "Flows past 10^20"); exact_zero says whether it is 0.
CREATE OR REPLACE MACRO whole_part(x) AS trunc(x)::HUGEINT;
CREATE OR REPLACE MACRO fraction_units(x) AS ((x - trunc(x)) * 1000000000000000000)::HUGEINT;
CREATE OR REPLACE MACRO exact_amount(whole, units) AS
    TRY_CAST(whole + units // 1000000000000000000 AS DECIMAL(38, 18))
    + (units % 1000000000000000000)::DECIMAL(38, 0) * 0.000000000000000001;
CREATE OR REPLACE MACRO exact_zero(whole, units) AS
    units % 1000000000000000000 = 0 AND whole + units // 1000000000000000000 = 0;

-- Part `part` of `parts` of the entries (by a hash of the entry id), for the reads that `perkflow
-- verify` splits (ledger_summary_part). `parts = 1` folds to true. UBIGINT: with BIGINT
-- parameters the modulus is a HUGEINT one, ~50x slower.
CREATE OR REPLACE MACRO in_part(entry_id, part, parts) AS
    parts = 1 OR hash(entry_id) % parts::UBIGINT = part::UBIGINT;

-- ledger_flows_part(part, parts): the rows of that part's entries; the view ledger_flows is its
-- one part. verify reads the summary in parts: at 10M events (29M entries) the whole of `pp`
-- outgrew DuckDB's memory cap.
CREATE OR REPLACE MACRO ledger_flows_part(part, parts) AS TABLE
WITH pp AS (
    SELECT j.id AS journal_entry_id, j.seq, j.program_id, j.action_type, j.effective_at, j.batch_id,
           p.asset_id, p.amount,
           j.action_type IN ('EXPIRATION', 'FORFEIT', 'CREDIT', 'VOID_HOLD', 'DEBIT', 'REDEMPTION',
                             'REDEMPTION_REVERSAL') AS by_type,
           -- the group a LEDGER_ENTITY redemption credits (only participants redeem): value it
           -- receives (or gives back on a reversal) is issued to it, the redeemer's side redeemed
           p.entity_type = 'GROUP' AND j.action_type IN ('REDEMPTION', 'REDEMPTION_REVERSAL') AS to_target
    FROM journal_entries j JOIN postings p ON p.journal_entry_id = j.id
    WHERE p.entity_type IN ('PARTICIPANT', 'GROUP')
      -- both sides filtered: the join's build side is the part's
      AND in_part(j.id, part, parts) AND in_part(p.journal_entry_id, part, parts)
), flows AS (
    SELECT journal_entry_id, seq, program_id, action_type, effective_at, batch_id, asset_id,
           amount AS net_amount, to_target
    FROM pp WHERE by_type
    UNION ALL
    SELECT journal_entry_id, seq, program_id, action_type, effective_at, batch_id, asset_id,
           SUM(amount) AS net_amount, FALSE AS to_target
    FROM pp WHERE NOT by_type
    GROUP BY journal_entry_id, seq, program_id, action_type, effective_at, batch_id, asset_id
), classified AS (
    SELECT * EXCLUDE (to_target),
           CASE WHEN to_target THEN 'ISSUED' ELSE flow_category(action_type, net_amount) END AS category
    FROM flows
)
SELECT journal_entry_id, seq, program_id, action_type, effective_at, batch_id, asset_id,
       net_amount::DECIMAL(38, 18) AS net_amount, category,
       CASE WHEN category = 'ISSUED'    THEN  net_amount ELSE 0 END::DECIMAL(38, 18) AS issued,
       CASE WHEN category = 'REDEEMED'  THEN -net_amount ELSE 0 END::DECIMAL(38, 18) AS redeemed,
       CASE WHEN category = 'EXPIRED'   THEN -net_amount ELSE 0 END::DECIMAL(38, 18) AS expired,
       CASE WHEN category = 'FORFEITED' THEN -net_amount ELSE 0 END::DECIMAL(38, 18) AS forfeited
FROM classified;

CREATE OR REPLACE VIEW ledger_flows AS SELECT * FROM ledger_flows_part(0, 1);

-- ledger_sums_part(from_ts, to_ts, part, parts): per program and asset, the exact sums (whole_part
-- `_w` and fraction_units `_f`) of the flows of one part of the entries (in_part) with from_ts <=
-- effective_at < to_ts (NULL = unbounded), and of those before from_ts (opening). The parts' sums
-- add up to the whole's; `perkflow verify` checks the summary identity on them (summary_identity).
CREATE OR REPLACE MACRO ledger_sums_part(from_ts, to_ts, part, parts) AS TABLE
WITH f AS (
    -- each flow's net amount split once: a flow is in one category, its total the net (ISSUED)
    -- or minus the net (the others)
    SELECT program_id, asset_id, category,
        (from_ts IS NULL OR effective_at >= from_ts::TIMESTAMPTZ) AS in_period,
        -- a reversal's value given back: netted into redeemed, and Scrip's other_adjustments_net
        (category = 'REDEEMED' AND action_type = 'REDEMPTION_REVERSAL') AS reversal,
        whole_part(net_amount) AS w, fraction_units(net_amount) AS u
    FROM ledger_flows_part(part, parts)
    WHERE to_ts IS NULL OR effective_at < to_ts::TIMESTAMPTZ
)
SELECT program_id, asset_id,
     SUM(w) FILTER (WHERE NOT in_period)                          AS opening_w,
     SUM(u) FILTER (WHERE NOT in_period)                          AS opening_f,
     SUM(w) FILTER (WHERE in_period AND category = 'ISSUED')      AS issued_w,
     SUM(u) FILTER (WHERE in_period AND category = 'ISSUED')      AS issued_f,
    -SUM(w) FILTER (WHERE in_period AND category = 'REDEEMED')    AS redeemed_w,
    -SUM(u) FILTER (WHERE in_period AND category = 'REDEEMED')    AS redeemed_f,
    -SUM(w) FILTER (WHERE in_period AND category = 'EXPIRED')     AS expired_w,
    -SUM(u) FILTER (WHERE in_period AND category = 'EXPIRED')     AS expired_f,
    -SUM(w) FILTER (WHERE in_period AND category = 'FORFEITED')   AS forfeited_w,
    -SUM(u) FILTER (WHERE in_period AND category = 'FORFEITED')   AS forfeited_f,
     SUM(w) FILTER (WHERE in_period AND reversal)                 AS reversed_w,
     SUM(u) FILTER (WHERE in_period AND reversal)                 AS reversed_f,
     SUM(w)                                                       AS closing_w,
     SUM(u)                                                       AS closing_f
FROM f GROUP BY program_id, asset_id;

-- ledger_summary_between(from_ts, to_ts), the period variant of ledger_summary: entries with
-- from_ts <= effective_at < to_ts (NULL = unbounded).
-- Per program and asset: opening_balance + total_issued - total_redeemed - total_expired
-- - total_forfeited = closing_balance. Rows for every program and asset with activity before to_ts.
-- participant_count: distinct participants with a posting in the period.
-- Timestamps given as naive text are read in the session time zone (perkflow sessions use UTC).
-- Every amount is exact; one past what DECIMAL(38, 18) holds (a total of flows past 10^20) is NULL.
-- ledger_summary_part(from_ts, to_ts, part, parts) is it over one part of the entries (in_part);
-- the parts' sums add up to the whole's (participant_count does not).
CREATE OR REPLACE MACRO ledger_summary_part(from_ts, to_ts, part, parts) AS TABLE
WITH period AS (
    -- a period that ends before it starts is the caller's mistake, not an empty period: its rows
    -- would pair an opening balance after the closing one (docs/decisions.md "Reports")
    SELECT CASE WHEN from_ts::TIMESTAMPTZ > to_ts::TIMESTAMPTZ
                THEN error('ledger_summary_between: to_ts ' || to_ts::TIMESTAMPTZ || ' is before from_ts '
                           || from_ts::TIMESTAMPTZ || ' (a period is from_ts <= effective_at < to_ts)') END AS invalid
), sums AS (
    SELECT * FROM ledger_sums_part(from_ts, to_ts, part, parts)
), people AS (
    SELECT j.program_id, p.asset_id, COUNT(DISTINCT p.entity_id) AS participant_count
    FROM postings p JOIN journal_entries j ON j.id = p.journal_entry_id
    WHERE p.entity_type = 'PARTICIPANT'
      AND in_part(j.id, part, parts) AND in_part(p.journal_entry_id, part, parts)
      AND (from_ts IS NULL OR j.effective_at >= from_ts::TIMESTAMPTZ)
      AND (to_ts IS NULL OR j.effective_at < to_ts::TIMESTAMPTZ)
    GROUP BY j.program_id, p.asset_id
)
SELECT
    pr.key AS program_key,
    a.symbol AS asset_symbol,
    from_ts::TIMESTAMPTZ AS from_ts,
    to_ts::TIMESTAMPTZ AS to_ts,
    exact_amount(COALESCE(s.opening_w, 0), COALESCE(s.opening_f, 0))     AS opening_balance,
    exact_amount(COALESCE(s.issued_w, 0), COALESCE(s.issued_f, 0))       AS total_issued,
    exact_amount(COALESCE(s.redeemed_w, 0), COALESCE(s.redeemed_f, 0))   AS total_redeemed,
    exact_amount(COALESCE(s.expired_w, 0), COALESCE(s.expired_f, 0))     AS total_expired,
    exact_amount(COALESCE(s.forfeited_w, 0), COALESCE(s.forfeited_f, 0)) AS total_forfeited,
    exact_amount(s.closing_w, s.closing_f)                               AS closing_balance,
    COALESCE(pp.participant_count, 0) AS participant_count,
    s.program_id,
    s.asset_id,
    -- Scrip's period-mode names (scrip-reference.md 19): period_redeemed is gross (reversals
    -- not netted), other_adjustments_net the value reversals gave back; opening_balance +
    -- period_issued - period_redeemed - period_expired - period_forfeited + other_adjustments_net
    -- = closing_balance (the three that are ours under another name refer to them)
    total_issued                                                         AS period_issued,
    exact_amount(COALESCE(s.redeemed_w, 0) + COALESCE(s.reversed_w, 0),
                 COALESCE(s.redeemed_f, 0) + COALESCE(s.reversed_f, 0))  AS period_redeemed,
    total_expired                                                        AS period_expired,
    total_forfeited                                                      AS period_forfeited,
    exact_amount(COALESCE(s.reversed_w, 0), COALESCE(s.reversed_f, 0))   AS other_adjustments_net
FROM sums s
JOIN programs pr ON pr.id = s.program_id
JOIN assets a ON a.id = s.asset_id
LEFT JOIN people pp ON pp.program_id = s.program_id AND pp.asset_id = s.asset_id
CROSS JOIN period
WHERE period.invalid IS NULL
ORDER BY program_key, asset_symbol;

CREATE OR REPLACE MACRO ledger_summary_between(from_ts, to_ts) AS TABLE
SELECT * FROM ledger_summary_part(from_ts, to_ts, 0, 1);

-- Per program and asset, all time: what was issued, taken back, and what participants hold now.
-- Identity: total_issued - total_redeemed - total_expired - total_forfeited = current_balance.
-- current_balance is the program's net effect on holders' accounts; summed over programs it is
-- what participants and groups hold (balances, PARTICIPANT and GROUP rows, available + held + deferred).
-- participant_count is Scrip's "distinct participants holding the asset": those with a posting of
-- the program in the asset whose balance of it (all buckets, whichever program moved it) is above
-- zero now; one who spent, redeemed or lost everything no longer holds it (docs/decisions.md).
CREATE OR REPLACE VIEW ledger_summary AS
WITH holders AS (
    SELECT entity_id, asset_id
    FROM account_balances
    WHERE entity_type = 'PARTICIPANT'
    GROUP BY entity_id, asset_id
    HAVING SUM(amount) > 0
), holding AS (
    SELECT j.program_id, p.asset_id, COUNT(DISTINCT p.entity_id) AS participant_count
    FROM postings p
    JOIN journal_entries j ON j.id = p.journal_entry_id
    JOIN holders h ON h.entity_id = p.entity_id AND h.asset_id = p.asset_id
    WHERE p.entity_type = 'PARTICIPANT'
    GROUP BY j.program_id, p.asset_id
)
SELECT s.program_key, s.asset_symbol, s.total_issued, s.total_redeemed, s.total_expired, s.total_forfeited,
       s.closing_balance AS current_balance, COALESCE(h.participant_count, 0) AS participant_count
FROM ledger_summary_between(NULL, NULL) s
LEFT JOIN holding h ON h.program_id = s.program_id AND h.asset_id = s.asset_id
ORDER BY s.program_key, s.asset_symbol;

CREATE OR REPLACE VIEW participant_state AS
SELECT s.entity_id AS participant_id, p.external_id, s.kind, s.key, s.text_value, s.number_value,
       s.reset_after_us, s.last_reset_at
FROM entity_state s LEFT JOIN participants p ON p.id = s.entity_id
WHERE s.entity_type = 'PARTICIPANT';

CREATE OR REPLACE VIEW group_state AS
SELECT s.entity_id AS group_id, g.key AS group_key, s.kind, s.key, s.text_value, s.number_value,
       s.reset_after_us, s.last_reset_at
FROM entity_state s LEFT JOIN groups g ON g.id = s.entity_id
WHERE s.entity_type = 'GROUP';

CREATE OR REPLACE VIEW program_state AS
SELECT s.entity_id AS program_id, pr.key AS program_key, s.kind, s.key, s.text_value, s.number_value,
       s.reset_after_us, s.last_reset_at
FROM entity_state s LEFT JOIN programs pr ON pr.id = s.entity_id
WHERE s.entity_type = 'PROGRAM';

-- Per program and UTC day: events and operations processed (by their own timestamp's day), journal
-- entries by action type (by effective_at's day), and value flows per asset (ledger_flows) as
-- MAP(asset_symbol -> amount). Days with any event, operation or entry of the program appear.
CREATE OR REPLACE VIEW program_activity AS
WITH ev AS (
    SELECT program_id, (event_timestamp AT TIME ZONE 'UTC')::DATE AS day,
           COUNT(*) FILTER (WHERE status = 'COMPLETED') AS events_completed,
           COUNT(*) FILTER (WHERE status = 'FAILED')    AS events_failed
    FROM events GROUP BY ALL
), op AS (
    SELECT program_id, ("timestamp" AT TIME ZONE 'UTC')::DATE AS day,
           COUNT(*) FILTER (WHERE status = 'COMPLETED') AS operations_completed,
           COUNT(*) FILTER (WHERE status = 'FAILED')    AS operations_failed
    FROM operations GROUP BY ALL
), en AS (
    SELECT program_id, (effective_at AT TIME ZONE 'UTC')::DATE AS day,
           COUNT(*) AS entries,
           COUNT(*) FILTER (WHERE action_type = 'CREDIT')              AS credit_entries,
           COUNT(*) FILTER (WHERE action_type = 'DEBIT')               AS debit_entries,
           COUNT(*) FILTER (WHERE action_type = 'HOLD')                AS hold_entries,
           COUNT(*) FILTER (WHERE action_type = 'RELEASE')             AS release_entries,
           COUNT(*) FILTER (WHERE action_type = 'FORFEIT')             AS forfeit_entries,
           COUNT(*) FILTER (WHERE action_type = 'VOID_HOLD')           AS void_hold_entries,
           COUNT(*) FILTER (WHERE action_type = 'SETTLE')              AS settle_entries,
           COUNT(*) FILTER (WHERE action_type = 'MATURITY')            AS maturity_entries,
           COUNT(*) FILTER (WHERE action_type = 'EXPIRATION')          AS expiration_entries,
           COUNT(*) FILTER (WHERE action_type = 'REDEMPTION')          AS redemption_entries,
           COUNT(*) FILTER (WHERE action_type = 'REDEMPTION_REVERSAL') AS redemption_reversal_entries,
           COUNT(*) FILTER (WHERE action_type = 'TRANSFER')            AS transfer_entries,
           COUNT(*) FILTER (WHERE action_type = 'FUND')                AS fund_entries,
           COUNT(*) FILTER (WHERE action_type = 'BURN')                AS burn_entries,
           COUNT(*) FILTER (WHERE action_type = 'ADJUSTMENT')          AS adjustment_entries
    FROM journal_entries GROUP BY ALL
), fl AS (
    -- exact sums (a day's flows may pass 10^20 while no balance does; NULL past DECIMAL(38, 18))
    SELECT program_id, (effective_at AT TIME ZONE 'UTC')::DATE AS day, a.symbol AS asset_symbol,
           exact_amount(SUM(whole_part(issued)), SUM(fraction_units(issued))) AS issued,
           exact_amount(SUM(whole_part(redeemed)), SUM(fraction_units(redeemed))) AS redeemed,
           exact_amount(SUM(whole_part(expired)), SUM(fraction_units(expired))) AS expired,
           exact_amount(SUM(whole_part(forfeited)), SUM(fraction_units(forfeited))) AS forfeited
    FROM ledger_flows f JOIN assets a ON a.id = f.asset_id
    GROUP BY ALL
), flm AS (
    SELECT program_id, day,
           map_from_entries(list((asset_symbol, issued)    ORDER BY asset_symbol)) AS issued,
           map_from_entries(list((asset_symbol, redeemed)  ORDER BY asset_symbol)) AS redeemed,
           map_from_entries(list((asset_symbol, expired)   ORDER BY asset_symbol)) AS expired,
           map_from_entries(list((asset_symbol, forfeited) ORDER BY asset_symbol)) AS forfeited
    FROM fl GROUP BY ALL
), days AS (
    SELECT program_id, day FROM ev UNION SELECT program_id, day FROM op
    UNION SELECT program_id, day FROM en
)
SELECT
    pr.key AS program_key,
    d.day,
    COALESCE(ev.events_completed, 0) AS events_completed,
    COALESCE(ev.events_failed, 0) AS events_failed,
    COALESCE(op.operations_completed, 0) AS operations_completed,
    COALESCE(op.operations_failed, 0) AS operations_failed,
    COALESCE(en.entries, 0) AS entries,
    COALESCE(en.credit_entries, 0) AS credit_entries,
    COALESCE(en.debit_entries, 0) AS debit_entries,
    COALESCE(en.hold_entries, 0) AS hold_entries,
    COALESCE(en.release_entries, 0) AS release_entries,
    COALESCE(en.forfeit_entries, 0) AS forfeit_entries,
    COALESCE(en.void_hold_entries, 0) AS void_hold_entries,
    COALESCE(en.settle_entries, 0) AS settle_entries,
    COALESCE(en.maturity_entries, 0) AS maturity_entries,
    COALESCE(en.expiration_entries, 0) AS expiration_entries,
    COALESCE(en.redemption_entries, 0) AS redemption_entries,
    COALESCE(en.redemption_reversal_entries, 0) AS redemption_reversal_entries,
    COALESCE(en.transfer_entries, 0) AS transfer_entries,
    COALESCE(en.fund_entries, 0) AS fund_entries,
    COALESCE(en.burn_entries, 0) AS burn_entries,
    COALESCE(en.adjustment_entries, 0) AS adjustment_entries,
    COALESCE(flm.issued, MAP {}::MAP(VARCHAR, DECIMAL(38, 18))) AS issued,
    COALESCE(flm.redeemed, MAP {}::MAP(VARCHAR, DECIMAL(38, 18))) AS redeemed,
    COALESCE(flm.expired, MAP {}::MAP(VARCHAR, DECIMAL(38, 18))) AS expired,
    COALESCE(flm.forfeited, MAP {}::MAP(VARCHAR, DECIMAL(38, 18))) AS forfeited,
    d.program_id
FROM days d
JOIN programs pr ON pr.id = d.program_id
LEFT JOIN ev  ON ev.program_id  = d.program_id AND ev.day  = d.day
LEFT JOIN op  ON op.program_id  = d.program_id AND op.day  = d.day
LEFT JOIN en  ON en.program_id  = d.program_id AND en.day  = d.day
LEFT JOIN flm ON flm.program_id = d.program_id AND flm.day = d.day
ORDER BY program_key, d.day;

-- Per participant and asset: every posting to the participant's accounts in ledger order (seq, then
-- posting id within an entry), with running balances per bucket and in total after each posting's
-- entry: an entry is atomic, so its postings (a HOLD's AVAILABLE and HELD legs) all show the
-- balances after it, never a state between its legs that the participant never had (RANGE: the
-- rows of one seq are peers). Balances are participant-wide (across programs), like `balances`.
CREATE OR REPLACE VIEW participant_statement AS
SELECT
    p.entity_id AS participant_id,
    pa.external_id,
    a.symbol AS asset_symbol,
    j.seq,
    j.effective_at,
    pr.key AS program_key,
    j.action_type,
    j.description,
    j.reference_id,
    p.bucket,
    p.amount,
    SUM(CASE WHEN p.bucket = 'AVAILABLE' THEN p.amount ELSE 0 END) OVER w AS running_available,
    SUM(CASE WHEN p.bucket = 'HELD'      THEN p.amount ELSE 0 END) OVER w AS running_held,
    SUM(CASE WHEN p.bucket = 'DEFERRED'  THEN p.amount ELSE 0 END) OVER w AS running_deferred,
    SUM(p.amount) OVER w AS running_balance,
    j.id AS journal_entry_id,
    p.id AS posting_id,
    j.event_id,
    j.operation_id,
    p.asset_id
FROM postings p
JOIN journal_entries j ON j.id = p.journal_entry_id
JOIN assets a ON a.id = p.asset_id
LEFT JOIN participants pa ON pa.id = p.entity_id
LEFT JOIN programs pr ON pr.id = j.program_id
WHERE p.entity_type = 'PARTICIPANT'
WINDOW w AS (PARTITION BY p.entity_id, p.asset_id ORDER BY j.seq
             RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
ORDER BY external_id, asset_symbol, j.seq, p.id;

-- Outstanding LOT value (remaining of holders' lots -- participants' and groups', not a program
-- wallet's unissued funds -- not CONSUMED or EXPIRED, remaining <> 0) by expiry bucket.
-- Three complete partitions, one per granularity ('day', 'week' (ISO, Monday), 'month'), each of UTC
-- calendar buckets [bucket_start, bucket_end) of expires_at, plus one row with bucket_start NULL for
-- lots without expiry: per granularity, program and asset the rows sum exactly to the outstanding total.
-- Buckets in the past hold lots due but not yet expired by a run (perkflow maintain --as-of).
CREATE OR REPLACE VIEW expiration_schedule AS
WITH outstanding AS (
    SELECT l.program_id, l.asset_id, l.remaining, l.status, l.expires_at,
           (l.expires_at AT TIME ZONE 'UTC') AS expires_utc
    FROM lots l
    WHERE l.status NOT IN ('CONSUMED', 'EXPIRED') AND l.remaining <> 0
      AND l.entity_type IN ('PARTICIPANT', 'GROUP')
), g AS (
    SELECT * FROM (VALUES ('day', 1), ('week', 2), ('month', 3)) t(granularity, granularity_order)
), bucketed AS (
    SELECT g.granularity, g.granularity_order, o.*,
           date_trunc(g.granularity, o.expires_utc)::DATE AS bucket_start
    FROM outstanding o CROSS JOIN g
)
SELECT
    granularity,
    pr.key AS program_key,
    a.symbol AS asset_symbol,
    bucket_start,
    CASE granularity WHEN 'day'  THEN bucket_start + INTERVAL 1 DAY
                     WHEN 'week' THEN bucket_start + INTERVAL 7 DAY
                     ELSE bucket_start + INTERVAL 1 MONTH END::DATE AS bucket_end,
    bucket_start IS NULL AS no_expiry,
    COUNT(*) AS lots,
    SUM(b.remaining)::DECIMAL(38, 18) AS outstanding,
    COALESCE(SUM(b.remaining) FILTER (WHERE b.status = 'AVAILABLE'), 0)::DECIMAL(38, 18) AS outstanding_available,
    COALESCE(SUM(b.remaining) FILTER (WHERE b.status = 'HELD'), 0)::DECIMAL(38, 18)      AS outstanding_held,
    COALESCE(SUM(b.remaining) FILTER (WHERE b.status = 'DEFERRED'), 0)::DECIMAL(38, 18)  AS outstanding_deferred,
    MIN(b.expires_at) AS first_expires_at,  -- instants (TIMESTAMPTZ), as everywhere else
    MAX(b.expires_at) AS last_expires_at,
    b.program_id,
    b.asset_id
FROM bucketed b
JOIN assets a ON a.id = b.asset_id
LEFT JOIN programs pr ON pr.id = b.program_id
GROUP BY granularity, granularity_order, pr.key, a.symbol, bucket_start, b.program_id, b.asset_id
ORDER BY granularity_order, program_key, asset_symbol, bucket_start NULLS LAST;

-- Rewards with the status a redemption meets (semantics.md 9.4): `rewards.status` is the status
-- configured in the program file; a reward configured ACTIVE whose `max_total` units are all
-- redeemed (reversed units come back) is OUT_OF_STOCK here, and ACTIVE again when units come back.
CREATE OR REPLACE VIEW reward_status AS
SELECT
    pr.key AS program_key,
    r.key,
    r.name,
    r.redemption_type,
    CASE WHEN r.status = 'ACTIVE' AND r.max_total IS NOT NULL AND COALESCE(u.redeemed_count, 0) >= r.max_total
         THEN 'OUT_OF_STOCK' ELSE r.status END AS status,
    r.status AS configured_status,
    COALESCE(u.redeemed_count, 0) AS redeemed_count,
    r.max_total,
    r.max_per_participant,
    r.unit_cost,
    a.symbol AS asset_symbol,
    r.available_from,
    r.available_until,
    r.id AS reward_id,
    r.program_id,
    r.asset_id
FROM rewards r
JOIN programs pr ON pr.id = r.program_id
JOIN assets a ON a.id = r.asset_id
LEFT JOIN reward_usage u ON u.reward_id = r.id AND u.participant_id = ''
ORDER BY program_key, r.key;

-- Transfers (semantics.md 9.3): one row per recipient of a COMPLETED `transfer` operation (the
-- credit postings of its one TRANSFER entry, in request order: recipient k's posting is posting
-- k of the entry, posting_id in schema.sql), one row without recipient for a FAILED one.
CREATE OR REPLACE VIEW transfers AS
SELECT
    o.id AS transfer_id,
    pr.key AS program_key,
    o.idempotency_key,
    o."timestamp" AS transferred_at,
    o.status,
    o.error_code,
    o.participant_id AS source_participant_id,
    src.external_id AS source_external_id,
    dest.entity_type AS recipient_type,  -- PARTICIPANT, or GROUP (a group's wallet, docs/decisions.md "Groups")
    CASE WHEN dest.entity_type = 'PARTICIPANT' THEN dest.entity_id END AS recipient_participant_id,
    rcp.external_id AS recipient_external_id,
    CASE WHEN dest.entity_type = 'GROUP' THEN dest.entity_id END AS recipient_group_id,
    grp.key AS recipient_group_key,
    COALESCE(a.symbol, named.symbol, o.params->>'asset', o.params->>'asset_id') AS asset_symbol,
    dest.amount,
    j.seq,
    j.id AS journal_entry_id,
    o.program_id,
    COALESCE(dest.asset_id, named.id) AS asset_id
FROM operations o
JOIN programs pr ON pr.id = o.program_id
LEFT JOIN participants src ON src.id = o.participant_id
LEFT JOIN journal_entries j ON j.operation_id = o.id AND j.action_type = 'TRANSFER'
LEFT JOIN postings dest ON dest.journal_entry_id = j.id AND dest.amount > 0
LEFT JOIN participants rcp ON rcp.id = dest.entity_id AND dest.entity_type = 'PARTICIPANT'
LEFT JOIN groups grp ON grp.id = dest.entity_id AND dest.entity_type = 'GROUP'
LEFT JOIN assets a ON a.id = dest.asset_id
-- a transfer that wrote no entry (FAILED) names its asset only in its params: by symbol,
-- or by id (`asset_id` takes either, docs/decisions.md)
LEFT JOIN assets named ON j.id IS NULL
    AND (named.symbol = COALESCE(o.params->>'asset', o.params->>'asset_id')
         OR named.id::VARCHAR = lower(o.params->>'asset_id'))
WHERE o.operation = 'transfer'
ORDER BY o."timestamp", o.arrival_seq, j.seq,
         -- (the md5 form: a posting written before session 19, sql/schema.sql name_uuid)
         (SELECT k FROM range(1, 101) r(k)
          WHERE dest.id IN (posting_id(j.id, k), md5('posting:' || j.id || ':' || k)::UUID));
