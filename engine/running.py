"""The running-state path: rules that read participant state, evaluated set-wise and exactly.

Meaning (semantics.md 5, invariant 6): each event sees the state all earlier events left. For
the state this path covers (counters, with lazy `reset_after`; tags; attributes; available
balances of SIMPLE assets; rule budgets; the program wallets of PREFUNDED SIMPLE assets), the
state an event sees is a running function of what earlier events *did*: a cumulative sum per
participant (counters, balances), the last write (tags, attributes), or a cumulative sum in
program-global order (budgets, wallets: what earlier events took from a budget, or drew from and
paid back to a wallet). So:

1. Guess what every event did (at first: nothing).
2. From the guess, compute the state before every event with window functions.
3. Evaluate every rule over all events at once against that state (Polars), in rule order,
   within an event applying each rule's writes before the next rule reads, and record what
   each event did and whether it failed (a CREDIT its wallet cannot pay fails its event,
   insufficient_wallet, like a DEBIT its participant cannot pay: the event then did nothing).
4. Repeat from 2 with what the events did, until nothing changes. A later round evaluates only
   the events whose inputs changed (`_stale`): the others would come out as they did.

Why the fixed point is the sequential result: what event i sees depends only on what events
before it did (a wallet's balance before event i, like a budget's consumption, is a sum over
the events before i in the stream), so by induction over the stream the only self-consistent
outcome is the one of one-event-at-a-time processing; each round fixes at least one more event
per participant (per budget period or wallet: one more in stream order), and in practice state
chains are short (a tag set once, a counter read after it is counted; a wallet that runs dry
takes about one round per credit that still fits after the first it cannot pay), so a few
rounds suffice. A batch that has not settled after MAX_ROUNDS goes to the sequential kernel.

Tiers without lifecycles ride along (the best rank reached is a running max). Anything outside
that state (targets, recipients, operations (fund and burn change wallets: those batches take the
kernel; engine/cuts.py keeps long runs of events apart from them), holds, lots of PREFUNDED assets, program state, SET_TIER, tier
lifecycles, values computed from state) is not handled here: `unsupported` says why and the
batch takes the kernel path; so does a batch by whose last instant a level its participants
hold expires (tier expiry, set by set_tier), or another program's tier reviews or rolls over
their counters (`_tier_step_due`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

import polars as pl

from engine import amounts, kernel, tiers
from engine.durations import later
from engine.catalog import Catalog, CompiledProgram, CompiledRule
from engine.catalog.compiled import CompiledTier
from engine.cel import CelProgram, NotVectorisable, PolarsContext
from engine.io.events import TS
from engine.kernel import BLOCKED_FOR_INACTIVE, INACTIVE
from engine.ledger.db import env_count
from engine.moves import INSUFFICIENT, WALLET_SHORT, ActionFailed, insufficient_message, wallet
from engine.plan import programs_unsupported
from engine.reads import Reads, keys, merge, reads, reads_field
from engine.state import STATE_SCHEMA, TIERS_SCHEMA, Store, TierState, entity_states
from engine.windows import Over, by_group

MAX_ROUNDS = 12
#: Batches (or chunks) smaller than this take the kernel: a running-path pass has a fixed cost
#: (~0.15 s of Polars plans over every rule, whatever the frame's size) that the kernel's
#: ~0.4 ms per event only reaches at a few hundred events. Both paths give the same ledger.
MIN_EVENTS = env_count("PERKFLOW_RUNNING_MIN_EVENTS", 500)
D = amounts.DECIMAL
ZERO = pl.lit(Decimal(0)).cast(D)


def unsupported(runnable: pl.DataFrame, catalog: Catalog) -> str | None:
    """Why this batch cannot take the running-state path, or None if it can."""
    if (runnable["kind"] != "event").any():
        return "operations"
    if runnable["recipient_uuid"].is_not_null().any():
        return "events with a recipient"
    why = programs_unsupported(catalog.programs[k] for k in runnable["program_key"].unique().to_list())
    if why:
        return why
    if _past_the_last_instant(runnable, catalog):
        return "a lot instant past 9999-12-31 (the kernel fails such an event)"
    return None


def _past_the_last_instant(runnable: pl.DataFrame, catalog: Catalog) -> bool:
    """Whether a static `expires_at` / `matures_at` duration from the batch's last instant is
    past the last instant the ledger holds (`durations.later`). Polars would compute it (its
    instants reach much further) and write a lot dated in year 10000 where the kernel fails the
    event; such a batch takes the kernel."""
    last = runnable["event_timestamp"].max()
    if last is None:
        return False
    spans = [spec for key in runnable["program_key"].unique().to_list() for rule in catalog.programs[key].rules
             for action in rule.actions for spec in (action.expires_at, action.matures_at) if isinstance(spec, timedelta)]
    try:
        later(last, max(spans, default=timedelta(0)))
    except ValueError:
        return True
    return False


def _tier_step_due(catalog: Catalog, opening: dict[str, pl.DataFrame], g: pl.DataFrame) -> bool:
    """Whether a time-driven tier change of a participant of the batch, in any program's tier,
    is due by the batch's last instant: a level expiring (set_tier's expires_at), or a lifecycle
    review or counter rollover of another program's tier (a program with lifecycle tiers never
    takes this path). This path models none of them, and they are not invisible to it: a
    rollover changes counters its rules read and write, and a review reads the counters as of its
    due instant, before this batch's later writes (semantics.md 3). Such a batch takes the
    kernel, which applies them before the participant's first event after them."""
    last = g["event_timestamp"].max()
    held = opening["tiers"]
    if not held.filter(pl.col("expires_at") <= last).is_empty():
        return True
    timed = [t for t in catalog.timed_tiers() if t.lifecycle is not None]
    if not timed:
        return False
    rolled = sorted({k for t in timed for k in t.rollover_keys})
    counters = opening["states"].filter((pl.col("entity_type") == "PARTICIPANT") & (pl.col("kind") == "COUNTER")
                                        & pl.col("key").is_in(rolled))
    states = entity_states(counters.iter_rows(), held.filter(pl.col("tier_id").is_in([t.sid for t in timed])).iter_rows())
    return any((step := tiers.next_step(timed, st)) is not None and step[0] <= last for st in states.values())


@dataclass
class Running:
    """What the running path computed: the Outcome parts, plus counts for the run report."""
    status: pl.DataFrame       # pos, error_code, error_message, rule_order (failed events only)
    effects: pl.DataFrame      # EFFECT_SCHEMA + entity_id, wallet_id (the PREFUNDED asset's program, else null)
    evaluations: pl.DataFrame  # EVAL_SCHEMA + rule_order
    rolled_back: pl.Series     # amounts the failed events moved before they failed (engine/balance_range.py)
    rounds: int
    conditions: int            # (event, rule) conditions evaluated set-wise in the final round


def run(runnable: pl.DataFrame, catalog: Catalog, store: Store, helpers) -> Running | None:
    """The batch's outcome on the running path, or None when it does not settle (or some
    state-reading expression has no exact vectorised form): the caller takes the kernel path."""
    g = runnable.sort("pos").with_columns(pid=pl.col("subject_id"))
    wallets = _wallets(g, catalog)
    opening = store.opening(g["pid"].unique().to_list(),  # (lots: engine/setwise_lots.py)
                            sorted({account[1] for account in wallets.values()}))
    if _tier_step_due(catalog, opening, g):
        _trace("running path declined: a tier expiry, review or rollover of its participants is due by its "
               "last instant")
        return None
    f = _features(g, catalog, opening)
    if f is None:
        _trace("running path declined: opening state it does not model (a counter key with another "
               "reset_after, or a tier level no longer in the program file)")
        return None
    f.wallets = _held(wallets, opening["balances"])
    keys = g["program_key"].unique(maintain_order=True).to_list()
    passes = {k: _ProgramPass(catalog.programs[k], g.filter(pl.col("program_key") == k), f, helpers) for k in keys}
    declined = [p.declined for p in passes.values() if p.declined]
    if declined:
        _trace(f"running path declined: {declined[0]}")
        return None
    f.tags = sorted(set(f.tags).union(*(p.tags_written for p in passes.values())))
    g = _opening(g, f, opening, store)
    did = _nothing_done(g, f)
    at = {k: g.with_row_index("_i").filter(pl.col("program_key") == k)["_i"] for k in keys}  # each program's events
    try:
        before = _before(g, did, f)
        todo = {k: None for k in keys}  # the first round evaluates every event
        evaluated = []  # events per round, for the trace
        for rounds in range(1, MAX_ROUNDS + 1):
            new = did
            evaluated.append(0)
            for k, p in passes.items():
                rows = at[k] if todo[k] is None else at[k].gather(todo[k])
                evaluated[-1] += len(rows)
                if len(rows):
                    new = _splice(new, rows, p.run(before[rows], final=False, rows=todo[k]))
            if new.equals(did):
                break
            after = _before(g, new, f, since=(did, before))
            todo = _stale(passes, at, before, after)
            did, before = new, after
        else:
            _trace(f"running path did not settle in {MAX_ROUNDS} rounds")
            return None
        _trace(f"running path settled in {rounds} rounds, evaluating {evaluated} events")
        for k, p in passes.items():
            p.run(before[at[k]], final=True)
    except (_Unsettled, pl.exceptions.PolarsError, ArithmeticError) as e:
        # e.g. a counter value with more decimals than a DECIMAL(38, 18) column holds: the
        # kernel decides such batches, one event at a time
        _trace(f"running path declined: {type(e).__name__}: {e}")
        return None
    _write_back(before, f, opening, store)
    return Running(
        status=pl.concat([p.status for p in passes.values()]),
        effects=pl.concat([p.effects for p in passes.values()]),
        evaluations=pl.concat([p.evaluations for p in passes.values()]),
        rolled_back=pl.concat([p.rolled_back for p in passes.values()]),
        rounds=rounds, conditions=sum(p.conditions for p in passes.values()))


def _splice(did: pl.DataFrame, rows: pl.Series, new: pl.DataFrame) -> pl.DataFrame:
    """`did` with the rows at `rows` replaced by `new`'s (the same columns)."""
    return pl.DataFrame({c: did[c].clone().scatter(rows, new[c]) for c in did.columns})


def _stale(passes: dict, at: dict[str, pl.Series], before: pl.DataFrame, after: pl.DataFrame) -> dict[str, pl.Series]:
    """Per program, the events (indices among its events) to evaluate again now that the state
    before every event went from `before` to `after`: those whose inputs changed (_ProgramPass.stale).

    Why the rounds still reach the same fixed point: an event's outcome is a function of the event
    and of the state before it that its evaluation reads, so an event whose read state is what it
    was at its last evaluation would come out the same; every round thus yields the `did` that
    evaluating every event would. An event's read state is unchanged when none of the columns it
    may read changed since the round it was last evaluated in: it was not stale in any round since,
    so each of those columns is the same from round to round (budget consumption and wallets
    aside, which `stale` compares with what the event's budget and wallet checks last saw)."""
    cols = sorted({c for p in passes.values() for _, read in p.reads() for c in read})
    changed = pl.DataFrame({c: after[c].ne_missing(before[c]) for c in cols}) if cols else pl.DataFrame()
    out = {}
    for k, p in passes.items():
        mine = changed[at[k]] if cols else changed
        consumed = {key: after[_col("bc", key)].gather(at[k]) for key, _ in p.budgets}
        wallets = {key: after[_col("wb", key)].gather(at[k]) for key in p.wallets}
        out[k] = p.stale({c: mine[c] for c in mine.columns}, consumed, wallets)
    return out


def _col(kind: str, key: str) -> str:
    return f"{kind}:{key}"


@dataclass
class _Features:
    """The state the batch can read or write. Counters, tags, attributes and balances are kept
    as one column each (`c:key`, `t:tag`, `a:key`, `b:asset id`) per event."""
    counters: dict[str, timedelta | None]   # every counter key (opening or written) -> reset_after
    tags: list[str]                         # tags some rule writes (the others never change)
    attrs: list[str]                        # every attribute key (opening or written)
    assets: dict[str, str]                  # asset id -> symbol, for every program asset
    budgets: dict[tuple[str, str], tuple]   # (rule sid, budget index) -> (budget, program key)
    tiers: dict[str, CompiledTier]          # tier id -> tier (`lv:` rank before, `up:` rank after an upgrade)
    #: program wallets (`program id:asset id`) -> what they held before the batch (`wb:` before an
    #: event, `wd:` what it paid in (DEBIT) less what it drew (CREDIT))
    wallets: dict[str, Decimal] = field(default_factory=dict)
    opening_tags: bool = False              # some participant has tags no rule writes (set by _opening)

    def written(self) -> list[str]:
        """Columns of what an event did: counter increments and writes, last tag and attribute
        writes, balance changes, budget consumption."""
        return ([_col("inc", k) for k in self.counters] + [_col("w", k) for k in self.counters]
                + [_col("tw", t) for t in self.tags] + [_col("aw", a) for a in self.attrs]
                + [_col("d", s) for s in self.assets] + [_col("take", f"{r}:{a}") for r, a in self.budgets]
                + [_col("acc", f"{r}:{a}") for r, a in self.budgets] + [_col("up", t) for t in self.tiers]
                + [_col("wd", w) for w in self.wallets])


def _features(g: pl.DataFrame, catalog: Catalog, opening: dict[str, pl.DataFrame]) -> _Features | None:
    counters: dict[str, timedelta | None] = {}
    tags: set[str] = set()
    attrs: set[str] = set()
    assets: dict[str, str] = {}
    budgets: dict = {}
    tiers: dict[str, CompiledTier] = {}
    for key in g["program_key"].unique(maintain_order=True).to_list():
        program = catalog.programs[key]
        tiers |= {t.sid: t for t in program.tiers.values()}
        for symbol in program.assets:
            assets[catalog.asset_sids[symbol]] = symbol
        for rule in program.active_rules:
            for b in rule.budgets:
                budgets[(rule.sid, str(b.index))] = (b, key)  # each budget on its own, also two on one asset
            for a in rule.actions:
                if a.type == "COUNTER":
                    counters[a.key] = a.reset_after
                elif a.type in ("TAG", "UNTAG") and isinstance(a.tag, str):
                    tags.add(a.tag.lower())  # expression-valued tags: added by _ProgramPass
                elif a.type == "SET_ATTRIBUTE":
                    attrs.add(a.key)
    states = opening["states"].filter(pl.col("entity_type") == "PARTICIPANT")
    attrs.update(states.filter(pl.col("kind") == "ATTRIBUTE")["key"].to_list())
    for tier_id, level in opening["tiers"].select("tier_id", "level").unique().iter_rows():
        if tier_id in tiers and level not in tiers[tier_id].by_key:
            return None  # a level since removed from the program file: the kernel's rules apply
    for k, reset_us in states.filter(pl.col("kind") == "COUNTER").select("key", "reset_after_us").unique().iter_rows():
        # one reset_after per key, whoever wrote it: else the kernel's per-counter update rules apply
        reset = None if reset_us is None else timedelta(microseconds=reset_us)
        if counters.setdefault(k, reset) != reset:
            return None
    return _Features(counters, sorted(tags), sorted(attrs), assets, budgets, tiers)


def _wallets(g: pl.DataFrame, catalog: Catalog) -> dict[str, tuple]:
    """The program wallets the batch's rules move value from or to (CREDITs and DEBITs of
    PREFUNDED assets), keyed `program id:asset id`: their accounts."""
    held = {}
    for key in g["program_key"].unique(maintain_order=True).to_list():
        program = catalog.programs[key]
        held |= {_wallet_key(program, a): wallet(program.sid, a.asset_sid) for rule in program.active_rules
                 for a in rule.actions if _draws_on_wallet(a)}
    return held


def _held(wallets: dict[str, tuple], balances: pl.DataFrame) -> dict[str, Decimal]:
    """What each of `wallets` held before the batch, from the committed `balances` (Store.opening)."""
    amounts = {tuple(account): amount
               for *account, amount in balances.filter(pl.col("entity_type") == "PROGRAM_WALLET").iter_rows()}
    return {k: amounts.get(account, Decimal(0)) for k, account in wallets.items()}


def _draws_on_wallet(action) -> bool:
    return action.type in ("CREDIT", "DEBIT") and action.asset.issuance_policy == "PREFUNDED"


def _wallet_key(program: CompiledProgram, action) -> str:
    return f"{program.sid}:{action.asset_sid}"


def _opening(g: pl.DataFrame, f: _Features, opening: dict[str, pl.DataFrame], store: Store) -> pl.DataFrame:
    """Each event with its participant's committed state (`o_` columns) and its budget periods."""
    people = opening["people"].select(pid="id", ext="external_id", status="status", created_at="created_at")
    st = opening["states"].filter(pl.col("entity_type") == "PARTICIPANT").rename({"entity_id": "pid"})
    tags = st.filter(pl.col("kind") == "TAG")
    other = (tags.filter(~pl.col("key").is_in(f.tags)).group_by("pid").agg(o_tags=pl.col("key").sort()))
    cols = [pl.col("o_tags").fill_null(pl.lit([], pl.List(pl.String)))]
    # tp: where a written tag would go among the participant's other tags (bisect)
    cols += [pl.col("o_tags").list.eval(pl.element() < t).list.sum().fill_null(0).cast(pl.Int64).alias(_col("tp", t))
             for t in f.tags]

    def pick(kind: str, key: str, value: str, name: str) -> pl.Expr:
        return pl.col(value).filter((pl.col("kind") == kind) & (pl.col("key") == key)).first().alias(name)
    aggs = ([(pl.col("key") == t).filter(pl.col("kind") == "TAG").any().alias(_col("o_t", t)) for t in f.tags]
            + [pick("COUNTER", k, "number_value", _col("o_c", k)) for k in f.counters]
            + [pick("COUNTER", k, "last_reset_at", _col("o_r", k)) for k in f.counters]
            + [pick("ATTRIBUTE", a, "text_value", _col("o_a", a)) for a in f.attrs])
    state = st.group_by("pid").agg(aggs) if aggs else st.select("pid").unique()
    bal = opening["balances"].filter(pl.col("entity_type") == "PARTICIPANT").rename({"entity_id": "pid"})
    bal_cols = [pl.col("amount").filter((pl.col("asset_id") == s) & (pl.col("bucket") == bucket)).sum()
                .alias(_col(prefix, s)) for s in f.assets
                for bucket, prefix in (("AVAILABLE", "o_b"), ("HELD", "o_h"), ("DEFERRED", "o_df"))]
    ranks = pl.DataFrame([(sid, lv.key, lv.rank) for sid, tier in f.tiers.items() for lv in tier.levels],
                         schema={"tier_id": pl.String, "level": pl.String, "rank": pl.Int64}, orient="row")
    lv = opening["tiers"].join(ranks, on=["tier_id", "level"]).rename({"participant_id": "pid"})
    lv_cols = [pl.col("rank").filter(pl.col("tier_id") == sid).first().alias(_col("o_lv", sid)) for sid in f.tiers]
    o = people.join(other, on="pid", how="left").join(state, on="pid", how="left")
    if bal_cols:
        o = o.join(bal.group_by("pid").agg(bal_cols), on="pid", how="left")
    if lv_cols:
        o = o.join(lv.group_by("pid").agg(lv_cols), on="pid", how="left")
    zero = pl.lit(Decimal(0)).cast(D)
    o = o.with_columns(*cols, *[pl.col(_col("o_t", t)).fill_null(False) for t in f.tags],
                       *[pl.col(_col(p, s)).fill_null(zero) for s in f.assets for p in ("o_b", "o_h", "o_df")])
    f.opening_tags = f.opening_tags or bool(o["o_tags"].list.len().sum())
    schema = {"pid": pl.String, "ext": pl.String, "status": pl.String, "created_at": TS, "o_tags": pl.List(pl.String)}
    schema |= {_col("o_c", k): D for k in f.counters} | {_col("o_r", k): TS for k in f.counters}
    schema |= {_col("o_t", t): pl.Boolean for t in f.tags} | {_col("tp", t): pl.Int64 for t in f.tags}
    schema |= {_col("o_a", a): pl.String for a in f.attrs}
    schema |= {_col(p, s): D for s in f.assets for p in ("o_b", "o_h", "o_df")}
    schema |= {_col("o_lv", t): pl.Int64 for t in f.tiers}
    o = o.select(list(schema)).cast(schema)
    g = g.join(o, on="pid", how="left", maintain_order="left")
    for (rule_sid, index), (budget, key) in f.budgets.items():
        bp, o_bc = _col("bp", f"{rule_sid}:{index}"), _col("o_bc", f"{rule_sid}:{index}")
        stamps = g["event_timestamp"].filter(g["program_key"] == key).unique().sort()
        at = pl.DataFrame({"event_timestamp": stamps, bp: _monotone(stamps, budget.period)})
        used = at.select(pl.col(bp).unique())
        used = used.with_columns(pl.Series(o_bc, [store.budget_opening((rule_sid, budget.index, str(budget.asset_id), q)) for q in used[bp]], dtype=D))
        mine = pl.col("program_key") == key
        g = (g.join(at.join(used, on=bp), on="event_timestamp", how="left", maintain_order="left")
             .with_columns(pl.when(mine).then(pl.col(bp)), pl.when(mine).then(pl.col(o_bc))))
    return g


def _monotone(xs: pl.Series, fn) -> pl.Series:
    """[fn(x) for x in xs] (Int64) for ascending `xs` and a non-decreasing `fn`, such as the
    period of a budget an instant falls in (periods follow one another in time). Where fn agrees
    at both ends of a range it agrees throughout, so fn is called about twice per change of
    value and halving, not once per event (a Python call per event took seconds at 1M events)."""
    values, lengths = [], []

    def fill(lo: int, hi: int, at_lo, at_hi) -> None:  # xs[lo..hi], both ends included
        if at_lo == at_hi:
            values.append(at_lo)
            lengths.append(hi - lo + 1)
        elif hi == lo + 1:
            values.extend((at_lo, at_hi))
            lengths.extend((1, 1))
        else:
            mid = (lo + hi) // 2
            fill(lo, mid, at_lo, fn(xs[mid]))
            fill(mid + 1, hi, fn(xs[mid + 1]), at_hi)

    if len(xs):
        fill(0, len(xs) - 1, fn(xs[0]), fn(xs[len(xs) - 1]))
    return pl.Series(values, dtype=pl.Int64).gather(pl.int_range(len(values), eager=True).repeat_by(pl.Series(lengths)).explode())


#: Kinds of the columns of the state before an event that depend on earlier events of its
#: participant (`_before`): counters, tags, attributes, balances, tier ranks.
_STATE = ("c", "t", "a", "b", "lv")

#: Each kind of what-an-event-did column: its dtype and its value for an event that did nothing
#: (amounts 0, flags false, writes and upgrades absent).
_DID = {"inc": (D, Decimal(0)), "d": (D, Decimal(0)), "take": (D, Decimal(0)), "wd": (D, Decimal(0)), "w": (pl.Boolean, False),
        "acc": (pl.Boolean, False), "tw": (pl.Boolean, None), "aw": (pl.String, None), "up": (pl.Int64, None)}


def _nothing(f: _Features, n: int) -> dict[str, pl.Series]:
    """What-an-event-did columns for `n` events that did nothing."""
    return {name: _const(_DID[kind][1], n, _DID[kind][0])
            for name in f.written() for kind in (name.split(":", 1)[0],)}


def _nothing_done(g: pl.DataFrame, f: _Features) -> pl.DataFrame:
    """The first guess: no event did anything."""
    return pl.DataFrame({"pos": g["pos"], "ok": _const(True, len(g), pl.Boolean)} | _nothing(f, len(g)))


def _before(g: pl.DataFrame, did: pl.DataFrame, f: _Features, since: tuple[pl.DataFrame, pl.DataFrame] | None = None
            ) -> pl.DataFrame:
    """The state every event sees before its first rule, given what every event did (`did`,
    row-aligned with `g`): running sums and last writes per participant, in stream order; budget
    consumption and wallet balances in program-global order. `g`, `did` and the state, side by side.

    With `since` = (an earlier `did`, its `_before`), only what may have changed is computed again
    (the window functions over 1M events took seconds each): only the state columns computed from
    a did-column that changed, and of those only the participants with an event that did
    otherwise (a participant's state is a function of its own events)."""
    x = pl.concat([g, did.drop("pos")], how="horizontal")
    if since is None:
        state = _participant_state(x.lazy(), f).collect()
        moved = None
    else:
        was, prior = since
        moved = {c for c in did.columns if c != "pos" and not did[c].equals(was[c])}
        state = prior.select(c for c in prior.columns if c.split(":", 1)[0] in _STATE + ("per", "anchor"))
        otherwise = did.select(pl.any_horizontal(pl.col(c).ne_missing(was[c]) for c in moved)).to_series() \
            if moved else _const(False, len(g), pl.Boolean)
        mine = g["pid"].is_in(g["pid"].filter(otherwise).unique().implode())
        rows = mine.arg_true()
        if len(rows) > len(g) // 2:  # most of them: the subset would cost more than it saves
            rows = None
        # lazily: only the columns the state is computed from are filtered
        fresh = _participant_state(x.lazy() if rows is None else x.lazy().filter(mine), f, moved).collect()
        state = state.with_columns(fresh.get_columns()) if rows is None else state.with_columns(
            state[c].clone().scatter(rows, fresh[c]) for c in fresh.columns)
    prior_sum = lambda c, by: pl.col(c).cum_sum().over(by) - pl.col(c)  # noqa: E731  (strictly earlier rows)
    budgets = {}
    for r, a in f.budgets:
        key = f"{r}:{a}"
        if moved is None or _col("take", key) in moved:
            budgets[_col("bc", key)] = (pl.col(_col("o_bc", key)) + prior_sum(_col("take", key), _col("bp", key))).cast(D)
        else:
            budgets[_col("bc", key)] = since[1][_col("bc", key)]
    for w, opening in f.wallets.items():  # (a wallet's events are its program's: no partition)
        if moved is None or _col("wd", w) in moved:
            budgets[_col("wb", w)] = (pl.lit(opening, D) + pl.col(_col("wd", w)).cum_sum() - pl.col(_col("wd", w))).cast(D)
        else:
            budgets[_col("wb", w)] = since[1][_col("wb", w)]
    return pl.concat([x, state, x.select(**budgets)], how="horizontal")


def _participant_state(x: pl.LazyFrame, f: _Features, moved: set[str] | None = None) -> pl.LazyFrame:
    """The state before each event of `x` (every event of each of its participants, and what
    each did) that depends on earlier events of its participant; and the counters' reset periods.
    With `moved`, only the columns computed from those did-columns. (A participant with one
    event in `x` has nothing before it: engine/windows.py computes those without `over`.)"""
    return by_group(x, "pid", lambda rows, win: _state_columns(rows, f, moved, win))


def _state_columns(x: pl.LazyFrame, f: _Features, moved: set[str] | None, win: Over) -> pl.LazyFrame:
    """_participant_state's columns (and `_i`) with the windows `win`."""
    prior_sum = lambda c, *by: win.total(pl.col(c), *by) - pl.col(c)  # noqa: E731  (strictly earlier rows)
    needed = lambda *did: moved is None or not moved.isdisjoint(did)  # noqa: E731
    out, periods = {}, []
    for k, reset in f.counters.items():
        w, inc, o_c, o_r = _col("w", k), _col("inc", k), _col("o_c", k), _col("o_r", k)
        if not needed(w, inc):
            continue
        written_before = win.total(pl.col(w).cast(pl.Int64)) - pl.col(w).cast(pl.Int64) > 0
        exists = pl.col(o_c).is_not_null() | written_before
        if reset is None:
            value = pl.col(o_c).fill_null(Decimal(0)) + prior_sum(inc)
        else:
            # periods of reset_after from the counter's last reset (or creation): a counter is 0
            # again once a period has passed (state.EntityState.apply_resets)
            anchor = pl.coalesce(pl.col(o_r), win.first_where(pl.col("event_timestamp"), pl.col(w)))
            period = ((pl.col("event_timestamp") - anchor).dt.total_microseconds() // (reset // timedelta(microseconds=1))).clip(0)
            x = x.with_columns(**{_col("per", k): period, _col("anchor", k): anchor})
            periods += [_col("per", k), _col("anchor", k)]
            value = (pl.when(pl.col(_col("per", k)) == 0).then(pl.col(o_c).fill_null(Decimal(0))).otherwise(ZERO)
                     + prior_sum(inc, _col("per", k)))
        out[_col("c", k)] = pl.when(exists).then(value.cast(D))
    for t in f.tags:
        if needed(_col("tw", t)):
            out[_col("t", t)] = pl.coalesce(win.last(pl.col(_col("tw", t))), pl.col(_col("o_t", t)))
    for a in f.attrs:
        if needed(_col("aw", a)):
            out[_col("a", a)] = pl.coalesce(win.last(pl.col(_col("aw", a))), pl.col(_col("o_a", a)))
    for s in f.assets:
        if needed(_col("d", s)):
            out[_col("b", s)] = (pl.col(_col("o_b", s)) + prior_sum(_col("d", s))).cast(D)
    for t in f.tiers:  # auto-qualification only ever upgrades: the best rank reached so far
        if needed(_col("up", t)):  # (cum_max leaves the rows without an upgrade null: carried forward)
            out[_col("lv", t)] = pl.max_horizontal(pl.col(_col("o_lv", t)), win.best(pl.col(_col("up", t))))
    return x.select("_i", *periods, **out)


def _const(value, n: int, dtype: pl.DataType) -> pl.Series:
    # What pl.repeat(value, n, eager=True) gives (name included), without a lazy query per
    # call: 20x cheaper, and a round makes thousands of these on small batches.
    return pl.Series("literal", [value], dtype=dtype).new_from_index(0, n)


def _float(name: str) -> pl.Expr:
    """A DECIMAL column as CEL sees it: the double nearest its decimal text, like float(Decimal)."""
    return pl.col(name).cast(pl.String).cast(pl.Float64)


#: A struct needs a field: a map with no keys is a struct whose one field is always null (absent).
NO_KEY = "\u0000"


def _struct(fields: dict[str, tuple[pl.Expr, pl.DataType]], empty: pl.DataType = pl.Float64) -> tuple[pl.Expr, pl.Struct]:
    """A struct of named (expression, dtype) fields, and its dtype."""
    fields = fields or {NO_KEY: (pl.lit(None, dtype=empty), empty)}
    return (pl.struct([e.alias(k) for k, (e, _) in fields.items()]),
            pl.Struct({k: d for k, (_, d) in fields.items()}))


def _widen(mask: pl.Series, rows: pl.Series | None, n: int) -> pl.Series:
    """A mask over the events at `rows` (None: all) as a mask over all `n` events."""
    return mask if rows is None else _const(False, n, pl.Boolean).scatter(rows, mask)


def _narrow(series: pl.Series, rows: pl.Series | None) -> pl.Series:
    """A series over all events, at `rows` (None: all)."""
    return series if rows is None else series.gather(rows)


def _tags(f: _Features) -> pl.Expr:
    """The participant's tags, sorted: its opening tags that no rule writes (`o_tags`, sorted)
    merged with the written ones that are set. Each written tag goes in at its place among the
    opening ones (`tp:` column, _opening): a per-row list sort took most of a condition's time."""
    if not f.tags:
        return pl.col("o_tags")
    pieces, at = [], pl.lit(0, dtype=pl.Int64)
    for t in f.tags:  # sorted
        if f.opening_tags:
            pieces.append(pl.col("o_tags").list.slice(at, pl.col(_col("tp", t)) - at))
            at = pl.col(_col("tp", t))
        pieces.append(pl.when(pl.col(_col("t", t))).then(pl.lit(t)).otherwise(pl.lit(None, dtype=pl.String)))
    if f.opening_tags:
        pieces.append(pl.col("o_tags").list.slice(at))
    return pl.concat_list(pieces).list.drop_nulls()


class _ProgramPass:
    """One program's rules over its events, against a given state before each event."""

    def __init__(self, program: CompiledProgram, sub: pl.DataFrame, f: _Features, helpers):
        self.program, self.f, self.h = program, f, helpers
        self.frame, self.n = helpers.Frame(sub), len(sub)
        self.stats = helpers.Stats()
        self.symbols = {catalog_sid: sym for catalog_sid, sym in f.assets.items() if sym in program.assets}
        self.declined = "event_data of mixed shapes (no struct column)" if self.frame.ctx is None else None
        self.conditions = 0
        self.windows, self.pre, self.exprs, self.parts, self.amount_cache, self.value_cache = {}, {}, {}, {}, {}, {}
        self.tiers = list(program.tiers.values())
        self.budgets = [(f"{rule.sid}:{b.index}", b) for rule in program.active_rules for b in rule.budgets]
        #: budget key -> (consulted, total asked, over the limit) per event, as last evaluated
        self.checked: dict[str, tuple[pl.Series, pl.Series, pl.Series]] = {}
        #: asset id -> its program wallet's key, for the PREFUNDED assets the rules move
        self.wallet_of = {a.asset_sid: _wallet_key(program, a) for rule in program.active_rules
                          for a in rule.actions if _draws_on_wallet(a)}
        self.wallets = sorted(set(self.wallet_of.values()))
        #: wallet key -> (lowest, highest) wallet balance before each event for which its wallet
        #: checks come out as last evaluated: `lo` the most any passed check needed (null: none
        #: passed), `hi` what its failed check needed (null: none failed; it fails the event)
        self.wallet_checked: dict[str, tuple[pl.Series, pl.Series]] = {}
        self.read_sets: list[tuple[pl.Series | None, list[str]]] | None = None
        self.benefit_types = {}
        for tier in self.tiers:  # a struct column needs one shape of benefits per tier
            shapes = {pl.select(pl.lit(lv.cel_benefits or None)).dtypes[0] for lv in tier.levels}
            if len(shapes) > 1:
                self.declined = f"tier {tier.key}: benefits of different shapes"
            self.benefit_types[tier.sid] = shapes.pop()
        if self.declined:
            return
        for rule in program.active_rules:
            window = helpers.window(sub, rule)  # one value when the rule has no window: every event
            self.windows[rule.sid] = window if len(window) == self.n else _const(window[0], self.n, pl.Boolean)
            if "participant" in rule.condition.variables:
                try:
                    self.exprs[rule.sid] = self._compile(rule.condition)
                except NotVectorisable:
                    self.exprs[rule.sid] = None  # the row path, per event, against the same state
            else:
                self.pre[rule.sid] = helpers.condition(self.frame, rule, self.stats, False)
            for action in rule.actions:  # amounts that read state: evaluated per round, vectorised
                if isinstance(action.amount, CelProgram) and "participant" in action.amount.variables:
                    try:
                        self.exprs[(rule.sid, action.index)] = self._compile(action.amount)
                    except NotVectorisable as e:
                        self.declined = f"rule {rule.key}: amount: {e}"
                        return
        # every tag an expression may write, so that each is a column (evaluated for all events)
        self.tags_written: set[str] = set()
        every = _const(True, len(sub), pl.Boolean)
        for rule in program.active_rules:
            for action in rule.actions:
                if action.type in ("TAG", "UNTAG") and isinstance(action.tag, CelProgram):
                    _, values = self._values(rule, action, every)
                    self.tags_written.update(values.drop_nulls().to_list())

    def _compile(self, prog: CelProgram) -> tuple[pl.Expr, Reads]:
        """The expression, against a participant struct of only the parts it reads."""
        r = reads(prog)
        ctx = PolarsContext(variables={"event": self.frame.ctx.variables["event"], "now": (pl.col("event_timestamp"), TS),
                                       "participant": (pl.col("participant"), self._participant(r)[1])})
        return prog.to_polars(ctx), r

    def _evaluate(self, cur: pl.DataFrame, key) -> pl.Series:
        """A compiled expression that reads the participant, over the events of `cur`."""
        expr, r = self.exprs[key]
        if key not in self.parts:  # built on first use: the tag columns are known by then (run)
            self.parts[key] = self._participant(r)[0]
        # with_columns, not select: a constant expression must broadcast to every event
        return cur.with_columns(participant=self.parts[key]).with_columns(__v=expr)["__v"]

    def _participant(self, r: Reads = None) -> tuple[pl.Expr, pl.Struct]:
        """The participant as CEL sees it (engine.state), with the parts `r` reads (None: all):
        counters and balances as doubles, a tier not held absent. The struct and its dtype."""
        f = self.f
        fields = {"id": (pl.col("pid"), pl.String), "external_id": (pl.col("ext"), pl.String),
                  "status": (pl.col("status"), pl.String), "created_at": (pl.col("created_at"), TS)}
        if reads_field(r, "tags"):
            fields["tags"] = (_tags(f), pl.List(pl.String))
        if reads_field(r, "counters"):
            fields["counters"] = _struct({k: (_float(_col("c", k)), pl.Float64) for k in keys(r, "counters", list(f.counters))})
        if reads_field(r, "attributes"):
            fields["attributes"] = _struct({a: (pl.col(_col("a", a)), pl.String) for a in keys(r, "attributes", f.attrs)},
                                           pl.String)
        if reads_field(r, "balances"):
            fields["balances"] = _struct({
                sym: _struct({"available": (_float(_col("b", s)), pl.Float64), "held": (_float(_col("o_h", s)), pl.Float64),
                              "deferred": (_float(_col("o_df", s)), pl.Float64)})
                for s, sym in self.symbols.items() if sym in keys(r, "balances", list(self.symbols.values()))})
        if reads_field(r, "tiers"):
            held = {}
            for tier in self.tiers:  # a tier without a level is absent (null)
                if tier.key not in keys(r, "tiers", [t.key for t in self.tiers]):
                    continue
                rank = pl.col(_col("lv", tier.sid))
                level, benefits = pl.lit(None, dtype=pl.String), pl.lit(None, dtype=self.benefit_types[tier.sid])
                for lv in tier.levels:
                    level = pl.when(rank == lv.rank).then(pl.lit(lv.key)).otherwise(level)
                    benefits = pl.when(rank == lv.rank).then(pl.lit(lv.cel_benefits or None)).otherwise(benefits)
                one, dtype = _struct({"level": (level, pl.String), "rank": (rank, pl.Int64),
                                      "benefits": (benefits, self.benefit_types[tier.sid])})
                held[tier.key] = (pl.when(rank.is_not_null()).then(one), dtype)
            fields["tiers"] = _struct(held)
        return _struct({k: v for k, v in fields.items() if reads_field(r, k)})

    def _activations(self, cur: pl.DataFrame, mask: pl.Series) -> list[dict]:
        """The row path's variables for the masked events (to word an error as the kernel does)."""
        rows = cur.filter(mask).with_columns(participant=self._participant()[0])
        events = self.h.event_dicts(rows["event"])
        out = []
        for ev, now, p in zip(events, rows["event_timestamp"].to_list(), rows["participant"].to_list()):
            person = {k: p[k] for k in ("id", "external_id", "status", "created_at", "tags")}
            person["counters"] = {k: v for k, v in p["counters"].items() if v is not None and k != NO_KEY}
            person["attributes"] = {k: v for k, v in p["attributes"].items() if v is not None and k != NO_KEY}
            person["tiers"] = {}
            for tier in self.tiers:  # as engine.tiers.cel_view shows them
                held = (p["tiers"] or {}).get(tier.key)
                if held is not None:
                    level = tier.by_key[held["level"]]
                    person["tiers"][tier.key] = {"level": level.key, "rank": level.rank, "benefits": level.cel_benefits}
            person["balances"] = {k: v for k, v in p["balances"].items() if k != NO_KEY}
            out.append({"event": ev or {}, "now": now, "participant": person})
        return out

    def _amounts(self, rule: CompiledRule, action, matched: pl.Series, rows: pl.Series | None):
        """(code, message, amount) of the events at `rows` (None: all), filled where `matched`;
        computed once per event."""
        key = (rule.sid, action.index)
        matched = _widen(matched, rows, self.n)
        n = self.n
        have = self.amount_cache.get(key)
        if have is None:
            have = self.amount_cache[key] = (_const(False, n, pl.Boolean), _const(None, n, pl.String),
                                             _const(None, n, pl.String), _const(None, n, D))
        done, code, msg, amount = have
        todo = matched & ~done
        if todo.any():
            c, m, a = self.h.amounts(self.frame, todo, action, self.stats, False)
            idx = todo.arg_true()
            code, msg, amount = code.scatter(idx, c), msg.scatter(idx, m), amount.scatter(idx, a.cast(D))
            have = self.amount_cache[key] = (done | todo, code, msg, amount)
        return tuple(_narrow(x, rows) for x in have[1:])

    def _state_amounts(self, cur: pl.DataFrame, rule: CompiledRule, action, matched: pl.Series):
        """(code, message, amount) of an amount that reads state, against the state `cur`."""
        n = len(matched)
        values = self._evaluate(cur, (rule.sid, action.index))
        if not (values.dtype.is_integer() or values.dtype.is_float()):
            raise _Unsettled(f"rule {rule.key}: amount is not a number column")
        sub = values.filter(matched)
        text, err = amounts.series_text(sub)
        missing = sub.is_null()
        errs = []
        if missing.any():  # the row path decides: an error, worded as the kernel words it, or a value
            idx = matched.arg_true().filter(missing)  # (a CEL null inside a list is no error there)
            vals, errs = self.h.row_eval(action.amount, self._activations(cur, _const(False, n, pl.Boolean).scatter(idx, True)))
            pairs = [amounts.python_value_text(v) if e is None else (None, None) for v, e in zip(vals, errs)]
            text = text.scatter(missing.arg_true(), pl.Series([p[0] for p in pairs], dtype=pl.String))
            err = err.scatter(missing.arg_true(), pl.Series([p[1] for p in pairs], dtype=pl.String))
        code, value = amounts.check(text, action.asset)
        codes, messages = amounts.failures(err.to_list(), code.to_list(), text.to_list(), action.asset)
        for j, e in zip(missing.arg_true().to_list(), errs):
            if e is not None:
                codes[j], messages[j] = amounts.EXPRESSION_ERROR, f"expression failed: {e}"
        idx = matched.arg_true()
        return (_const(None, n, pl.String).scatter(idx, pl.Series(codes, dtype=pl.String)),
                _const(None, n, pl.String).scatter(idx, pl.Series(messages, dtype=pl.String)),
                _const(None, n, D).scatter(idx, value.cast(D)))

    def _values(self, rule: CompiledRule, action, mask: pl.Series, rows: pl.Series | None = None) -> tuple[list, pl.Series]:
        """(failures, values) of a TAG/COUNTER/SET_ATTRIBUTE value per event at `rows` (None: all),
        decided where `mask`: a failure is (code, message) as the kernel words it, a value is what
        the action writes."""
        failures, values = self._all_values(rule, action, _widen(mask, rows, self.n))
        if rows is None or failures is None:
            return failures, _narrow(values, rows)
        return [failures[i] for i in rows.to_list()], values.gather(rows)

    def _all_values(self, rule: CompiledRule, action, mask: pl.Series) -> tuple[list, pl.Series]:
        """_values over all the program's events."""
        at = f"rule {rule.name!r} action {action.index}"
        raw = action.tag if action.type in ("TAG", "UNTAG") else action.value
        convert = {"TAG": kernel.tag_text, "UNTAG": kernel.tag_text, "COUNTER": kernel.counter_value,
                   "SET_ATTRIBUTE": kernel.attribute_text}[action.type]
        n = len(mask)
        dtype = D if action.type == "COUNTER" else pl.String
        if not isinstance(raw, CelProgram):
            try:
                return None, _const(convert(raw, at), n, dtype)
            except ActionFailed as err:  # a static value the loader let through: every event reaching it fails
                return [(err.code, err.message)] * n, _const(None, n, dtype)
        key = (rule.sid, action.index, "value")
        have = self.value_cache.setdefault(key, ({}, [None] * n, [None] * n))
        done, failures, values = have
        todo = [i for i in mask.arg_true().to_list() if i not in done]
        if todo:
            sub = _const(False, n, pl.Boolean).scatter(todo, True)
            results, errors = self.h.row_eval(raw, self.frame.activations(sub))
            for i, v, e in zip(todo, results, errors):
                done[i] = True
                if e is not None:
                    failures[i] = (amounts.EXPRESSION_ERROR, f"{at}: expression failed: {e}")
                    continue
                try:
                    values[i] = convert(v, at)
                except ActionFailed as err:
                    failures[i] = (err.code, err.message)
        return failures, pl.Series(values, dtype=dtype)

    def reads(self) -> list[tuple[pl.Series | None, list[str]]]:
        """Which of the program's events may read which columns of the state before them (None:
        every event): each rule's, for the events it may be reached for (in its window, and
        matched when its condition reads no state), and auto-qualification's, for every event.
        What `run` reads, written out: a read missing here would leave an event stale."""
        if self.read_sets is not None:
            return self.read_sets
        out = []
        for rule in self.program.active_rules:
            r = merge(reads(rule.condition), *(reads(a.amount) for a in rule.actions if isinstance(a.amount, CelProgram)))
            cols = [c for c in self._participant(r)[0].meta.root_names() if c.split(":", 1)[0] in _STATE]
            for a in rule.actions:
                if a.type == "DEBIT" and not a.allow_negative:  # the balance check
                    cols.append(_col("b", str(a.asset_id)))
                elif a.type == "COUNTER":  # the range check
                    cols.append(_col("c", a.key))
            reach = self.windows[rule.sid] if rule.sid not in self.pre else self.windows[rule.sid] & self.pre[rule.sid][0]
            if cols:
                out.append((reach, cols))
        for tier in self.tiers:
            out.append((None, [_col("lv", tier.sid)] + [_col("c", c.counter) for lv in tier.levels if lv.qualification
                                                        for c in lv.qualification.criteria if c.counter in self.f.counters]))
        self.read_sets = out
        return out

    def stale(self, changed: dict[str, pl.Series], consumed: dict[str, pl.Series],
              wallets: dict[str, pl.Series]) -> pl.Series:
        """The events (indices) whose outcome may differ from their last evaluation: those that may
        read a column of the state before them that `changed` (per column, per event: whether it
        changed since their last evaluation), those whose budget check would now go the other
        way with what the budget's period had `consumed` before them, and those one of whose
        wallet checks would now go the other way with what the wallet held before them
        (`wallets`). For all other events the evaluation would see the same inputs (a wallet is
        read only by those checks), so it would give the same outcome."""
        out = _const(False, self.n, pl.Boolean)
        for events, cols in self.reads():
            hit = _const(False, self.n, pl.Boolean)
            for c in cols:
                hit = hit | changed[c]
            out = out | (hit if events is None else events & hit)
        for key, b in self.budgets:
            consulted, total, over = self.checked[key]
            out = out | (consulted & (amounts.compare(consumed[key] + total, ">", b.limit) != over))
        for key in self.wallets:
            lo, hi = self.wallet_checked[key]
            out = out | (wallets[key] < lo).fill_null(False) | (wallets[key] >= hi).fill_null(False)
        return out.arg_true()

    def _qualifies(self, cur: pl.DataFrame, level) -> pl.Series:
        """Whether each event's counters, after its rules, meet the level (a counter never written is 0)."""
        tests = []
        for c in level.qualification.criteria:
            value = cur[_col("c", c.counter)].fill_null(Decimal(0)) if c.counter in self.f.counters \
                else _const(Decimal(0), len(cur), D)
            tests.append(amounts.compare(value, c.operator, c.threshold))
        out = tests[0]
        for t in tests[1:]:
            out = (out & t) if level.qualification.mode == "ALL" else (out | t)
        return out

    def run(self, before: pl.DataFrame, final: bool, rows: pl.Series | None = None) -> pl.DataFrame:
        """What each event did (did-columns), given the state before it: the program's events at
        `rows` (None: all of them), `before` row-aligned with them. With `final`, also the status,
        effects and evaluations of every event (self.status/effects/evaluations)."""
        f, n = self.f, len(before)
        if final:
            self.conditions = 0  # count the evaluations of the round that stands
        cur = before
        false = _const(False, n, pl.Boolean)
        failed, stopped = false, false
        fail_code = _const(None, n, pl.String)
        fail_msg = _const(None, n, pl.String)
        fail_order = _const(None, n, pl.Int64)
        zero = _const(Decimal(0), n, D)
        nothing = _nothing(f, n)  # (never written in place: also what a rolled-back event did)
        out = dict(nothing)
        effects, evals = [], []
        checked = {key: (false, zero, false) for key, _ in self.budgets}  # an event that never got there
        unchecked = _const(None, n, D)
        wallet_checked = {key: (unchecked, unchecked) for key in self.wallets}
        pos = before["pos"]
        active = before["status"] == "ACTIVE"

        def fail(mask: pl.Series, code: str | pl.Series, message: pl.Series, order: int) -> None:
            """The first failure of an event stands; the event's later actions and rules never run."""
            nonlocal failed, fail_code, fail_msg, fail_order
            mask = mask & ~failed
            codes = code if isinstance(code, pl.Series) else _const(code, n, pl.String)
            fail_code = codes.zip_with(mask, fail_code)
            fail_msg = message.zip_with(mask, fail_msg)
            fail_order = _const(order, n, pl.Int64).zip_with(mask, fail_order)
            failed = failed | mask

        for rule in self.program.active_rules:
            live = _narrow(self.windows[rule.sid], rows) & ~stopped & ~failed
            if not live.any():
                continue
            self.conditions += int(live.sum())
            where = f"rule {rule.name!r} action "
            if self.exprs.get(rule.sid, False) is None:
                vals, errs = self.h.row_eval(rule.condition, self._activations(cur, live))
                errs = self.h.condition_errors(vals, errs)
                idx = live.arg_true()
                # (scatter writes in place: each result starts from a new all-false series)
                matched = _const(False, n, pl.Boolean).scatter(
                    idx, pl.Series([v is True and e is None for v, e in zip(vals, errs)], dtype=pl.Boolean))
                errored = _const(False, n, pl.Boolean).scatter(idx, pl.Series([e is not None for e in errs], dtype=pl.Boolean))
                messages = _const(None, n, pl.String).scatter(idx, pl.Series(errs, dtype=pl.String))
            elif rule.sid in self.exprs:
                values = self._evaluate(cur, rule.sid)
                if values.dtype != pl.Boolean:
                    raise _Unsettled(f"rule {rule.key}: condition is not a bool column")
                # the row path decides the null rows (an error, or a CEL null inside a list)
                matched, errored, messages = self.h.settle_nulls(
                    values.zip_with(live, _const(False, n, pl.Boolean)),
                    lambda mask: self.h.row_eval(rule.condition, self._activations(cur, mask)))
            else:
                m, e, messages = (None if x is None else _narrow(x, rows) for x in self.pre[rule.sid])
                matched, errored = m & live, e & live
            if final and errored.any():
                evals.append(self.h.eval_rows(pos, errored, rule, "SKIPPED_ERROR", messages))
            if not matched.any():
                continue
            # 1. every action's amount is decided and checked before budgets are consulted
            planned = {}
            plan_fail = false
            for action in rule.actions:
                if action.type in ("CREDIT", "DEBIT"):
                    if (rule.sid, action.index) in self.exprs:
                        code, msg, amount = self._state_amounts(cur, rule, action, matched)
                    else:
                        code, msg, amount = self._amounts(rule, action, matched, rows)
                    bad = matched & code.is_not_null() & (code != amounts.ZERO).fill_null(False)
                    if bad.any():  # (the message column is built only when some event fails)
                        fail(bad, code, (where + str(action.index) + ": ") + msg.fill_null(""), rule.order)
                        plan_fail = plan_fail | bad
                    planned[action.index] = amount.zip_with(code.is_null(), _const(None, n, D))
                else:
                    failures, values = self._values(rule, action, matched & ~plan_fail, rows)
                    bad_idx = [] if failures is None else \
                        [i for i in (matched & ~plan_fail).arg_true().to_list() if failures[i] is not None]
                    if bad_idx:
                        bad = _const(False, n, pl.Boolean).scatter(bad_idx, True)
                        codes = _const(None, n, pl.String).scatter(
                            bad_idx, pl.Series([failures[i][0] for i in bad_idx], dtype=pl.String))
                        words = _const(None, n, pl.String).scatter(
                            bad_idx, pl.Series([failures[i][1] for i in bad_idx], dtype=pl.String))
                        fail(bad, codes, words, rule.order)
                        plan_fail = plan_fail | bad
                    planned[action.index] = values
            ok_plan = matched & ~plan_fail
            # 2. budgets: the rule as a whole, or not at all
            exceeded = false
            totals = {}
            for b in rule.budgets:  # (what the check saw is kept: `stale` re-runs it when that changes)
                key = f"{rule.sid}:{b.index}"  # each budget on its own, also two on one asset
                total = zero
                for action in rule.actions:
                    if action.type == "CREDIT" and action.asset_id == b.asset_id:
                        total = total + planned[action.index].fill_null(Decimal(0))
                totals[key] = total
                over = amounts.compare(cur[_col("bc", key)] + total, ">", b.limit)
                exceeded = exceeded | (ok_plan & over)
                checked[key] = (ok_plan, total, over)
            accepted = ok_plan & ~exceeded
            if final:
                evals.append(self.h.eval_rows(pos, plan_fail | accepted, rule, "MATCHED", None))
                if exceeded.any():
                    evals.append(self.h.eval_rows(pos, exceeded, rule, "BUDGET_EXCEEDED", None))
            for key, total in totals.items():
                out[_col("take", key)] = out[_col("take", key)] + total.zip_with(accepted, zero)
                out[_col("acc", key)] = out[_col("acc", key)] | accepted
            # 3. the actions, in order, each seeing the ones before
            alive = accepted
            updates = {}
            for action in rule.actions:
                if not alive.any():
                    break
                at = where + str(action.index)
                if action.type in BLOCKED_FOR_INACTIVE:
                    inactive = alive & ~active
                    if inactive.any():
                        text = before.select(pl.concat_str(pl.lit(f"{at}: participant "), "ext", pl.lit(" is "),
                                                           "status")).to_series()
                        fail(inactive, INACTIVE, text, rule.order)
                        alive = alive & ~inactive
                if action.type in ("CREDIT", "DEBIT"):
                    amount = planned[action.index]
                    applies = alive & amount.is_not_null()
                    col = _col("b", str(action.asset_id))
                    have = cur[col]
                    wkey = self.wallet_of.get(action.asset_sid)
                    if wkey is not None and action.type == "CREDIT":  # the program wallet pays (moves.move)
                        wcol = _col("wb", wkey)
                        held, needed = cur[wcol], amount.fill_null(Decimal(0))
                        short = applies & (held - needed < 0)
                        # the wallet before the event from which this check passes: what it needs,
                        # less what the event's earlier actions drew or paid in (they do the same
                        # as long as its checks come out the same)
                        threshold = (needed - held + before[wcol]).cast(D)
                        lo, hi = wallet_checked[wkey]
                        raise_lo = applies & ~short & (lo.is_null() | (threshold > lo)).fill_null(True)
                        wallet_checked[wkey] = (threshold.zip_with(raise_lo, lo), threshold.zip_with(short, hi))
                        if short.any():
                            text = _const(None, n, pl.String)
                            if final:  # (only the final pass's messages are kept: a round's are never read)
                                idx = short.arg_true()
                                account = wallet(self.program.sid, action.asset_sid)
                                words = [insufficient_message("CREDIT", account, action.asset.symbol, h, a)
                                         for h, a in zip(*(x.gather(idx).to_list() for x in (held, amount)))]
                                text = text.scatter(idx, pl.Series(words, dtype=pl.String))
                            fail(short, WALLET_SHORT, text, rule.order)
                            alive, applies = alive & ~short, applies & ~short
                    if action.type == "DEBIT":
                        short = applies & (have - amount.fill_null(Decimal(0)) < 0)
                        if not action.allow_negative and short.any():
                            text = _const(None, n, pl.String)
                            if final:
                                idx = short.arg_true()
                                words = [insufficient_message("DEBIT", ("PARTICIPANT", pid, str(action.asset_id), "AVAILABLE"),
                                                              action.asset.symbol, h, a)
                                         for pid, h, a in zip(*(x.gather(idx).to_list() for x in (before["pid"], have, amount)))]
                                text = text.scatter(idx, pl.Series(words, dtype=pl.String))
                            fail(short, INSUFFICIENT, text, rule.order)
                            alive, applies = alive & ~short, applies & ~short
                    delta = amount.fill_null(Decimal(0)).zip_with(applies, zero)
                    delta = -delta if action.type == "DEBIT" else delta
                    updates[col] = (have + delta).cast(D)
                    out[_col("d", str(action.asset_id))] = out[_col("d", str(action.asset_id))] + delta
                    if wkey is not None:  # what the participant gains, the wallet pays, and back
                        updates[_col("wb", wkey)] = (cur[_col("wb", wkey)] - delta).cast(D)
                        out[_col("wd", wkey)] = out[_col("wd", wkey)] - delta
                    if final and applies.any():
                        effects.append(pl.DataFrame({"pos": pos, "amount": amount, "pid": before["pid"]}).filter(applies).select(
                            "pos", rule_id=pl.lit(rule.sid), rule_version=pl.lit(rule.version),
                            rule_order=pl.lit(rule.order, dtype=pl.Int64),
                            action_index=pl.lit(action.index, dtype=pl.Int64), action_type=pl.lit(action.type),
                            asset_id=pl.lit(str(action.asset_id)), amount=pl.col("amount").cast(D),
                            allow_negative=pl.lit(action.allow_negative),
                            description=pl.lit(action.description or rule.name, dtype=pl.String),
                            entity_id="pid", wallet_id=pl.lit(self.program.sid if wkey else None, dtype=pl.String)))
                elif action.type in ("TAG", "UNTAG"):
                    value = _const(action.type == "TAG", n, pl.Boolean)
                    tags = planned[action.index]
                    for tag in tags.filter(alive).unique().to_list():
                        mine = alive & (tags == tag).fill_null(False)
                        col, wrote = _col("t", tag), _col("tw", tag)
                        cur = cur.with_columns(**{col: cur[col].zip_with(~mine, value)})
                        out[wrote] = out[wrote].zip_with(~mine, value)
                elif action.type == "COUNTER":
                    col = _col("c", action.key)
                    step = planned[action.index]
                    new = (cur[col].fill_null(Decimal(0)) + step.fill_null(Decimal(0))).cast(D)
                    over = alive & (new.abs() >= amounts.LIMIT)
                    if over.any():
                        fail(over, amounts.OUT_OF_RANGE, _const(
                            f"{at}: counter {action.key} would exceed {amounts.MAX_INTEGER_DIGITS} integer digits",
                            n, pl.String), rule.order)
                        alive = alive & ~over
                    updates[col] = new.zip_with(alive, cur[col])
                    out[_col("inc", action.key)] = out[_col("inc", action.key)] + step.zip_with(alive, zero)
                    out[_col("w", action.key)] = out[_col("w", action.key)] | alive
                else:  # SET_ATTRIBUTE
                    col = _col("a", action.key)
                    text = planned[action.index]
                    updates[col] = text.zip_with(alive, cur[col])
                    out[_col("aw", action.key)] = text.zip_with(alive, out[_col("aw", action.key)])
                if updates:
                    cur = cur.with_columns(**updates)
                    updates = {}
            if rule.stop_after_match:
                stopped = stopped | alive
        ok = ~failed
        for tier in self.tiers:  # after the rules of an event that did not fail (semantics.md 5, step 4)
            best = _const(None, n, pl.Int64)
            for lv in tier.levels:  # ascending rank: the last level qualified for wins
                if lv.qualification is not None:
                    best = _const(lv.rank, n, pl.Int64).zip_with(self._qualifies(cur, lv), best)
            have = cur[_col("lv", tier.sid)]
            out[_col("up", tier.sid)] = best.zip_with(ok & best.is_not_null() & (have.is_null() | (best > have)).fill_null(True),
                                                      _const(None, n, pl.Int64))
        for key, seen in checked.items():
            self.checked[key] = seen if rows is None else tuple(
                x.clone().scatter(rows, y) for x, y in zip(self.checked[key], seen))
        for key, seen in wallet_checked.items():
            self.wallet_checked[key] = seen if rows is None else tuple(
                x.clone().scatter(rows, y) for x, y in zip(self.wallet_checked[key], seen))
        # a failed event is rolled back: it did nothing
        did = {"pos": pos, "ok": ok} | {name: series.zip_with(ok, nothing[name]) for name, series in out.items()}
        if final:
            self.status = pl.DataFrame({"pos": pos, "error_code": fail_code, "error_message": fail_msg,
                                        "rule_order": fail_order}).filter(failed)
            eff = self.h.concat(effects, self.h.EFFECT_SCHEMA | {"entity_id": pl.String, "wallet_id": pl.String})
            failed_pos = pl.col("pos").is_in(self.status["pos"].implode())
            self.effects = eff.filter(~failed_pos)
            self.rolled_back = eff.filter(failed_pos)["amount"]
            self.evaluations = self.h.concat(evals, self.h.EVAL_SCHEMA | {"rule_order": pl.Int64})
        return pl.DataFrame(did)


def _trace(message: str) -> None:
    if os.environ.get("PERKFLOW_TRACE"):
        print(message, file=sys.stderr)


class _Unsettled(Exception):
    """This batch cannot be decided here after all; the kernel path takes it."""


def _write_back(before: pl.DataFrame, f: _Features, opening: dict[str, pl.DataFrame], store: Store) -> None:
    """The batch's final participant state and budget consumption, into the store for the writer.
    A participant's state is rewritten when an event changed it or a counter reset (as the
    kernel marks them), so that both paths write the same rows."""
    x = before  # already beside what each event did (_before)
    after, changed = {}, []
    for k, reset in f.counters.items():
        c, w, inc = _col("c", k), _col("w", k), _col("inc", k)
        after[c] = pl.when(pl.col(w)).then(pl.col(c).fill_null(Decimal(0)) + pl.col(inc)).otherwise(pl.col(c))
        changed.append(pl.col(w) & ((pl.col(inc) != 0) | pl.col(c).is_null()))
        created = pl.col("event_timestamp").filter(pl.col(w)).min().over("pid")
        if reset is None:
            after[_col("r", k)] = pl.coalesce(pl.col(_col("o_r", k)), created)
        else:
            after[_col("r", k)] = pl.col(_col("anchor", k)) + pl.duration(
                microseconds=pl.col(_col("per", k)) * (reset // timedelta(microseconds=1)))
            changed.append(pl.col(_col("o_c", k)).is_not_null() & (pl.col(_col("per", k)) > 0))
    for t in f.tags:
        tw, cur = _col("tw", t), _col("t", t)
        after[cur] = pl.coalesce(pl.col(tw), pl.col(cur))
        changed.append(pl.col(tw).is_not_null() & (pl.col(tw) != pl.col(cur).fill_null(False)))
    for a in f.attrs:
        aw, cur = _col("aw", a), _col("a", a)
        after[cur] = pl.coalesce(pl.col(aw), pl.col(cur))
        changed.append(pl.col(aw).is_not_null() & pl.col(aw).ne_missing(pl.col(cur)))
    for t in f.tiers:
        changed.append(pl.col(_col("up", t)).is_not_null())
    if not changed:
        changed = [pl.lit(False)]
    last = (x.with_columns(**after, _changed=pl.any_horizontal(changed).fill_null(False))
            .group_by("pid", maintain_order=True)
            .agg(pl.col("_changed").any(), pl.col("o_tags").last(), *[pl.col(c).last() for c in after]))
    upgrades = _tier_history(x, f, store)
    _stage_state(last.filter(pl.col("_changed")), f, opening, upgrades, store)
    for (r, i), (budget, _) in f.budgets.items():
        key = f"{r}:{i}"
        used = (x.filter(pl.col(_col("acc", key)))
                .group_by(_col("bp", key)).agg(pl.col(_col("o_bc", key)).first(), pl.col(_col("take", key)).sum()))
        for period, first, taken in used.iter_rows():
            stored = (r, budget.index, str(budget.asset_id), period)
            store.budgets[stored] = Decimal(first) + Decimal(taken)
            store.dirty_budgets.add(stored)


def _stage_state(last: pl.DataFrame, f: _Features, opening: dict[str, pl.DataFrame],
                 upgrades: dict[str, dict[str, TierState]], store: Store) -> None:
    """The state rows of the participants whose state the batch changed (`last`: their final
    `t:`, `c:`, `r:`, `a:` columns and the tags no rule writes, `o_tags`), as the kernel's
    Store.state_frames would write them: tags, then attributes, then counters, by key; and
    their tier levels, the opening ones with this batch's upgrades."""
    if last.is_empty():
        return
    pid = pl.col("pid")

    def rows(kind: str, frame: pl.DataFrame, **cols) -> pl.DataFrame:
        return frame.select(entity_type=pl.lit("PARTICIPANT"), entity_id=pid, kind=pl.lit(kind), **cols)
    parts = [rows("TAG", last.select("pid", key=pl.col("o_tags")).explode("key").drop_nulls("key"), key="key")]
    parts += [rows("TAG", last.filter(pl.col(_col("t", t))), key=pl.lit(t)) for t in f.tags]
    parts += [rows("ATTRIBUTE", last.filter(pl.col(_col("a", a)).is_not_null()), key=pl.lit(a), text_value=_col("a", a))
              for a in f.attrs]
    parts += [rows("COUNTER", last.filter(pl.col(_col("c", k)).is_not_null()), key=pl.lit(k),
                   number_value=_col("c", k), last_reset_at=_col("r", k),
                   reset_after_us=pl.lit(None if reset is None else reset // timedelta(microseconds=1), pl.Int64))
              for k, reset in f.counters.items()]
    kinds = {"TAG": 0, "ATTRIBUTE": 1, "COUNTER": 2}
    state = (pl.concat([p.with_columns(**{c: pl.lit(None, t) for c, t in STATE_SCHEMA.items() if c not in p.columns})
                        .select(list(STATE_SCHEMA)).cast(STATE_SCHEMA) for p in parts])
             .sort("entity_id", pl.col("kind").replace_strict(kinds), "key"))
    store.stage("stage_state", state)
    store.stage("stage_state_entities", last.select(entity_type=pl.lit("PARTICIPANT"), entity_id=pid).sort("entity_id"))
    raised = pl.DataFrame([(p, sid, t.level, t.achieved_at, t.reviewed_at, t.expires_at) for p, held in upgrades.items()
                           for sid, t in held.items()], schema=TIERS_SCHEMA, orient="row")
    kept = (opening["tiers"].join(last.select(participant_id=pid), on="participant_id")
            .join(raised, on=["participant_id", "tier_id"], how="anti"))
    store.stage("stage_participant_tiers", pl.concat([kept.select(list(TIERS_SCHEMA)).cast(TIERS_SCHEMA), raised])
                .join(last.select(participant_id=pid), on="participant_id").sort("participant_id", "tier_id"))


def _tier_history(x: pl.DataFrame, f: _Features, store: Store) -> dict[str, dict[str, TierState]]:
    """tier_history rows for every upgrade (stream order, as the kernel records them) and each
    participant's final level per upgraded tier."""
    final: dict[str, dict[str, TierState]] = {}
    if not f.tiers:
        return final
    ups = x.select("pos", "pid", "program_uuid", "idempotency_key", "event_timestamp",
                   *[c for t in f.tiers for c in (_col("lv", t), _col("up", t))])
    for row in ups.filter(pl.any_horizontal(pl.col(_col("up", t)).is_not_null() for t in f.tiers)).iter_rows(named=True):
        for sid, tier in f.tiers.items():  # in the program's tier order, like engine.tiers.auto_qualify
            rank = row[_col("up", sid)]
            if rank is None:
                continue
            ranks = {lv.rank: lv.key for lv in tier.levels}
            before = row[_col("lv", sid)]
            store.tier_history.append({
                "program_id": str(tier.program_id), "tier_id": sid, "tier_key": tier.key,
                "participant_id": row["pid"], "from_level": None if before is None else ranks[before],
                "to_level": ranks[rank], "reason": tiers.AUTO, "source_kind": "event",
                "source_name": f"event:{tier.program_id}:{row['idempotency_key']}", "effective_at": row["event_timestamp"]})
            final.setdefault(row["pid"], {})[sid] = TierState(ranks[rank], row["event_timestamp"])
    return final
