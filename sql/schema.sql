-- perkflow ledger schema (DuckDB). Every statement is idempotent: run at the start of every batch.
-- Amounts are DECIMAL(38, 18): exact, scale 18 being the largest asset scale.
-- Hot tables (events, journal_entries, postings) and the tables that grow with participants
-- (participants, enrollments, account_balances) carry no constraint indexes: uniqueness is
-- guaranteed set-wise by the writer (idempotency) and checked by `perkflow verify`
-- (checks.sql no_duplicate_keys). Why: DuckDB keeps ART indexes pinned in memory; at 1M
-- participants those three alone held ~440 MB of a 700 MB cap and grew by ~20 MB per chunk until
-- a 10M-event batch ran out of memory. Ledgers made before this keep their indexes; they work the same.

CREATE TABLE IF NOT EXISTS batches (
    id               BIGINT PRIMARY KEY,      -- 1, 2, 3 ... in commit order
    input_fingerprint VARCHAR NOT NULL,       -- SHA-256 over the input files' bytes
    sources          VARCHAR[] NOT NULL,
    catalog_version  VARCHAR NOT NULL,
    rows_read        BIGINT NOT NULL,
    completed        BIGINT NOT NULL,
    failed           BIGINT NOT NULL,
    duplicates       BIGINT NOT NULL,
    rejected         BIGINT NOT NULL,
    entries_written  BIGINT NOT NULL,
    postings_written BIGINT NOT NULL,
    committed_at     TIMESTAMPTZ NOT NULL,    -- wall clock, informational only (not hashed)
    root_hash        VARCHAR NOT NULL,        -- sha256(prev_root_hash || '#' || entry hashes in seq order, ';'-joined): engine/ledger/root.py
    prev_root_hash   VARCHAR NOT NULL         -- the previous batch's root ('' for the first)
);
-- Which texts its entries' hashes cover (sql/hash.sql); added after the table, so that the batches
-- of a ledger written before the column are version 1.
ALTER TABLE batches ADD COLUMN IF NOT EXISTS hash_version INTEGER DEFAULT 1;
-- SYSTEM events of SCHEDULE_EVENT and BROADCAST the batch processed: input rows (and a maintain
-- batch's automation firings) are counted by rows_read and its parts, these are not. NULL for
-- batches written before the column (the count was not kept).
ALTER TABLE batches ADD COLUMN IF NOT EXISTS system_events BIGINT;

-- A batch that booked several inputs at once (a backfill range: engine/run.py `Backfill.run_days`)
-- has one row here per input (a day's folder): running that input again alone is then a no-op, as
-- it is for an input booked as its own batch (`batches.input_fingerprint`).
CREATE TABLE IF NOT EXISTS batch_inputs (
    batch_id          BIGINT NOT NULL,
    input_fingerprint VARCHAR NOT NULL,       -- SHA-256 over this input's files' bytes
    sources           VARCHAR[] NOT NULL,
    rows_read         BIGINT NOT NULL,
    rejected          BIGINT NOT NULL         -- its rows quarantined in rejected_rows (by source)
);

CREATE TABLE IF NOT EXISTS programs (
    id                     UUID PRIMARY KEY,
    key                    VARCHAR NOT NULL UNIQUE,
    name                   VARCHAR NOT NULL,
    status                 VARCHAR NOT NULL,
    on_unknown_participant VARCHAR NOT NULL,
    source_file            VARCHAR
);

-- Where each program posts redeemed value (Scrip's redemption_target_type; semantics.md 9.4).
-- Added after the table (so ledgers made before it gain it); programs are written BY NAME.
ALTER TABLE programs ADD COLUMN IF NOT EXISTS redemption_target_type VARCHAR DEFAULT 'SYSTEM_REDEMPTION';

CREATE TABLE IF NOT EXISTS assets (
    id                     UUID PRIMARY KEY,
    symbol                 VARCHAR NOT NULL UNIQUE,
    name                   VARCHAR NOT NULL,
    inventory_mode         VARCHAR NOT NULL,
    issuance_policy        VARCHAR NOT NULL,
    scale                  INTEGER NOT NULL,
    max_transaction_amount DECIMAL(38, 18)
);

CREATE TABLE IF NOT EXISTS rules (
    id               UUID PRIMARY KEY,
    program_id       UUID NOT NULL,
    key              VARCHAR NOT NULL,
    name             VARCHAR NOT NULL,
    current_version  VARCHAR NOT NULL,
    "order"          INTEGER NOT NULL,
    status           VARCHAR NOT NULL,
    stop_after_match BOOLEAN NOT NULL,
    condition        VARCHAR NOT NULL
);

-- Every version a rule ever had stays queryable; entries record the version that produced them.
CREATE TABLE IF NOT EXISTS rule_versions (
    rule_id          UUID NOT NULL,
    version          VARCHAR NOT NULL,
    definition       JSON NOT NULL,
    first_batch_id   BIGINT NOT NULL,
    PRIMARY KEY (rule_id, version)
);

CREATE TABLE IF NOT EXISTS participants (
    id               UUID NOT NULL,           -- unique (checked by verify, see the top)
    external_id      VARCHAR NOT NULL,        -- unique (idem)
    status           VARCHAR NOT NULL,        -- ACTIVE | SUSPENDED | CLOSED
    created_at       TIMESTAMPTZ NOT NULL,    -- stream instant of the event that created it
    created_batch_id BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS enrollments (
    participant_id   UUID NOT NULL,
    program_id       UUID NOT NULL,
    enrolled_at      TIMESTAMPTZ NOT NULL,
    batch_id         BIGINT NOT NULL          -- (participant_id, program_id) unique (verify)
);

CREATE TABLE IF NOT EXISTS events (
    id               UUID NOT NULL,           -- name_uuid('event:' || program_id || ':' || idempotency_key)
    program_id       UUID NOT NULL,
    participant_id   UUID,                    -- null when the participant could not be resolved
    external_id      VARCHAR,
    participant_ref  VARCHAR,                 -- participant_id as given in the input
    recipient_id     UUID,
    recipient_external_id VARCHAR,
    recipient_ref    VARCHAR,
    idempotency_key  VARCHAR NOT NULL,
    event_timestamp  TIMESTAMPTZ NOT NULL,
    arrival_seq      BIGINT NOT NULL,         -- global arrival order: batch << 32 | row
    event_data       JSON NOT NULL,
    status           VARCHAR NOT NULL,        -- COMPLETED | FAILED
    error_code       VARCHAR,
    error_message    VARCHAR,
    batch_id         BIGINT NOT NULL,
    source           VARCHAR NOT NULL,
    row_number       BIGINT NOT NULL
);
-- The type the run read the payload with (engine/io/payload_types.py): a key of payload_types,
-- null for one read with JSON's mapping. Added after the table (ledgers made before it gain it,
-- their events null); the last column, which insert_events writes last.
ALTER TABLE events ADD COLUMN IF NOT EXISTS event_data_type VARCHAR;

CREATE TABLE IF NOT EXISTS payload_types (
    key              VARCHAR PRIMARY KEY,     -- sha256 of arrow_schema, 16 hex digits
    arrow_schema     VARCHAR NOT NULL         -- the payload column's type, an Arrow IPC schema (hex)
);

CREATE TABLE IF NOT EXISTS rejected_rows (
    batch_id         BIGINT NOT NULL,
    source           VARCHAR NOT NULL,
    row_number       BIGINT NOT NULL,
    reason           VARCHAR NOT NULL,
    message          VARCHAR,
    raw              VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS rule_evaluations (
    event_id         UUID NOT NULL,
    rule_id          UUID NOT NULL,
    rule_version     VARCHAR NOT NULL,
    outcome          VARCHAR NOT NULL,        -- MATCHED | SKIPPED_ERROR | BUDGET_EXCEEDED
    message          VARCHAR,
    batch_id         BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS journal_entries (
    id               UUID NOT NULL,           -- name_uuid('entry:' || event_id || ':' || rule_version || ':' || action_index)
    seq              BIGINT NOT NULL,         -- global ledger order
    program_id       UUID NOT NULL,
    event_id         UUID,
    operation_id     UUID,
    rule_id          UUID,
    rule_version     VARCHAR,
    action_index     INTEGER,
    action_type      VARCHAR NOT NULL,
    reference_id     VARCHAR,
    description      VARCHAR,
    effective_at     TIMESTAMPTZ NOT NULL,    -- the stream instant, never the wall clock
    allow_negative   BOOLEAN NOT NULL,        -- the action could overdraw (DEBIT with allow_negative)
    batch_id         BIGINT NOT NULL,
    entry_hash       VARCHAR NOT NULL         -- sha256 of entry_text(...) and its postings' posting_text(...)
);

CREATE TABLE IF NOT EXISTS postings (
    id               UUID NOT NULL,           -- name_uuid('posting:' || journal_entry_id || ':' || leg)
    journal_entry_id UUID NOT NULL,
    program_id       UUID NOT NULL,
    entity_type      VARCHAR NOT NULL,        -- PARTICIPANT | SYSTEM_ISSUANCE | SYSTEM_BREAKAGE | SYSTEM_REDEMPTION | PROGRAM_WALLET | GROUP
    entity_id        UUID NOT NULL,
    asset_id         UUID NOT NULL,
    bucket           VARCHAR NOT NULL,        -- AVAILABLE | HELD | DEFERRED
    amount           DECIMAL(38, 18) NOT NULL -- signed; an entry's postings sum to zero per asset
);

-- Materialised from postings, batch by batch; always equal to their sum (checked by verify/Dagster).
CREATE TABLE IF NOT EXISTS account_balances (
    entity_type      VARCHAR NOT NULL,
    entity_id        UUID NOT NULL,
    asset_id         UUID NOT NULL,
    bucket           VARCHAR NOT NULL,
    amount           DECIMAL(38, 18) NOT NULL -- (entity_type, entity_id, asset_id, bucket) unique (verify)
);

-- Current state of participants and programs (tags, counters, attributes): one row per item.
-- Rewritten for the entities a batch touched; the ledger tables hold the history of value.
CREATE TABLE IF NOT EXISTS entity_state (
    entity_type      VARCHAR NOT NULL,        -- PARTICIPANT | PROGRAM
    entity_id        UUID NOT NULL,
    kind             VARCHAR NOT NULL,        -- TAG | COUNTER | ATTRIBUTE
    key              VARCHAR NOT NULL,
    text_value       VARCHAR,                 -- ATTRIBUTE
    number_value     DECIMAL(38, 18),         -- COUNTER (exact)
    reset_after_us   BIGINT,                  -- COUNTER with reset_after
    last_reset_at    TIMESTAMPTZ,             -- COUNTER: creation, or the last reset instant
    batch_id         BIGINT NOT NULL
);

-- Budget consumption per budget (a rule's budgets[budget_index], on asset_id) and period (0 for
-- lifetime budgets). Each budget of a rule counts on its own, also two on one asset. Ledgers made
-- before this table kept `budget_usage` (rule_id, asset_id, period, consumed: one total per rule
-- and asset); it is no longer written, and is read only for a budget with no row here yet.
CREATE TABLE IF NOT EXISTS budget_consumption (
    rule_id          UUID NOT NULL,
    budget_index     INTEGER NOT NULL,
    asset_id         UUID NOT NULL,
    period           BIGINT NOT NULL,
    consumed         DECIMAL(38, 18) NOT NULL,
    PRIMARY KEY (rule_id, budget_index, asset_id, period)
);

-- The texts hashed into journal_entries.entry_hash are TEMP macros of sql/hash.sql, defined by
-- every connection (engine/ledger/db.py), not stored here: `perkflow verify` must recompute hashes
-- with this perkflow's definition, never with one read from the file it checks. Ledgers written
-- before session 13 stored them; they go. (DuckDB resolves `main.x` to this connection's TEMP
-- macro first when there is one: so the writer defines them after ensure_schema, in BatchWriter.)
DROP MACRO IF EXISTS main.entry_text;
DROP MACRO IF EXISTS main.posting_text;

-- The id of a name, as engine.ids.name_id_text makes it: an RFC 4122 UUIDv5 (SHA-1 of perkflow's
-- namespace and the name, version nibble 5, variant bits 10), so that the ids of events,
-- operations, entries and postings are UUIDv5 of their keys like the catalog's (semantics.md
-- 2.1, 4). Ledgers written before session 19 hold md5 digests cast to UUID for those (version and
-- variant bits arbitrary); they keep them (history is not rewritten) and new rows get these.
CREATE OR REPLACE MACRO uuid_v5_bits(h) AS
    (substr(h, 1, 12) || '5' || substr(h, 14, 3)
     || substr('89ab89ab89ab89ab', ('0x' || substr(h, 17, 1))::INTEGER + 1, 1) || substr(h, 18, 15))::UUID;
CREATE OR REPLACE MACRO name_uuid(name) AS uuid_v5_bits(sha1(unhex('04c43fc3c2125260b62035058c734f0a') || encode(name)));

-- The id of posting k of entry `entry_id`: 0 the source's, 1, 2, ... its destinations' (sql/write_batch.sql).
CREATE OR REPLACE MACRO posting_id(entry_id, k) AS name_uuid('posting:' || entry_id || ':' || k);

-- LOT assets: each credit is a lot; `remaining` and `status` are current state, rewritten for the
-- lots a batch touched (the ledger tables hold the history). Spending consumes FIFO by created_at, id.
CREATE TABLE IF NOT EXISTS lots (
    id               UUID NOT NULL,           -- UUIDv5 of the crediting event/operation and action
    entity_type      VARCHAR NOT NULL,
    entity_id        UUID NOT NULL,
    asset_id         UUID NOT NULL,
    amount           DECIMAL(38, 18) NOT NULL,
    remaining        DECIMAL(38, 18) NOT NULL,
    status           VARCHAR NOT NULL,        -- DEFERRED | AVAILABLE | HELD | CONSUMED | EXPIRED
    created_at       TIMESTAMPTZ NOT NULL,
    expires_at       TIMESTAMPTZ,
    matures_at       TIMESTAMPTZ,
    reference_id     VARCHAR,
    program_id       UUID NOT NULL,           -- the program whose credit created it
    batch_id         BIGINT NOT NULL          -- the batch that last changed it
);
-- Credited straight into HELD and neither settled nor released since: what a VOID_HOLD cancels.
-- Added after the table (so ledgers made before it gain it); lots are written BY NAME.
ALTER TABLE lots ADD COLUMN IF NOT EXISTS provisional BOOLEAN DEFAULT FALSE;

-- Groups (semantics.md 11): shared wallets declared in program files, project-wide (like assets).
-- Their balances are postings with entity_type GROUP; their tags, counters and attributes are
-- entity_state rows with entity_type GROUP.
CREATE TABLE IF NOT EXISTS groups (
    id               UUID PRIMARY KEY,        -- UUIDv5 of the group key
    key              VARCHAR NOT NULL UNIQUE,
    name             VARCHAR NOT NULL,
    status           VARCHAR NOT NULL,        -- ACTIVE | ARCHIVED
    definition       JSON NOT NULL,           -- the group as written (its founding members included)
    source_file      VARCHAR
);

-- Every participant that is or was a member of a group: the founding members (from the program
-- file, written when the group first appears) and the changes of membership operations. Rewritten
-- per group a batch changed; at least one ACTIVE ADMIN per group at all times.
CREATE TABLE IF NOT EXISTS group_members (
    group_id         UUID NOT NULL,
    participant_id   UUID NOT NULL,
    external_id      VARCHAR,                 -- null for a founding member declared by participant_id
    role             VARCHAR NOT NULL,        -- ADMIN | MEMBER
    status           VARCHAR NOT NULL,        -- ACTIVE | LEFT
    joined_at        TIMESTAMPTZ,             -- stream instant of the operation that added it; null: founding
    left_at          TIMESTAMPTZ,             -- LEFT: stream instant of its removal
    batch_id         BIGINT NOT NULL,         -- the batch that last changed it
    PRIMARY KEY (group_id, participant_id)
);

-- Direct operations (semantics.md 2.3), idempotent like events.
CREATE TABLE IF NOT EXISTS operations (
    id               UUID NOT NULL,           -- name_uuid('operation:' || program_id || ':' || idempotency_key)
    program_id       UUID NOT NULL,
    operation        VARCHAR NOT NULL,
    participant_id   UUID,
    external_id      VARCHAR,
    participant_ref  VARCHAR,                 -- participant_id as given in the input
    idempotency_key  VARCHAR NOT NULL,
    timestamp        TIMESTAMPTZ NOT NULL,
    arrival_seq      BIGINT NOT NULL,
    params           JSON NOT NULL,
    status           VARCHAR NOT NULL,        -- COMPLETED | FAILED
    error_code       VARCHAR,
    error_message    VARCHAR,
    batch_id         BIGINT NOT NULL,
    source           VARCHAR NOT NULL,
    row_number       BIGINT NOT NULL
);

-- Rewards catalog (from program files) and what has been redeemed.
CREATE TABLE IF NOT EXISTS rewards (
    id                  UUID PRIMARY KEY,
    program_id          UUID NOT NULL,
    key                 VARCHAR NOT NULL,
    name                VARCHAR NOT NULL,
    redemption_type     VARCHAR NOT NULL,     -- UNIT_BASED | AMOUNT_BASED
    asset_id            UUID NOT NULL,
    unit_cost           DECIMAL(38, 18) NOT NULL,
    max_total           BIGINT,
    max_per_participant BIGINT,
    status              VARCHAR NOT NULL,     -- as configured; see the reward_status view for OUT_OF_STOCK
    available_from      TIMESTAMPTZ,
    available_until     TIMESTAMPTZ
);

CREATE TABLE IF NOT EXISTS reward_usage (
    reward_id           UUID NOT NULL,
    participant_id      VARCHAR NOT NULL,     -- '' for the reward's total
    redeemed_count      BIGINT NOT NULL,
    PRIMARY KEY (reward_id, participant_id)
);

-- One row per redemption (redeem / redeem_item operation), with what was reversed since.
CREATE TABLE IF NOT EXISTS redemptions (
    id                  UUID NOT NULL,        -- the redeeming operation's id
    program_id          UUID NOT NULL,
    idempotency_key     VARCHAR NOT NULL,     -- of the redeeming operation; reversals name it
    participant_id      UUID NOT NULL,
    reward_id           UUID,
    asset_id            UUID NOT NULL,
    quantity            BIGINT,
    unit_cost           DECIMAL(38, 18),
    amount              DECIMAL(38, 18) NOT NULL,
    reversed_amount     DECIMAL(38, 18) NOT NULL,
    reversed_quantity   BIGINT NOT NULL,
    status              VARCHAR NOT NULL,     -- COMPLETED | PARTIALLY_REVERSED | FULLY_REVERSED
    lots_taken          JSON NOT NULL,        -- [[lot id, amount], ...] for LIFO restoration
    created_at          TIMESTAMPTZ NOT NULL,
    batch_id            BIGINT NOT NULL
);

-- Where the redemption posted its value (the program's redemption_target_type when it was made):
-- its reversals take the value back from there, whatever the program says later (Scrip).
ALTER TABLE redemptions ADD COLUMN IF NOT EXISTS target_type VARCHAR DEFAULT 'SYSTEM_REDEMPTION';
-- With target_type LEDGER_ENTITY, the group whose AVAILABLE it credited (the program's
-- redemption_target_entity_id then); null for the SYSTEM_* targets.
ALTER TABLE redemptions ADD COLUMN IF NOT EXISTS target_entity_id UUID;
-- The REDEMPTION entry that moved the value (Scrip's redemption object has `journal_entry_id`);
-- a ledger made before session 19 gets it for its redemptions here, from their operations' entries.
ALTER TABLE redemptions ADD COLUMN IF NOT EXISTS journal_entry_id UUID;
UPDATE redemptions SET journal_entry_id = j.id FROM journal_entries j
WHERE redemptions.journal_entry_id IS NULL AND j.operation_id = redemptions.id AND j.action_type = 'REDEMPTION';

-- Tier types (semantics.md 10) from program files, and their ranked levels.
CREATE TABLE IF NOT EXISTS tiers (
    id                  UUID PRIMARY KEY,     -- UUIDv5 of program key and tier key
    program_id          UUID NOT NULL,
    key                 VARCHAR NOT NULL,
    name                VARCHAR NOT NULL,
    definition          JSON NOT NULL,        -- the tier as written (levels, qualification, lifecycle)
    lifecycle_since     TIMESTAMPTZ           -- the ledger's clock when its lifecycle (as written) was first stored
);
-- Ledgers made before session 20 have no lifecycle_since: their lifecycles run from the start.
ALTER TABLE tiers ADD COLUMN IF NOT EXISTS lifecycle_since TIMESTAMPTZ;

CREATE TABLE IF NOT EXISTS tier_levels (
    tier_id             UUID NOT NULL,
    key                 VARCHAR NOT NULL,
    name                VARCHAR NOT NULL,
    rank                INTEGER NOT NULL,     -- higher is higher
    benefits            JSON NOT NULL,
    PRIMARY KEY (tier_id, key)
);

-- Each participant's current level per tier type: rewritten for the participants a batch touched.
CREATE TABLE IF NOT EXISTS participant_tiers (
    participant_id      UUID NOT NULL,
    tier_id             UUID NOT NULL,
    level               VARCHAR NOT NULL,
    achieved_at         TIMESTAMPTZ NOT NULL, -- stream instant of the change that set this level
    reviewed_at         TIMESTAMPTZ,          -- lifecycle: window start when not achieved_at (last window end
                                              -- reviewed, or last activity for ACTIVITY_REFRESH)
    batch_id            BIGINT NOT NULL,
    expires_at          TIMESTAMPTZ,          -- set_tier's expires_at: the level is removed then (tier expiry,
                                              -- semantics.md 3); null: no expiry. Last, as ALTER adds it below
    PRIMARY KEY (participant_id, tier_id)
);
-- Ledgers made before tier expiry lack the column: add it (null: no expiry).
ALTER TABLE participant_tiers ADD COLUMN IF NOT EXISTS expires_at TIMESTAMPTZ;

-- Every tier change, append-only, in stream order (seq).
CREATE TABLE IF NOT EXISTS tier_history (
    seq                 BIGINT NOT NULL,      -- batch << 32 | change number within the batch
    program_id          UUID NOT NULL,
    tier_id             UUID NOT NULL,
    tier_key            VARCHAR NOT NULL,
    participant_id      UUID NOT NULL,
    from_level          VARCHAR,              -- null: the participant had no level in this tier
    to_level            VARCHAR,              -- null: the level was removed (EXPIRY)
    reason              VARCHAR NOT NULL,     -- AUTO | ACTION | OPERATION | LIFECYCLE | EXPIRY
    event_id            UUID,                 -- the event (AUTO, ACTION) ...
    operation_id        UUID,                 -- ... or operation (OPERATION) that made the change
    effective_at        TIMESTAMPTZ NOT NULL, -- the stream instant (for LIFECYCLE, EXPIRY: when it was due)
    batch_id            BIGINT NOT NULL
);
-- Ledgers made before tier expiry have to_level NOT NULL: lift it (a no-op when already nullable).
ALTER TABLE tier_history ALTER COLUMN to_level DROP NOT NULL;

-- Each program's file as validated by the last run that loaded it (the model's fields as written):
-- `perkflow maintain` compiles these again to run the SYSTEM events of automations through the
-- rules without program files (engine/automations.py).
CREATE TABLE IF NOT EXISTS program_documents (
    program_id          UUID PRIMARY KEY,
    key                 VARCHAR NOT NULL,
    document            JSON NOT NULL,
    batch_id            BIGINT NOT NULL       -- the batch that last stored it
);

-- The catalog rows (programs, assets, rules, rewards, tiers, groups, automations, program
-- documents) as the last catalog write stored them, as one hash (engine/ledger/writer.py
-- `catalog_fingerprint`): a batch whose catalog hashes the same skips rewriting it (each catalog
-- statement is a no-op then, but costs milliseconds in every batch of a backfill).
CREATE TABLE IF NOT EXISTS catalog_fingerprint (
    fingerprint         VARCHAR NOT NULL,
    batch_id            BIGINT NOT NULL       -- the batch that wrote that catalog
);

-- Automations (semantics.md 11) from program files, and how far their firings were planned.
CREATE TABLE IF NOT EXISTS automations (
    id                  UUID PRIMARY KEY,     -- UUIDv5 of program key and automation key
    program_id          UUID NOT NULL,
    key                 VARCHAR NOT NULL,     -- names its SYSTEM events: system:automation:<key>:...
    name                VARCHAR NOT NULL,
    event_name          VARCHAR NOT NULL,
    scope               VARCHAR NOT NULL,     -- program | participants
    trigger_type        VARCHAR NOT NULL,     -- cron | one_time | immediate | participant_state
    status              VARCHAR NOT NULL,     -- active | paused
    definition          JSON NOT NULL,        -- the automation as written (normalised)
    introduced_at       TIMESTAMPTZ,          -- the ledger's clock when a run first stored it (null: from the start)
    planned_through     TIMESTAMPTZ,          -- firings due up to here are planned (the last maintain --as-of)
    first_batch_id      BIGINT NOT NULL
);

-- SYSTEM events (SCHEDULE_EVENT) emitted but not yet due when their batch ended: processed, and
-- deleted from here, by the batch whose stream reaches their instant (or `perkflow maintain`).
CREATE TABLE IF NOT EXISTS scheduled_events (
    program_id          UUID NOT NULL,
    idempotency_key     VARCHAR NOT NULL,     -- system:schedule:<emitting event id>:<rule version>:<action index>
    participant_id      UUID,                 -- null: a program event (SCHEDULE_EVENT for the program)
    event_timestamp     TIMESTAMPTZ NOT NULL, -- the instant it is due (its `now`)
    event_data          JSON NOT NULL,        -- the payload with `type` = event_name
    emit_seq            BIGINT NOT NULL,      -- emission order (becomes events.arrival_seq)
    depth               INTEGER NOT NULL,     -- its place in a chain of SYSTEM events (1: emitted by an input event)
    from_broadcast      BOOLEAN NOT NULL,     -- a BROADCAST is among its ancestors
    source              VARCHAR NOT NULL,     -- system:<emitting event id>
    batch_id            BIGINT NOT NULL,      -- the batch that emitted it
    PRIMARY KEY (program_id, idempotency_key)
);
-- Ledgers made before program events could be scheduled have the column NOT NULL: lift it (a no-op
-- when it is already nullable; DuckDB keeps the rows and the primary key).
ALTER TABLE scheduled_events ALTER COLUMN participant_id DROP NOT NULL;
