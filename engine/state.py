"""Participant and program state for the sequential kernel: loaded in bulk, changed per event
inside a transaction that commits or rolls back with the event, written back per batch."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

import duckdb
import polars as pl

from engine import amounts, ids
from engine.ledger import db
from engine.lots import Lot
from engine.ledger.sqlfiles import statement

#: A tier change as staged for sql/write_batch.sql; source_name names the event or operation
#: ('event:' || program_id || ':' || idempotency_key), null for lifecycle changes.
TIER_HISTORY_SCHEMA = {"seq": pl.Int64, "program_id": pl.String, "tier_id": pl.String, "tier_key": pl.String,
                       "participant_id": pl.String, "from_level": pl.String, "to_level": pl.String,
                       "reason": pl.String, "source_kind": pl.String, "source_name": pl.String,
                       "effective_at": pl.Datetime("us", "UTC")}

#: A lot as staged for sql/write_batch.sql (the columns of engine.lots.Lot).
LOT_SCHEMA = {"id": pl.String, "entity_type": pl.String, "entity_id": pl.String, "asset_id": pl.String,
              "amount": pl.Decimal(38, 18), "remaining": pl.Decimal(38, 18), "status": pl.String,
              "created_at": pl.Datetime("us", "UTC"), "expires_at": pl.Datetime("us", "UTC"),
              "matures_at": pl.Datetime("us", "UTC"), "reference_id": pl.String, "program_id": pl.String,
              "provisional": pl.Boolean}

#: Participant and program state as staged for sql/write_batch.sql: one row per tag, attribute
#: and counter of each rewritten entity.
STATE_SCHEMA = {"entity_type": pl.String, "entity_id": pl.String, "kind": pl.String, "key": pl.String,
                "text_value": pl.String, "number_value": pl.Decimal(38, 18), "reset_after_us": pl.Int64,
                "last_reset_at": pl.Datetime("us", "UTC")}
#: A participant's level in a tier type, as staged.
TIERS_SCHEMA = {"participant_id": pl.String, "tier_id": pl.String, "level": pl.String,
                "achieved_at": pl.Datetime("us", "UTC"), "reviewed_at": pl.Datetime("us", "UTC"),
                "expires_at": pl.Datetime("us", "UTC")}


#: A budget's consumption in one period: (rule id, the budget's index in the rule's `budgets`,
#: asset id, period). Each budget counts on its own, also two of one rule on one asset.
BudgetKey = tuple[str, int, str, int]


@dataclass
class Counter:
    value: Decimal
    reset_after: timedelta | None
    last_reset_at: datetime


@dataclass
class TierState:
    """A participant's level in one tier type (engine/tiers.py)."""
    level: str
    achieved_at: datetime
    reviewed_at: datetime | None = None  # lifecycle window start if not achieved_at (engine/tiers.py)
    expires_at: datetime | None = None  # set_tier's params.expires_at: the level is removed then


@dataclass
class EntityState:
    tags: set[str] = field(default_factory=set)
    counters: dict[str, Counter] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)
    tiers: dict[str, TierState] = field(default_factory=dict)  # tier id -> level (participants only)

    def copy(self) -> EntityState:
        """A working copy for one event (cheaper than deepcopy: these are the only containers)."""
        return EntityState(set(self.tags), {k: replace(c) for k, c in self.counters.items()}, dict(self.attributes),
                           {k: replace(t) for k, t in self.tiers.items()})

    def apply_resets(self, now: datetime) -> bool:
        """Lazy `reset_after`: a counter due at or before `now` is 0 from its due instant.
        Returns whether anything was reset."""
        changed = False
        for c in self.counters.values():
            # (as a difference: last_reset_at + reset_after can be past the last datetime)
            if c.reset_after is not None and now - c.last_reset_at >= c.reset_after:
                periods = (now - c.last_reset_at) // c.reset_after
                c.last_reset_at = c.last_reset_at + periods * c.reset_after
                c.value = Decimal(0)
                changed = True
        return changed


@dataclass
class Redemption:
    key: str  # idempotency key of the redeeming operation
    participant_id: str
    reward_id: str | None
    asset_id: str
    quantity: int | None
    unit_cost: Decimal | None
    amount: Decimal
    reversed_amount: Decimal
    reversed_quantity: int
    status: str
    lots_taken: list  # [(lot id, amount)]
    created_at: datetime
    target_type: str = "SYSTEM_REDEMPTION"  # where it posted value (reversals take it back from there):
    target_entity_id: str | None = None  # a system account, or (LEDGER_ENTITY) this group's AVAILABLE


@dataclass
class Membership:
    """A participant's membership of a group (Scrip: role ADMIN | MEMBER, status ACTIVE | LEFT)."""
    external_id: str | None
    role: str
    status: str
    joined_at: datetime | None  # None: a founding member, declared in the program file
    left_at: datetime | None = None


#: A group's members as staged for sql/write_batch.sql (rewritten per group a batch changed).
MEMBERS_SCHEMA = {"group_id": pl.String, "participant_id": pl.String, "external_id": pl.String, "role": pl.String,
                  "status": pl.String, "joined_at": pl.Datetime("us", "UTC"), "left_at": pl.Datetime("us", "UTC")}


@dataclass
class Person:
    id: str
    external_id: str
    status: str
    created_at: datetime


def status_at(changes: list[tuple[datetime, str]], instant: datetime, current: str) -> str:
    """A participant's status at `instant` (docs/decisions.md, "SYSTEM events": who a BROADCAST or
    an automation reaches), from its status changes in the order they were processed, each
    (its instant, the status it set): the current status when none is dated after `instant`;
    else the last one dated at or before it, or ACTIVE (every participant is created ACTIVE)."""
    if all(t <= instant for t, _ in changes):
        return current
    before = [status for t, status in changes if t <= instant]
    return before[-1] if before else "ACTIVE"


def stored_status_changes(con: duckdb.DuckDBPyConnection, after: datetime | None = None
                          ) -> dict[str, list[tuple[datetime, str]]]:
    """Every participant's status changes the ledger holds, in the order they were processed
    (with `after`: of the participants with a change dated after it, enough for `status_at`
    from `after` on)."""
    out: dict[str, list[tuple[datetime, str]]] = {}
    for pid, at, status in con.execute(statement("lookups.sql", "status_changes"), {"after": after}).fetchall():
        out.setdefault(pid, []).append((at, status))
    return out


def entity_states(states, tiers, into: dict | None = None) -> dict[tuple[str, str], EntityState]:
    """EntityState objects (keyed by entity type and id; `into` if given) from rows of
    lookups.sql's `entity_states` and `entity_tiers`, as the Store loads them and the running path
    reads them from its opening frames."""
    out = {} if into is None else into
    for etype, eid, kind, key, text, number, reset_us, last in states:
        st = out.setdefault((etype, eid), EntityState())
        if kind == "TAG":
            st.tags.add(key)
        elif kind == "ATTRIBUTE":
            st.attributes[key] = text
        else:
            st.counters[key] = Counter(Decimal(number), None if reset_us is None else timedelta(microseconds=reset_us), last)
    for pid, tier_id, *held in tiers:
        out.setdefault(("PARTICIPANT", pid), EntityState()).tiers[tier_id] = TierState(*held)
    return out


class Store:
    """Committed state as of the start of this batch plus what earlier events of the batch did."""

    def __init__(self, con: duckdb.DuckDBPyConnection, budgets: dict[BudgetKey, Decimal],
                 legacy_budgets: dict[tuple[str, str, int], Decimal] | None = None):
        self.con = con
        self.people: dict[str, Person] = {}
        self.by_external: dict[str, str] = {}
        self.balances: dict[tuple[str, str, str, str], Decimal] = {}  # (entity type, id, asset, bucket)
        self.states: dict[tuple[str, str], EntityState] = {}
        self.budgets = budgets  # (rule_id, budget index, asset_id, period) -> consumed
        # a ledger made before budgets were counted one by one: (rule_id, asset_id, period) -> consumed
        self.legacy_budgets = legacy_budgets or {}
        self.loaded: set[str] = set()
        self.dirty_states: set[tuple[str, str]] = set()
        self.dirty_budgets: set[BudgetKey] = set()
        self.dirty_people: set[str] = set()  # participants whose status changed
        # ... and each change (its instant, the status), in processing order: `status_at`
        self.status_log: dict[str, list[tuple[datetime, str]]] = {}
        self.lots: dict[tuple[str, str, str], list[Lot]] = {}  # (entity type, id, asset) -> its lots
        # ... and those it has spent (Lot.spent), moved out of `lots` when an event commits: an
        # event copies its holders' `lots` (Tx.lots), and a holder with a long history (one
        # participant with most of a batch's events) made that copy, and every pass over its lots,
        # grow with each event, quadratic over the batch. Kept for the writer (`frames`), revived
        # by `load_lots` for a reversal.
        self.spent_lots: dict[tuple[str, str, str], list[Lot]] = {}
        self.lot_assets: set[str] = set()  # the assets in `lots`: finds a holder's lots without a scan
        self.lots_loaded: set[str] = set()  # entities whose live lots are all in `lots`
        self.lot_ids: set[str] = set()  # the ids of the lots loaded from the ledger
        self.dirty_lots: set[str] = set()
        # writer stages the set-wise paths built as frames (running.py: state; setwise_lots.py:
        # lots), written beside what the Python objects above changed
        self.staged: dict[str, list[pl.DataFrame]] = {}
        usage = db.frame(con, statement("lookups.sql", "reward_usage"))
        self.reward_counts: dict[tuple[str, str], int] = {(r, p): n for r, p, n in usage.iter_rows()}
        self.redemptions: dict[tuple[str, str], Redemption | None] = {}  # (program id, key), loaded on demand
        self.dirty_redemptions: set[tuple[str, str]] = set()
        self.created: list[Person] = []  # participants created by action targets, in stream order
        # ... each enrolled in the program of the event whose target created it (semantics.md 5.1)
        self.created_in: dict[str, str] = {}  # participant id -> program id
        # group id -> participant id -> membership, loaded per group on first use; founders: a
        # group's declared members, for a group the ledger has no members of yet (a new group)
        self.members: dict[str, dict[str, Membership]] = {}
        self.founders: dict[str, dict[str, Membership]] = {}
        self.dirty_groups: set[str] = set()
        self.tier_history: list[dict] = []  # tier changes of committed events, in stream order
        # Participants intake creates for this batch exist from the row that creates them (its
        # stream position) on: until the kernel gets there, they are not found by other rows'
        # targets and transfers. Kept as intake's frame; the lookup is built only if asked.
        self._arrivals: pl.DataFrame | None = None
        self._people: pl.DataFrame | None = None  # the same participants' id, external_id, created_at
        self._arriving: dict[str, int] | None = None

    @classmethod
    def open(cls, con: duckdb.DuckDBPyConnection) -> Store:
        usage = db.frame(con, statement("lookups.sql", "budget_consumption"))
        # every period is kept: a late event consumes its own period's budget (semantics.md 3)
        budgets = {(r, i, a, p): Decimal(c) for r, i, a, p, c in usage.iter_rows()}
        legacy = {}
        if con.execute(statement("lookups.sql", "has_legacy_budget_usage")).fetchall()[0][0]:
            old = db.frame(con, statement("lookups.sql", "legacy_budget_usage"))
            legacy = {(r, a, p): Decimal(c) for r, a, p, c in old.iter_rows()}
        return cls(con, budgets, legacy)

    def budget_opening(self, key: BudgetKey) -> Decimal:
        """What the budget (rule id, budget index, asset id, period) had consumed before this
        batch's events (or before this one, once they consumed some)."""
        if key in self.budgets:
            return self.budgets[key]
        rule_id, _, asset_id, period = key
        return self.legacy_budgets.get((rule_id, asset_id, period), Decimal(0))

    def preload(self, entity_ids: list[str], people: list[Person], *, lots: bool = True) -> None:
        """Bulk-load balances and state of the entities (participants, programs) a batch names,
        and all their live lots unless `lots` is False (the set-wise paths need only the lots
        with something due: due_lots)."""
        for p in people:
            self.add_person(p)
        ids = [i for i in set(entity_ids) if i not in self.loaded]
        if ids:
            self._load_state(ids)
        if lots:
            self.load_live_lots(entity_ids)

    def _rows(self, name: str, ids: list[str], params: dict | None = None, **kw):
        entities = pl.DataFrame({"id": ids}, schema={"id": pl.String})
        return db.frame(self.con, statement("lookups.sql", name), params, stage_entities=entities).iter_rows(**kw)

    def load_balances(self, ids: list[str]) -> None:
        """The committed balances of entities `ids` (every account they hold)."""
        for t, e, a, b, amt in self._rows("entity_balances", ids):
            self.balances[(t, e, a, b)] = Decimal(amt)

    def _load_state(self, ids: list[str]) -> None:
        self.load_balances(ids)
        for row in self._rows("participants_by_id", ids):
            self.add_person(Person(*row))
        entity_states(self._rows("entity_states", ids), self._rows("entity_tiers", ids), into=self.states)
        self.loaded.update(ids)

    def reset_counters(self, due: dict[str, datetime]) -> int:
        """Apply the `reset_after` resets due by `due[entity id]` to those entities' committed
        counters (loaded if need be) and mark them for rewriting, as Tx.state does before an
        event; returns how many entities reset. Resets due by an instant include all those due
        earlier (whole periods from the last reset), so the latest instant an entity is touched
        at stands for all of them when nothing writes its counters in between."""
        if not due:
            return 0
        self.preload(list(due), [], lots=False)
        n = 0
        for key, st in self.states.items():
            if key[1] in due and st.apply_resets(due[key[1]]):
                self.dirty_states.add(key)
                n += 1
        return n

    def reset_touched_counters(self, touches: pl.DataFrame) -> int:
        """`reset_counters` for the entities of `touches` (id, now) that have a reset due by
        their `now` (one row per entity: the latest instant it is touched at)."""
        due = db.frame(self.con, statement("lookups.sql", "due_counter_touches"), stage_touches=touches)
        return self.reset_counters(dict(due.iter_rows()))

    def opening(self, ids: list[str], wallets: list[str] = ()) -> dict[str, pl.DataFrame]:
        """The committed state of participants `ids` as frames, for the running path (which
        computes with them set-wise and never needs them as objects): `people` (id, external_id,
        status, created_at; those intake creates included), `states` (entity_states rows),
        `balances` (entity_balances rows; of the programs `wallets` too: one scan of the
        balances for both), `tiers` (entity_tiers rows)."""
        entities = pl.DataFrame({"id": ids}, schema={"id": pl.String})

        def rows(name: str, of: pl.DataFrame = entities) -> pl.DataFrame:
            return db.frame(self.con, statement("lookups.sql", name), stage_entities=of)
        known = rows("participants_by_id").cast({"created_at": pl.Datetime("us", "UTC")})
        new = (self._people.join(known.select("id"), on="id", how="anti")
               .select("id", "external_id", status=pl.lit("ACTIVE"), created_at="created_at")
               if self._people is not None else known.clear())
        everyone = pl.concat([entities, pl.DataFrame({"id": list(wallets)}, schema={"id": pl.String})])
        return {"people": pl.concat([known, new.cast(known.schema)]), "states": rows("entity_states"),
                "balances": rows("entity_balances", everyone), "tiers": rows("entity_tiers")}

    def due_lots(self, entity_ids: list[str], until: datetime) -> pl.DataFrame:
        """The lots (LOT_SCHEMA) with a change due by `until` of the entities whose lots are not
        in `lots`: enough to apply every due change up to `until` (a lot with nothing due by then
        changes nothing before it). A frame, not Lots: the set-wise paths (engine/setwise_lots.py)
        place their changes set-wise and stage them (`stage`)."""
        ids = [i for i in set(entity_ids) if i not in self.lots_loaded]
        if not ids:
            return pl.DataFrame(schema=LOT_SCHEMA)
        due = db.frame(self.con, statement("lookups.sql", "entity_due_lots"), {"until": until},
                       stage_entities=pl.DataFrame({"id": ids}, schema={"id": pl.String}))
        return due.select(list(LOT_SCHEMA)).cast(LOT_SCHEMA).filter(~pl.col("id").is_in(list(self.lot_ids)))

    def load_lots(self, holder: tuple[str, str, str], lot_ids: list[str]) -> None:
        """The holder's lots named by id, loaded from the ledger if not in memory, whatever their
        status: a reversal gives value back to the lots its redemption took it from, and
        `preload` loads only the lots that still hold value (one the redemption consumed whole is
        CONSUMED)."""
        wanted = set(lot_ids)
        spent = self.spent_lots.get(holder, [])
        if any(lot.id in wanted for lot in spent):  # live again: the reversal gives them value
            self.lots.setdefault(holder, []).extend(lot for lot in spent if lot.id in wanted)
            self.spent_lots[holder] = [lot for lot in spent if lot.id not in wanted]
        have = {lot.id for lot in self.lots.get(holder, [])}
        need = sorted(wanted - have)
        if need:
            for row in self._rows("lots_by_id", need, named=True):
                self._add_lot(row)

    def load_live_lots(self, entity_ids: list[str]) -> None:
        """All the lots of entities `entity_ids` that still hold value (and no other state)."""
        need = [i for i in set(entity_ids) if i not in self.lots_loaded]
        if need:
            for row in self._rows("entity_lots", need, named=True):
                self._add_lot(row)
            self.lots_loaded.update(need)

    def lot_debts(self, entity_ids: list[str]) -> pl.DataFrame:
        """What participants `entity_ids` owe on LOT assets at the start of the batch (entity_id,
        asset_id, owed > 0; engine.lots.owed), for the set-wise paths (engine/setwise_lots.py),
        which change no balance before they ask."""
        frame = db.frame(self.con, statement("lookups.sql", "lot_debts"),
                         stage_entities=pl.DataFrame({"id": entity_ids}, schema={"id": pl.String}))
        return frame.select("entity_id", "asset_id", pl.col("owed").cast(LOT_SCHEMA["remaining"]))

    def _add_lot(self, row: dict) -> None:
        if row["id"] in self.lot_ids:  # (loaded already, as a due lot)
            return
        lot = Lot(**{k: (Decimal(v) if k in ("amount", "remaining") else v) for k, v in row.items()})
        self.hold(lot)
        self.lot_ids.add(lot.id)

    def hold(self, lot: Lot) -> None:
        """`lot` among its holder's lots (loaded from the ledger, or made by this batch)."""
        self.lots.setdefault((lot.entity_type, lot.entity_id, lot.asset_id), []).append(lot)
        self.lot_assets.add(lot.asset_id)

    def redemption_key(self, program_id: str, redemption_id: str) -> str | None:
        """The idempotency key of the program's redemption whose id (its operation's, any case) is
        `redemption_id`: one made earlier in this batch, else one the ledger holds."""
        wanted = ids.uuid_text(redemption_id)
        if wanted is None:
            return None
        for (prog, key), found in self.redemptions.items():
            if prog == program_id and found is not None and ids.row_id_text("operation", prog, key) == wanted:
                return key
        rows = self.con.execute(statement("lookups.sql", "redemption_key"),
                                {"program_id": program_id, "id": wanted}).fetchall()
        return rows[0][0] if rows else None

    def redemption(self, program_id: str, key: str) -> Redemption | None:
        if (program_id, key) not in self.redemptions:
            rows = self.con.execute(statement("lookups.sql", "redemption"), {"program_id": program_id, "key": key}).fetchall()
            found = None
            if rows:
                k, pid, rid, aid, qty, cost, amt, ramt, rqty, status, taken, created, target, entity = rows[0]
                found = Redemption(k, pid, rid, aid, qty, cost, Decimal(amt), Decimal(ramt), rqty, status,
                                   [(lot, Decimal(a)) for lot, a in json.loads(taken)], created,
                                   target or "SYSTEM_REDEMPTION", entity)
            self.redemptions[(program_id, key)] = found
        return self.redemptions[(program_id, key)]

    def group_members(self, group_id: str) -> dict[str, Membership]:
        """The memberships (current and former) of a group as of this point of the batch."""
        if group_id not in self.members:
            rows = self.con.execute(statement("lookups.sql", "group_members"), {"group_id": group_id}).fetchall()
            self.members[group_id] = ({pid: Membership(*rest) for pid, *rest in rows} if rows
                                      else copy.deepcopy(self.founders.get(group_id, {})))
        return self.members[group_id]

    def holder_lots(self, etype: str, eid: str) -> list[list[Lot]]:
        """A holder's (participant's or group's) lots, one list per asset it holds lots of (in asset
        id order, so the due changes of several assets come out in the same order however the lots
        were loaded)."""
        return [lots for asset in sorted(self.lot_assets) if (lots := self.lots.get((etype, eid, asset)))]

    def add_person(self, p: Person) -> None:
        self.people[p.id] = p
        self.by_external[p.external_id] = p.id

    def add_new_participants(self, participants: pl.DataFrame) -> None:
        """The participants intake creates (id, external_id, created_at, created_pos: the stream
        position of the row that creates them)."""
        for pid, ext, created_at in participants.select("id", "external_id", "created_at").iter_rows():
            self.add_person(Person(pid, ext, "ACTIVE", created_at))
        self._arrivals, self._arriving = participants.select("id", "created_pos"), None
        self._people = participants.select("id", "external_id", "created_at")

    def arrived(self, participant_id: str, pos: int) -> bool:
        """Has a participant the store knows arrived by stream position `pos` (semantics.md 3)?
        One that intake creates at a later row has not yet."""
        return self._arrival_positions().get(participant_id, pos) <= pos

    def _arrival_positions(self) -> dict[str, int]:
        if self._arriving is None:
            frame = self._arrivals
            self._arriving = {} if frame is None else dict(zip(frame["id"].to_list(), frame["created_pos"].to_list()))
        return self._arriving

    def create_now(self, person: Person, program_id: str) -> Callable[[], None]:
        """A participant created by an action target of an event of `program_id`, from this
        point of the stream on; one that intake would create at a later row is created here
        instead (that row then finds it). Returns the undo, for when that event fails: the
        creation is its action's doing, rolled back with the rest (semantics.md 5 step 5)."""
        arrival = self._arrival_positions().pop(person.id, None)
        before = self.people.get(person.id)  # intake's, for a row of its own later in the stream
        was_loaded, had_lots = person.id in self.loaded, person.id in self.lots_loaded
        self.add_person(person)
        self.created.append(person)
        self.created_in[person.id] = program_id
        self.loaded.add(person.id)  # nothing of it is in the ledger yet
        self.lots_loaded.add(person.id)

        def undo() -> None:
            self.created.remove(person)
            del self.created_in[person.id]
            if before is not None:
                self.add_person(before)
            else:
                del self.people[person.id], self.by_external[person.external_id]
            if arrival is not None:
                self._arrival_positions()[person.id] = arrival
            if not was_loaded:
                self.loaded.discard(person.id)
            if not had_lots:
                self.lots_loaded.discard(person.id)
        return undo

    def find_external(self, external_id: str, pos: int) -> str | None:
        """The participant with this external id as of stream position `pos`, or None."""
        if external_id not in self.by_external:
            rows = self.con.execute(statement("lookups.sql", "participant_by_external_id"),
                                    {"external_id": external_id}).fetchall()
            if not rows:
                return None
            self.preload([rows[0][0]], [Person(*rows[0])])
        found = self.by_external[external_id]
        return found if self.arrived(found, pos) else None

    def find_id(self, participant_id: str, pos: int) -> str | None:
        """The participant with this id as of stream position `pos`, or None. Ids are UUIDs,
        read in any case and kept lowercase (docs/decisions.md "Input"), so a transfer recipient or
        a target pasted in capitals is found as the row's `participant_id` column is."""
        participant_id = participant_id.lower()
        if participant_id not in self.people:
            self.preload([participant_id], [])
        return participant_id if participant_id in self.people and self.arrived(participant_id, pos) else None

    # -- writing back -------------------------------------------------------------------------

    def state_frames(self, batch_id: int, tier_changes_before: int = 0) -> dict[str, pl.DataFrame]:
        """What this store changed, as the writer's stages; tier changes are numbered after the
        `tier_changes_before` the batch's earlier chunks wrote."""
        rows = []
        for (etype, eid) in sorted(self.dirty_states):
            st = self.states[(etype, eid)]
            rows += [(etype, eid, "TAG", t, None, None, None, None) for t in sorted(st.tags)]
            rows += [(etype, eid, "ATTRIBUTE", k, v, None, None, None) for k, v in sorted(st.attributes.items())]
            rows += [(etype, eid, "COUNTER", k, None, c.value,
                      None if c.reset_after is None else c.reset_after // timedelta(microseconds=1), c.last_reset_at)
                     for k, c in sorted(st.counters.items())]
        state = pl.DataFrame(rows, schema=STATE_SCHEMA, orient="row")
        entities = pl.DataFrame(sorted(self.dirty_states), schema={"entity_type": pl.String, "entity_id": pl.String}, orient="row")
        budgets = pl.DataFrame([(*key, self.budgets[key]) for key in sorted(self.dirty_budgets)],
                               schema={"rule_id": pl.String, "budget_index": pl.Int32, "asset_id": pl.String,
                                       "period": pl.Int64, "consumed": pl.Decimal(38, 18)}, orient="row")
        lots = pl.DataFrame(
            [(lot.id, lot.entity_type, lot.entity_id, lot.asset_id, lot.amount, lot.remaining, lot.status,
              lot.created_at, lot.expires_at, lot.matures_at, lot.reference_id, lot.program_id, lot.provisional)
             for held in (self.lots, self.spent_lots) for holder_lots in held.values() for lot in holder_lots
             if lot.id in self.dirty_lots],
            schema=LOT_SCHEMA, orient="row")
        redemptions = pl.DataFrame(
            [(prog, r.key, r.participant_id, r.reward_id, r.asset_id, r.quantity, r.unit_cost, r.amount,
              r.reversed_amount, r.reversed_quantity, r.status,
              json.dumps([[lot, amounts.plain(a)] for lot, a in r.lots_taken]), r.created_at, r.target_type, r.target_entity_id)
             for (prog, _), r in ((k, self.redemptions[k]) for k in sorted(self.dirty_redemptions))],
            schema={"program_id": pl.String, "idempotency_key": pl.String, "participant_id": pl.String,
                    "reward_id": pl.String, "asset_id": pl.String, "quantity": pl.Int64,
                    "unit_cost": pl.Decimal(38, 18), "amount": pl.Decimal(38, 18),
                    "reversed_amount": pl.Decimal(38, 18), "reversed_quantity": pl.Int64, "status": pl.String,
                    "lots_taken": pl.String, "created_at": pl.Datetime("us", "UTC"), "target_type": pl.String,
                    "target_entity_id": pl.String},
            orient="row")
        usage = pl.DataFrame([(r, p, n) for (r, p), n in sorted(self.reward_counts.items())],
                             schema={"reward_id": pl.String, "participant_id": pl.String, "redeemed_count": pl.Int64},
                             orient="row")
        statuses = pl.DataFrame([(pid, self.people[pid].status) for pid in sorted(self.dirty_people)],
                                schema={"id": pl.String, "status": pl.String}, orient="row")
        tiers = pl.DataFrame(
            [(eid, tier_id, t.level, t.achieved_at, t.reviewed_at, t.expires_at) for (etype, eid) in sorted(self.dirty_states)
             if etype == "PARTICIPANT" for tier_id, t in sorted(self.states[(etype, eid)].tiers.items())],
            schema=TIERS_SCHEMA, orient="row")
        history = pl.DataFrame([h | {"seq": (batch_id << 32) + tier_changes_before + n}
                                for n, h in enumerate(self.tier_history)],
                               schema=TIER_HISTORY_SCHEMA, orient="row")
        members = pl.DataFrame(
            [(g, pid, m.external_id, m.role, m.status, m.joined_at, m.left_at)
             for g in sorted(self.dirty_groups) for pid, m in sorted(self.members[g].items())],
            schema=MEMBERS_SCHEMA, orient="row")
        groups = pl.DataFrame({"id": sorted(self.dirty_groups)}, schema={"id": pl.String})
        frames = {"stage_state": state, "stage_state_entities": entities,
                  "stage_group_members": members, "stage_member_groups": groups, "stage_budgets": budgets,
                  "stage_participant_tiers": tiers, "stage_tier_history": history,
                  "stage_statuses": statuses, "stage_lots": lots, "stage_redemptions": redemptions,
                  "stage_reward_usage": usage}
        return frames | {name: pl.concat([frames[name], *(f.select(frames[name].columns).cast(frames[name].schema)
                                                           for f in staged)])
                         for name, staged in self.staged.items()}

    def stage(self, name: str, frame: pl.DataFrame) -> None:
        """Rows of writer stage `name` that a set-wise path built (about entities whose Python
        state above it left alone)."""
        self.staged.setdefault(name, []).append(frame)


class Tx:
    """One event's working state: reads fall through to the store, writes stay here until commit."""

    def __init__(self, store: Store, now: datetime):
        self.store = store
        self.now = now
        self.balances: dict[tuple[str, str, str, str], Decimal] = {}
        self.states: dict[tuple[str, str], EntityState] = {}
        self.budgets: dict[BudgetKey, Decimal] = {}
        self.statuses: dict[str, str] = {}
        self.lot_lists: dict[tuple[str, str, str], list[Lot]] = {}
        self.activation: dict | None = None  # CEL variables, cached until an action changes state
        # touch(participant id) / touch(group id, "GROUP"): apply what is due for it before it is
        # read (set by the kernel)
        self.touch: Callable[..., None] = lambda eid, etype="PARTICIPANT": None
        self.reward_counts: dict[tuple[str, str], int] = {}
        self.redemptions: dict[tuple[str, str], Redemption] = {}
        self.tier_changes: list[dict] = []  # tier_history rows of this event (engine/tiers.py)
        self.members: dict[str, dict[str, Membership]] = {}  # group id -> its memberships (copies)
        self.tiers_set: set[tuple[str, str]] = set()  # (participant, tier id) set by SET_TIER: no auto-qualification
        # SYSTEM events this event emits (engine/kernel.py), queued only if it commits:
        # (action type, participant id, due instant, event_data JSON, idempotency key)
        self.emitted: list[tuple[str, str, datetime, str, str]] = []
        self.emitting = None  # the kernel's engine.kernel.Emitting: enrolments for BROADCAST
        # what the event did outside the copies above (participants its targets created, and
        # their enrolments), undone in reverse order if it fails (semantics.md 5 step 5)
        self.undo: list[Callable[[], None]] = []

    def reward_count(self, reward_id: str, participant_id: str = "") -> int:
        key = (reward_id, participant_id)
        return self.reward_counts.get(key, self.store.reward_counts.get(key, 0))

    def count_reward(self, reward_id: str, participant_id: str, delta: int) -> None:
        for key in ((reward_id, ""), (reward_id, participant_id)):
            self.reward_counts[key] = self.reward_count(*key) + delta

    def redemption(self, program_id: str, key: str) -> Redemption | None:
        """A redemption for this event (a copy: a failing reversal changes nothing)."""
        if (program_id, key) not in self.redemptions:
            found = self.store.redemption(program_id, key)
            if found is None:
                return None
            self.redemptions[(program_id, key)] = copy.deepcopy(found)
        return self.redemptions[(program_id, key)]

    def record_redemption(self, program_id: str, redemption: Redemption) -> None:
        self.redemptions[(program_id, redemption.key)] = redemption

    def lots(self, holder: tuple[str, str, str]) -> list[Lot]:
        """The holder's lots of an asset for this event (copies: the event may fail)."""
        if holder not in self.lot_lists:
            self.lot_lists[holder] = [lot.copy() for lot in self.store.lots.get(holder, [])]
        return self.lot_lists[holder]

    def group_members(self, group_id: str) -> dict[str, Membership]:
        """A group's memberships for this event (copies: the event may fail)."""
        if group_id not in self.members:
            self.members[group_id] = copy.deepcopy(self.store.group_members(group_id))
        return self.members[group_id]

    def set_status(self, participant_id: str, status: str) -> None:
        self.statuses[participant_id] = status

    def balance(self, account: tuple[str, str, str, str]) -> Decimal:
        """An account (entity type, entity id, asset id, bucket) as of this point in the event."""
        if account in self.balances:
            return self.balances[account]
        return self.store.balances.get(account, Decimal(0))

    def move(self, source: tuple[str, str, str, str], dest: tuple[str, str, str, str], amount: Decimal) -> None:
        self.balances[source] = self.balance(source) - amount
        self.balances[dest] = self.balance(dest) + amount

    def state(self, etype: str, eid: str) -> EntityState:
        """The entity's state for this event. Resets due by `now` are time-driven, not the
        event's doing: they are applied to the committed state and stand even if the event fails."""
        key = (etype, eid)
        if key not in self.states:
            committed = self.store.states.get(key)
            if committed is not None and committed.apply_resets(self.now):
                self.store.dirty_states.add(key)
            self.states[key] = committed.copy() if committed is not None else EntityState()
        return self.states[key]

    def budget_consumed(self, key: BudgetKey) -> Decimal:
        """What a budget (rule id, budget index, asset id, period) has consumed before this point."""
        if key in self.budgets:
            return self.budgets[key]
        return self.store.budget_opening(key)

    def consume(self, key: BudgetKey, amount: Decimal) -> None:
        self.budgets[key] = self.budget_consumed(key) + amount

    def rollback(self) -> None:
        """The event failed: undo what it did outside its copies (a commit never comes)."""
        while self.undo:
            self.undo.pop()()

    def commit(self) -> None:
        s = self.store
        s.balances.update(self.balances)
        for key, st in self.states.items():
            if key not in s.states or s.states[key] != st:
                s.dirty_states.add(key)
            s.states[key] = st
        s.budgets.update(self.budgets)
        s.dirty_budgets.update(self.budgets)
        for pid, status in self.statuses.items():
            s.people[pid].status = status
            s.dirty_people.add(pid)
            s.status_log.setdefault(pid, []).append((self.now, status))
        s.reward_counts.update(self.reward_counts)
        s.redemptions.update(self.redemptions)
        s.dirty_redemptions.update(self.redemptions)
        s.tier_history += self.tier_changes
        for group_id, members in self.members.items():
            if members != s.members[group_id]:
                s.members[group_id] = members
                s.dirty_groups.add(group_id)
        for holder, lots in self.lot_lists.items():
            before = {lot.id: lot for lot in s.lots.get(holder, [])}
            s.dirty_lots.update(lot.id for lot in lots if before.get(lot.id) != lot)
            s.lots[holder] = [lot for lot in lots if not lot.spent()]
            if len(s.lots[holder]) < len(lots):
                s.spent_lots.setdefault(holder, []).extend(lot for lot in lots if lot.spent())
            s.lot_assets.add(holder[2])
