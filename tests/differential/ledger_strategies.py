"""Hypothesis strategies for the full-ledger differential test (test_ledger_vs_oracle.py): programs
with LOT assets (expiry and maturity as Go durations), a PREFUNDED asset, HOLD / RELEASE / FORFEIT,
CREDIT into HELD, a rewards catalog, and streams that mix events with operations.

Built on strategies.py (conditions, value expressions, payloads, timestamps). Assets, shared by
both programs:
- PTS: SIMPLE / UNLIMITED, holds allowed (HOLD, RELEASE, FORFEIT from HELD, CREDIT into HELD).
- LP: LOT / UNLIMITED, credits with expires_at / matures_at, spent FIFO; no holds on LOT assets
  (not built yet, and being changed by other work: kept out).
- GC: SIMPLE / PREFUNDED: credits draw on the crediting program's wallet (`fund` / `burn`).

Groups (semantics.md 11): the shop program sometimes declares `family` (u1 ADMIN, u2) and `team`
(u3 ADMIN, sometimes ARCHIVED); its rules then also move those groups' PTS / GC / LP (group lots
with expires_at / matures_at, applied when a row targets or names the group) and their state
(literal ids, and a CEL id that can name no group), the membership operations change them, and
the shop posts redemptions to SYSTEM_BREAKAGE instead of SYSTEM_REDEMPTION some of the time, or
(LEDGER_ENTITY) into a group's wallet (family or team, by key or id).
Value actions also target the program (its GC wallet: CREDIT / DEBIT / FORFEIT).

Operations cover every handler of `perkflow run --operations` except void_hold / set_tier (not
built), with failing cases on purpose: insufficient held, empty wallet, spending DEFERRED value,
over-reversal, unknown redemption, self-transfer, unknown recipient, out-of-stock / out-of-window /
per-participant-limited rewards, inactive participants (set_participant_status), bad params, and
participants (and transfer recipients) that events, recipients or targets create later or earlier
in the stream.
Timestamps share the grid of strategies.py, so ties between events and operations are common;
duplicate and conflicting operation rows are drawn like event rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from hypothesis import strategies as st

from tests.differential import strategies as S
from tests.oracle.interpreter import group_id

SIMPLE = ["PTS", "GC"]  # holds allowed
SYMBOLS = ["PTS", "LP", "GC"]
DURATIONS = ["30m", "1h", "2h30m", "24h", "0s", "12h"]
NEWCOMERS = ["u7", "u8"]  # created by upsert_participant only
TARGETED = ["u5", "u6"]  # created by events' targets and recipients (strategies.py FRIENDS), named by operations too
UNKNOWN = "u9"  # never created: participant_not_found
REWARD_EDGES = ["2025-03-01T09:00:00Z", "2025-03-02T00:00:00Z", "2025-03-02T10:00:00Z"]
# (resets_with_value_targets, if ever switched off here, drops every counter reset_after: every
# ledger scenario can touch a participant as a target, transfer recipient or reversal's redeemer.)
FLAGS = S.Flags(operator_only_amounts=False, literal_targets=False, string_concat_values=False)


@st.composite
def ledger_assets(draw) -> list[dict]:
    pts = {"symbol": "PTS", "name": "Points", "scale": draw(st.integers(0, 2))}
    if draw(st.integers(0, 3)) == 0:
        pts["max_transaction_amount"] = draw(st.sampled_from(["50", "100"]))
    lp = {"symbol": "LP", "name": "Lot points", "inventory_mode": "LOT", "scale": draw(st.integers(0, 1))}
    gc = {"symbol": "GC", "name": "Gift credit", "issuance_policy": "PREFUNDED", "scale": draw(st.integers(0, 2))}
    return [pts, lp, gc]


@st.composite
def rewards(draw) -> list[dict]:
    cup = {"key": "cup", "name": "Cup", "redemption_type": "UNIT_BASED", "asset": "PTS", "unit_cost": "5",
           "status": draw(st.sampled_from(["ACTIVE", "ACTIVE", "ACTIVE", "OUT_OF_STOCK", "DRAFT"]))}
    if draw(st.booleans()):
        cup["max_total"] = draw(st.integers(1, 3))
    if draw(st.booleans()):
        cup["max_per_participant"] = draw(st.integers(1, 2))
    if draw(st.integers(0, 3)) == 0:
        cup["available_from"] = draw(st.sampled_from(REWARD_EDGES))
    if draw(st.integers(0, 3)) == 0:  # a window ends after it starts (the loader refuses others)
        later = [edge for edge in REWARD_EDGES[1:] if edge > cup.get("available_from", "")]
        if later:
            cup["available_until"] = draw(st.sampled_from(later))
    gift = {"key": "gift", "name": "Gift", "redemption_type": "AMOUNT_BASED", "asset": "LP", "unit_cost": "3"}
    card = {"key": "card", "name": "Card", "redemption_type": "UNIT_BASED", "asset": "GC", "unit_cost": "2",
            "max_per_participant": 3}
    return [cup, gift, card]


_VALUE_AMOUNTS = ["1", "2", "5", "10", "3", "4", "0", "0.5", "-1", "event.amount", "round(event.amount, 0)",
                  "event.qty", "participant.balances.PTS.held", "participant.balances.LP.deferred",
                  "participant.balances.LP.available", "event.missing"]
_CONDITIONS = ["true", 'event.type == "purchase"', 'event.type == "refund"', 'event.type == "visit"',
               "participant.balances.LP.deferred > 0.0", "participant.balances.PTS.held >= 2.0"]


@st.composite
def value_action(draw, groups: bool = False) -> dict:
    typ = draw(st.sampled_from(["CREDIT"] * 5 + ["DEBIT"] * 2 + ["HOLD", "HOLD", "RELEASE", "RELEASE", "FORFEIT"]))
    symbol = draw(st.sampled_from(SYMBOLS if typ in ("CREDIT", "DEBIT", "FORFEIT") else SIMPLE))
    a: dict = {"type": typ, "asset": symbol}
    if typ not in ("HOLD", "RELEASE", "FORFEIT") or draw(st.integers(0, 2)) > 0:  # without: the whole bucket
        a["amount"] = draw(st.sampled_from(_VALUE_AMOUNTS))
    if typ == "CREDIT" and symbol in SIMPLE and draw(st.integers(0, 3)) == 0:
        a["bucket"] = "HELD"
    if typ == "CREDIT" and symbol == "LP":
        if draw(st.integers(0, 2)) > 0:
            a["expires_at"] = draw(st.sampled_from(DURATIONS))
        if draw(st.booleans()):
            a["matures_at"] = draw(st.sampled_from(DURATIONS))
    if typ == "FORFEIT" and symbol in SIMPLE and draw(st.booleans()):
        a["bucket"] = draw(st.sampled_from(["AVAILABLE", "HELD"]))
    if typ == "DEBIT" and draw(st.integers(0, 3 if symbol in SIMPLE else 1)) == 0:
        a["allow_negative"] = True  # on LP too: later credits repay the overdraft (decisions.md)
    k = draw(st.integers(0, 6))
    if k == 0:
        a["target"] = {"type": "PARTICIPANT", "external_id": "event.friend"}
    elif groups and (k in (1, 2) or (symbol == "LP" and k in (4, 5))):
        # LP more often: group lots that expire and mature (decisions.md "Groups")
        a["target"] = draw(group_target())
    elif k == 3 and symbol == "GC" and typ in ("CREDIT", "DEBIT", "FORFEIT"):
        for field in ("bucket", "allow_negative"):  # the wallet: one AVAILABLE account, never short
            a.pop(field, None)
        a.setdefault("amount", draw(st.sampled_from(_VALUE_AMOUNTS)))  # the wallet takes amounts only
        a["target"] = {"type": "PROGRAM"}
    return a


GROUPS = ["family", "team"]


@st.composite
def group_target(draw) -> dict:
    """A GROUP target: a declared group by key, or a CEL id that is sometimes no group."""
    return {"type": "GROUP", "id": draw(st.sampled_from(GROUPS * 3 + ['event.type == "visit" ? "family" : "nope"']))}


@st.composite
def groups_of(draw) -> list[dict]:
    return [{"key": "family", "name": "Family",
             "members": [{"external_id": "u1", "role": "ADMIN"}, {"external_id": "u2"}]},
            {"key": "team", "name": "Team", "status": draw(st.sampled_from(["ACTIVE", "ACTIVE", "ARCHIVED"])),
             "members": [{"external_id": "u3", "role": "ADMIN"}]}]


@st.composite
def ledger_rules(draw, max_size: int = 5, groups: bool = False) -> list[dict]:
    # The conditions and amounts of strategies.py read CASH; here the third asset is GC.
    base = json.loads(json.dumps(draw(S.rules(FLAGS, min_size=1, max_size=max_size))).replace("CASH", "GC"))
    for r in base:
        if draw(st.booleans()):  # simple conditions, so that value actions run often
            r["condition"] = draw(st.sampled_from(_CONDITIONS))
        actions = [draw(value_action(groups)) for _ in range(draw(st.integers(1, 3)))]
        if draw(st.integers(0, 3)) == 0:  # keep some state actions (counters, tags) in the mix
            state = json.loads(json.dumps(draw(S.action(FLAGS))).replace("CASH", "GC"))
            if groups and state["type"] in ("TAG", "UNTAG", "COUNTER", "SET_ATTRIBUTE") and draw(st.booleans()):
                state["target"] = draw(group_target())
            actions.append(state)
        r["actions"] = actions
        for b in r.get("budgets", []):
            b["asset"] = draw(st.sampled_from(SYMBOLS))
        # a budget of an asset the rule never credits is a load error (docs/decisions.md "Budgets")
        credited = {a.get("asset") for a in actions if a["type"] == "CREDIT"}
        if budgets := [b for b in r.pop("budgets", []) if b["asset"] in credited]:
            r["budgets"] = budgets
    return base


@st.composite
def ledger_programs(draw) -> list[dict]:
    shared = draw(ledger_assets())
    groups = draw(st.booleans())
    shop = {"key": S.PROGRAM, "name": "Shop", "on_unknown_participant": draw(st.sampled_from(["CREATE"] * 4 + ["REJECT"]))}
    if draw(st.booleans()):
        # with groups, often a group's wallet (by key or id; team is sometimes ARCHIVED: group_inactive)
        targets = ["SYSTEM_BREAKAGE", "SYSTEM_BREAKAGE", "SYSTEM_REDEMPTION"] + ["LEDGER_ENTITY"] * (4 if groups else 0)
        shop["redemption_target_type"] = draw(st.sampled_from(targets))
        if shop["redemption_target_type"] == "LEDGER_ENTITY":
            shop["redemption_target_entity_id"] = draw(st.sampled_from(GROUPS * 2 + [group_id("family")]))
    out = [{"program": shop, "assets": shared, "rules": draw(ledger_rules(groups=groups)), "rewards": draw(rewards())}]
    if groups:
        out[0]["groups"] = draw(groups_of())
    if draw(st.integers(0, 2)) == 0:
        out.append({"program": {"key": S.OTHER, "name": "Club"}, "assets": shared,
                    "rules": draw(ledger_rules(max_size=2))})
    return out


# ---------------------------------------------------------------------------------------------
# Operations


@dataclass(frozen=True)
class OpRow:
    program_id: str
    idempotency_key: str
    operation: str
    external_id: str | None
    timestamp: str
    params_json: str

    def for_oracle(self) -> dict:
        return {"program_id": self.program_id, "idempotency_key": self.idempotency_key,
                "operation": self.operation, "external_id": self.external_id,
                "timestamp": S.parse_ts(self.timestamp), "params": S._as_doubles(json.loads(self.params_json))}

    def for_parquet(self) -> dict:
        return {"operation": self.operation, "program_id": self.program_id,
                "idempotency_key": self.idempotency_key, "external_id": self.external_id,
                "timestamp": self.timestamp, "params": self.params_json}


_OP_AMOUNTS = ["1", "2", "3", "5", "5", "10", "20", "0.5", "2.25", "0", "-1", "100", "x"]
_OPERATIONS = (["adjust"] * 5 + ["hold"] * 2 + ["release"] * 2 + ["forfeit", "redeem", "redeem"]
               + ["redeem_item"] * 3 + ["reverse_redemption"] * 3 + ["fund"] * 3 + ["burn", "transfer", "transfer"]
               + ["set_counter", "set_attribute", "tag", "untag", "set_participant_status", "upsert_participant"]
)
_GROUP_OPERATIONS = ["add_group_member", "add_group_member", "remove_group_member", "set_group_member_role",
                     "group_adjust", "group_adjust", "group_hold", "group_release", "group_forfeit"]


@st.composite
def op_params(draw, operation: str, redemption_keys: list[str], subject: str | None, groups: bool = False) -> dict:
    amount = lambda: draw(st.sampled_from(_OP_AMOUNTS))  # noqa: E731
    if operation == "adjust":
        symbol = draw(st.sampled_from(SYMBOLS))
        if symbol == "LP" and draw(st.integers(0, 2)) == 0:  # an LP overdraft, repaid by what arrives later
            return {"asset": "LP", "amount": draw(st.sampled_from(["20", "100"])), "type": "DEBIT",
                    "allow_negative": True}
        p = {"asset": symbol, "amount": amount(), "type": draw(st.sampled_from(["CREDIT", "CREDIT", "DEBIT", "X"]))}
        if symbol in SIMPLE and draw(st.integers(0, 3)) == 0:
            p["bucket"] = "HELD"
        if p["type"] == "DEBIT" and draw(st.integers(0, 3)) == 0:
            p["allow_negative"] = True
        return p
    if operation in ("hold", "release"):
        p = {"asset": draw(st.sampled_from(SIMPLE))}
        if draw(st.integers(0, 2)) > 0:  # without an amount: everything in the bucket (Scrip)
            p["amount"] = amount()
        return p
    if operation == "forfeit":
        symbol = draw(st.sampled_from(SYMBOLS))
        p = {"asset": symbol, "bucket": "AVAILABLE"}  # required (Scrip)
        if draw(st.integers(0, 3)) > 0:
            p["amount"] = amount()
        if symbol in SIMPLE and draw(st.booleans()):
            p["bucket"] = "HELD"
        return p
    if operation == "redeem":
        return {"asset": draw(st.sampled_from(SYMBOLS)), "amount": amount()}
    if operation == "redeem_item":
        reward = draw(st.sampled_from(["cup", "cup", "gift", "card", "nope"]))
        p = {"reward": reward}
        if reward == "gift":
            p["amount"] = draw(st.sampled_from(["2", "3", "5", "10"]))
        elif draw(st.booleans()):
            p["quantity"] = draw(st.integers(1, 3))
        return p
    if operation == "reverse_redemption":
        p = {"redemption": draw(st.sampled_from(redemption_keys * 3 + ["nope"])) if redemption_keys else "nope"}
        k = draw(st.integers(0, 3))
        if k == 1:
            p["amount"] = draw(st.sampled_from(["1", "2", "5", "100"]))
        elif k == 2:
            p["quantity"] = draw(st.integers(1, 3))
        return p
    if operation in ("fund", "burn"):
        return {"asset": draw(st.sampled_from(["GC", "GC", "GC", "PTS"])), "amount": amount()}
    if operation == "transfer":
        symbol = draw(st.sampled_from(SYMBOLS))
        # a group recipient, when groups are declared (LP arrives as a group lot without expiry)
        who = draw(st.lists(st.sampled_from(S.USERS * 3 + TARGETED + [UNKNOWN, subject or "u1"]
                                            + (["group:family", "group:team", "group:nope"] if groups else [])),
                            min_size=1, max_size=3))
        return {"asset": symbol, "recipients": [
            {"group_id" if w.startswith("group:") else "external_id": w.removeprefix("group:"),
             "amount": draw(st.sampled_from(["1", "2", "5", "0"]))} for w in who]}
    if operation == "set_counter":
        p = {"key": draw(st.sampled_from(S.COUNTER_KEYS)), "value": draw(st.sampled_from(["0", "3", "-2", "1.5"]))}
        if draw(st.booleans()):
            p["reset_after"] = draw(st.sampled_from(S.RESETS))
        return p
    if operation == "set_attribute":
        return {"key": draw(st.sampled_from(S.ATTR_KEYS)), "value": draw(st.sampled_from(["gold", "silver"]))}
    if operation in ("tag", "untag"):
        return {"tag": draw(st.sampled_from(["vip", "VIP", "promo"]))}
    if operation.startswith("group_"):  # a group's balance: adjust and forfeit of LP too (its lots, FIFO)
        base = operation.removeprefix("group_")
        p = draw(op_params(base, redemption_keys, subject))
        if p.get("asset") not in SIMPLE and base not in ("adjust", "forfeit"):  # no holds on LOT assets
            p["asset"] = "PTS"
        p[draw(st.sampled_from(["group"] * 3 + ["group_id"]))] = draw(st.sampled_from(GROUPS * 4 + ["nope"]))
        return p
    if operation in ("add_group_member", "remove_group_member", "set_group_member_role"):
        p = {draw(st.sampled_from(["group"] * 3 + ["group_id"])): draw(st.sampled_from(GROUPS * 4 + ["nope"]))}
        if operation != "remove_group_member" and draw(st.integers(0, 3)) > 0:
            p["role"] = draw(st.sampled_from(["ADMIN", "MEMBER", "MEMBER", "OWNER"]))
        return p
    if operation == "set_participant_status":
        return {"status": draw(st.sampled_from(["ACTIVE", "ACTIVE", "SUSPENDED", "CLOSED", "BOGUS"]))}
    p = {}  # upsert_participant
    if draw(st.booleans()):
        p["status"] = draw(st.sampled_from(["ACTIVE", "SUSPENDED"]))
    if draw(st.booleans()):
        p["attributes"] = {"level": draw(st.sampled_from(["gold", "bronze"]))}
    if draw(st.booleans()):
        p["tags"] = draw(st.lists(st.sampled_from(["vip", "Promo"]), max_size=2))
    return p


@st.composite
def operation_rows(draw, has_other: bool, min_size: int = 3, max_size: int = 25, groups: bool = False) -> list[OpRow]:
    rows: list[OpRow] = []
    redemption_keys: list[str] = []
    by_key: dict[str, OpRow] = {}
    for i in range(draw(st.integers(min_size, max_size))):
        if rows and draw(st.integers(0, 9)) == 0:
            prev = draw(st.sampled_from(rows))
            if draw(st.booleans()):
                rows.append(prev)  # an exact duplicate
            else:  # the same key with other params: idempotency_conflict
                rows.append(OpRow(prev.program_id, prev.idempotency_key, prev.operation, prev.external_id,
                                  prev.timestamp, json.dumps({"asset": "PTS", "amount": "1", "type": "CREDIT"})))
            continue
        operation = draw(st.sampled_from(_OPERATIONS + (_GROUP_OPERATIONS * 2 if groups else [])))
        k = draw(st.integers(0, 19))
        program = S.GHOST if k == 0 else S.OTHER if has_other and k <= 3 else S.PROGRAM
        if operation in ("fund", "burn") or operation.startswith("group_"):
            subject = None
        elif operation == "upsert_participant":
            subject = draw(st.sampled_from(NEWCOMERS + S.USERS))
        else:
            subject = draw(st.sampled_from(S.USERS * 4 + TARGETED + NEWCOMERS + [UNKNOWN]))
        key = f"o{i}"
        if operation in ("redeem", "redeem_item"):
            redemption_keys.append(key)
        params = draw(op_params(operation, redemption_keys[:-1] if operation.startswith("redeem") else redemption_keys,
                                subject, groups))
        when = draw(st.sampled_from(S.TIMES))
        redeemed = by_key.get(params.get("redemption"))
        if redeemed is not None and draw(st.integers(0, 3)) > 0:
            # usually after the redemption, in its program, by its participant
            program, subject = redeemed.program_id, redeemed.external_id
            when = draw(st.sampled_from([t for t in S.TIMES if S.parse_ts(t) >= S.parse_ts(redeemed.timestamp)]))
        rows.append(OpRow(program, key, operation, subject, when, json.dumps(params)))
        by_key[key] = rows[-1]
        # (not after a group_adjust: its row names no participant, and an `adjust` naming none is
        # quarantined, missing_required_field, which the oracle does not model)
        if params.get("allow_negative") and params.get("asset") == "LP" and subject is not None and draw(st.booleans()):
            # an LP credit of the same participant at or after its overdraft, which it repays first
            later = draw(st.sampled_from([t for t in S.TIMES if S.parse_ts(t) >= S.parse_ts(when)]))
            rows.append(OpRow(program, f"{key}r", "adjust", subject, later, json.dumps(
                {"asset": "LP", "amount": draw(st.sampled_from(["5", "50", "150"])), "type": "CREDIT"})))
    return rows


@dataclass
class LedgerScenario:
    programs: list[dict]
    batches: list[list[S.Row]]
    operations: list[list[OpRow]] = field(default_factory=list)  # operations[i] run with batches[i]


def _cut(draw, rows: list, n: int) -> list[list]:
    if n == 1 or len(rows) < 2:
        return [rows] + [[] for _ in range(n - 1)]
    cut = draw(st.integers(1, len(rows) - 1))
    return [rows[:cut], rows[cut:]]


@st.composite
def ledger_scenarios(draw) -> LedgerScenario:
    progs = draw(ledger_programs())
    has_other = len(progs) > 1
    events = [r for b in draw(S.streams(FLAGS, has_other=has_other, min_size=3, max_size=20, max_batches=1))
              for r in b]
    ops = draw(operation_rows(has_other, groups="groups" in progs[0]))
    # Funding first, often: a wallet that is never funded only ever says insufficient_wallet.
    if draw(st.integers(0, 2)) > 0:
        ops.insert(0, OpRow(S.PROGRAM, "fund0", "fund", None, "2025-03-01T00:00:00Z",
                            json.dumps({"asset": "GC", "amount": draw(st.sampled_from(["5", "20", "100"]))})))
    # Most of u1-u4 exist from the first instant (upsert_participant) and start with some PTS and
    # an LP lot without expiry, so that spending, holds, redemptions and transfers also succeed.
    # The others, and u5 / u6, are created in stream order by their first event, an event's
    # recipient or an action target: operations and transfers naming them before that fail with
    # participant_not_found, after it find them. u7, u8 and u9 cover upsert_participant creating
    # and participant_not_found.
    seeds = []
    for u in S.USERS:
        if draw(st.integers(0, 3)) == 0:
            continue
        seeds.append(OpRow(S.PROGRAM, f"seed-{u}", "upsert_participant", u, "2025-03-01T00:00:00Z", "{}"))
        for symbol in ("PTS", "LP"):
            if draw(st.integers(0, 3)) > 0:
                seeds.append(OpRow(S.PROGRAM, f"seed-{u}-{symbol}", "adjust", u, "2025-03-01T00:00:00Z", json.dumps(
                    {"asset": symbol, "amount": draw(st.sampled_from(["10", "20", "30"])), "type": "CREDIT"})))
    ops[:0] = seeds
    if not FLAGS.resets_with_value_targets:
        _drop_resets(progs, ops)
    n = draw(st.sampled_from([1, 1, 2]))
    return LedgerScenario(progs, _cut(draw, events, n), _cut(draw, ops, n))


def _drop_resets(progs: list[dict], ops: list[OpRow]) -> None:
    """No counter `reset_after` in COUNTER actions or set_counter operations (FLAGS)."""
    for spec in progs:
        for r in spec["rules"]:
            for a in r["actions"]:
                a.pop("reset_after", None)
    for i, o in enumerate(ops):
        if o.operation == "set_counter":
            params = json.loads(o.params_json)
            if params.pop("reset_after", None) is not None:
                ops[i] = OpRow(o.program_id, o.idempotency_key, o.operation, o.external_id, o.timestamp,
                               json.dumps(params))


# ---------------------------------------------------------------------------------------------
# Group lots (docs/decisions.md "Groups"): a small fixed program whose rules credit, spend and
# forfeit the family group's LP, with drawn expiries and maturities, over streams that touch the
# group (rule targets, group_adjust / group_forfeit, transfers, membership changes, redemptions
# into it when the program redeems into the family: LEDGER_ENTITY, and their reversals) at drawn
# instants, cut into one to three batches. The general scenarios above reach group lots rarely
# (an event must match, its amounts be valid, and a later row touch the group after an instant).

_GROUP_TIMES = [f"2025-03-01T{h:02d}:{m:02d}:00Z" for h in range(8, 20) for m in (0, 30)]
_GROUP_EVENTS = ["pool", "pool", "pool", "spend", "spend", "fine", "earn", "tag"]


@st.composite
def group_lot_program(draw) -> dict:
    family = {"type": "GROUP", "id": "family"}
    pool = {"type": "CREDIT", "asset": "LP", "amount": draw(st.sampled_from(["3", "5", "10", "event.n"])),
            "target": family}
    for name in ("expires_at", "matures_at"):
        if draw(st.integers(0, 2)) > 0:
            pool[name] = draw(st.sampled_from(DURATIONS))
    spend = {"type": "DEBIT", "asset": "LP", "amount": "event.n", "target": family}
    if draw(st.integers(0, 4)) == 0:
        spend["allow_negative"] = True  # an overdraft of the group, repaid by what arrives (maturities too)
    actions = {"pool": [pool], "spend": [spend],
               "fine": [{"type": "FORFEIT", "asset": "LP", "amount": "event.n", "target": family}],
               "earn": [{"type": "CREDIT", "asset": "LP", "amount": "5"}],
               "tag": [{"type": "TAG", "tag": "seen", "target": family}]}
    program = {"key": S.PROGRAM, "name": "Shop"}
    if draw(st.booleans()):  # redemptions into the family's wallet, reversed from its lots (FIFO)
        program |= {"redemption_target_type": "LEDGER_ENTITY", "redemption_target_entity_id": "family"}
    return {"program": program,
            "assets": [{"symbol": "LP", "name": "Lot points", "inventory_mode": "LOT", "scale": 0}],
            "groups": [{"key": "family", "name": "Family",
                        "members": [{"external_id": "u1", "role": "ADMIN"}, {"external_id": "u2"}]}],
            "rules": [{"name": k, "key": k, "condition": f'event.type == "{k}"', "actions": a}
                      for k, a in actions.items()]}


@st.composite
def group_lot_scenarios(draw) -> LedgerScenario:
    program = draw(group_lot_program())
    into_group = "redemption_target_entity_id" in program["program"]
    rows: list = []
    redeemed: dict[str, str] = {}  # redeem key -> its instant
    reversals: list[tuple[int, str, dict]] = []
    for i in range(draw(st.integers(3, 16))):
        at = draw(st.sampled_from(_GROUP_TIMES))
        if draw(st.integers(0, 3)) > 0:
            kind = draw(st.sampled_from(_GROUP_EVENTS))
            rows.append(S.Row(S.PROGRAM, f"k{i}", draw(st.sampled_from(["u1", "u2"])), at,
                              json.dumps({"type": kind, "n": draw(st.sampled_from([1, 2, 4, 7]))})))
            continue
        operation = draw(st.sampled_from(["group_adjust", "group_adjust", "group_forfeit", "transfer",
                                          "remove_group_member", "add_group_member", "redeem", "redeem",
                                          "reverse_redemption", "reverse_redemption"]
                                         + ["redeem", "reverse_redemption"] * (3 if into_group else 0)))
        amount = draw(st.sampled_from(["1", "3", "6"]))
        if operation == "redeem":
            who, params = draw(st.sampled_from(["u1", "u2"])), {"asset": "LP", "amount": amount}
            redeemed[f"o{i}"] = at
        elif operation == "reverse_redemption":  # named once every redeem is drawn (below)
            reversals.append((i, at, {"amount": amount} if draw(st.booleans()) else {}))
            continue
        elif operation == "group_adjust":
            who, params = None, {"group": "family", "asset": "LP", "amount": amount,
                                 "type": draw(st.sampled_from(["CREDIT", "DEBIT"]))}
        elif operation == "group_forfeit":
            who, params = None, {"group": "family", "asset": "LP", "amount": amount, "bucket": "AVAILABLE"}
        elif operation == "transfer":
            who, params = "u1", {"asset": "LP", "recipients": [{"group_id": "family", "amount": amount}]}
        else:
            who, params = "u2", {"group": "family"}
        rows.append(OpRow(S.PROGRAM, f"o{i}", operation, who, at, json.dumps(params)))
    for i, at, params in reversals:  # of a redeem, mostly at or after its instant (else not found yet)
        key = draw(st.sampled_from(sorted(redeemed) + ["nope"]))
        at = max(at, redeemed.get(key, at)) if draw(st.integers(0, 3)) > 0 else at
        rows.append(OpRow(S.PROGRAM, f"o{i}", "reverse_redemption", "u2", at, json.dumps({"redemption": key} | params)))
    rows.sort(key=lambda r: r.timestamp if isinstance(r, OpRow) else r.event_timestamp)
    seeds = [OpRow(S.PROGRAM, f"seed-{u}", "upsert_participant", u, "2025-03-01T00:00:00Z", "{}") for u in ("u1", "u2")]
    seeds.append(OpRow(S.PROGRAM, "seed-u1-LP", "adjust", "u1", "2025-03-01T00:00:00Z",
                       json.dumps({"asset": "LP", "amount": "20", "type": "CREDIT"})))
    cuts = sorted(draw(st.lists(st.integers(1, max(1, len(rows) - 1)), max_size=2, unique=True)))
    parts = [rows[a:b] for a, b in zip([0, *cuts], [*cuts, len(rows)])]
    parts[0] = seeds + parts[0]
    return LedgerScenario([program],
                          [[r for r in p if isinstance(r, S.Row)] for p in parts],
                          [[r for r in p if isinstance(r, OpRow)] for p in parts])
