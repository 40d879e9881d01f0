"""The full-ledger differential test: the engine against the oracle on programs with LOT assets,
a PREFUNDED asset, holds and rewards, over streams that mix events with operations
(tests/differential/ledger_strategies.py).

Compared on every case: event and operation statuses with error codes, every journal entry in
ledger order (origin = event or operation key, rule key and action index or part; action type;
both accounts; amount; effective instant), every non-zero account (participants' AVAILABLE / HELD
/ DEFERRED, program wallets, system accounts), lots (amount, remaining, status, instants),
redemptions, participant statuses and state, program state, rejected rows and duplicates. Plus
`perkflow verify` clean and `ledger_summary.current_balance` equal to the participants' and groups' balances
per asset.

Time-driven entries (MATURITY, EXPIRATION) carry the instant they were due; when several are
written together their relative order is not specified by the contract, so each run of them is
compared in a canonical order.

`PERKFLOW_LEDGER_EXAMPLES` sets the number of cases (default 150, about 1.5 minutes here); see
tests/differential/README.md.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings

from engine.errors import CatalogError
from engine.ledger import db as db_module
from engine.run import run_batch
from engine.verify import verify
from tests.differential import ledger_strategies as L
from tests.differential import strategies as S
from tests.differential.ledger_view import lot_ids, read_full_ledger
from tests.differential.test_engine_vs_oracle import SCHEMA, SETTINGS, _explain, _KeptConnection, check_ledger_invariants
from tests.helpers.io import write_events, write_program
from tests.oracle import run_oracle
from tests.oracle.books import Entry
from tests.oracle.interpreter import OracleResult, Unsupported
from tests.helpers.examples import examples

EXAMPLES = examples("PERKFLOW_LEDGER_EXAMPLES", 150)
OP_SCHEMA = pa.schema([(c, pa.string()) for c in
                       ("operation", "program_id", "idempotency_key", "external_id", "timestamp", "params")])
FIELDS = ("events", "operations", "ledger", "accounts", "lots", "redemptions", "statuses", "participants",
          "program_state", "group_state", "members", "rejected", "duplicates")


def _write(d: Path, sc: L.LedgerScenario) -> tuple[Path, list[Path], list[tuple[Path | None, Path | None]]]:
    prog_dir = d / "programs"
    files = [write_program(prog_dir / f"{spec['program']['key']}.yaml", spec) for spec in sc.programs]
    runs = []
    for i, (events, ops) in enumerate(zip(sc.batches, sc.operations)):
        ev_file = write_events(d / "events" / f"b{i}.parquet", [r.for_parquet() for r in events],
                               schema=SCHEMA) if events else None
        op_file = write_events(d / "operations" / f"b{i}.parquet", [r.for_parquet() for r in ops],
                               schema=OP_SCHEMA) if ops else None
        if ev_file or op_file:
            runs.append((ev_file, op_file))
    return prog_dir, files, runs


def canonical(ledger: list[Entry]) -> list[tuple]:
    """Entries as tuples in ledger order, each run of time-driven entries sorted."""
    out, run = [], []
    for e in ledger:
        t = (e.program_key, e.origin, e.action_type, e.source, e.dest, e.amount, e.effective_at)
        if e.origin is None:
            run.append(t)
            continue
        out += sorted(run, key=repr) + [t]
        run = []
    return out + sorted(run, key=repr)


def holder_totals(accounts: dict) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for (etype, _name, symbol, _bucket), amount in accounts.items():
        if etype in ("PARTICIPANT", "GROUP"):  # the holders (sql/views.sql ledger_flows)
            totals[symbol] += amount
    return {s: a for s, a in totals.items() if a != 0}


def _run_batches(con: duckdb.DuckDBPyConnection, prog_dir: Path, runs, db_file: Path) -> None:
    """Every run through `run_batch` into the in-memory ledger `con`."""
    con.execute("SET TimeZone = 'UTC'")
    kept = _KeptConnection(con)
    original = db_module.connect
    db_module.connect = lambda *a, **k: kept
    try:
        for ev_file, op_file in runs:
            run_batch(prog_dir, ev_file, db_file, operations=op_file)
    finally:
        db_module.connect = original


def run_engine(prog_dir: Path, runs, db_file: Path):
    """Every run into one temporary in-memory ledger; returns (result, lot_id, summary totals)."""
    con = duckdb.connect(":memory:")
    try:
        _run_batches(con, prog_dir, runs, db_file)
        check_ledger_invariants(con)
        report = verify(con)
        assert report.ok, f"perkflow verify: {[(v.check, v.rows) for v in report.violations]}"
        summary = {s: Decimal(a) for s, a in con.execute(
            "SELECT asset_symbol, sum(current_balance) FROM ledger_summary GROUP BY 1 HAVING sum(current_balance) <> 0"
        ).fetchall()}
        balances = {s: Decimal(a) for s, a in con.execute(
            "SELECT asset_symbol, sum(available + held + deferred) FROM balances WHERE entity_type IN ('PARTICIPANT', 'GROUP') "
            "GROUP BY 1 HAVING sum(available + held + deferred) <> 0").fetchall()}
        return read_full_ledger(con), lot_ids(con), summary, balances
    finally:
        con.close()


def assert_same(want: OracleResult, got: OracleResult) -> None:
    for name in FIELDS:
        a, b = getattr(want, name), getattr(got, name)
        if name == "ledger":
            a, b = canonical(a), canonical(b)
        elif name == "rejected":  # rows of events and operations files: the order across files is not one
            a, b = sorted(a), sorted(b)
        assert a == b, _explain(name, a, b)


def check(sc: L.LedgerScenario) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        prog_dir, prog_files, runs = _write(d, sc)
        try:
            got, lot_id, summary, balances = run_engine(prog_dir, runs, d / "ledger.duckdb")
        except CatalogError as e:
            got, engine_refused = None, e
        else:
            engine_refused = None
        try:
            want = run_oracle(prog_files, [[r.for_oracle() for r in b] for b in sc.batches],
                              [[o.for_oracle() for o in b] for b in sc.operations],
                              lot_id=lot_id if got is not None else None)
            oracle_refused = None
        except (ValueError, Unsupported) as e:
            want, oracle_refused = None, e
        assert (oracle_refused is None) == (engine_refused is None), (
            f"program load: oracle {oracle_refused or 'accepted'}; engine {engine_refused or 'accepted'}")
        if want is None:
            return
        assert_same(want, got)
        # semantics.md 12: current_balance summed over programs is what participants (and groups) hold.
        assert summary == balances == holder_totals(want.accounts)


@settings(max_examples=EXAMPLES, **SETTINGS)
@given(sc=L.ledger_scenarios())
def test_ledger_equals_oracle(sc):
    check(sc)


@settings(max_examples=max(EXAMPLES // 5, 10), **SETTINGS)
@given(sc=L.group_lot_scenarios())
def test_group_lots_equal_oracle(sc):
    """Group lots that expire and mature, touched by rule targets and operations, in 1-3 batches."""
    check(sc)


# ---------------------------------------------------------------------------------------------
# Disagreements found by the property test, minimised.

D = Decimal
T = "2025-03-01T"


def _program(rules: list[dict], **program) -> dict:
    return {"program": {"key": S.PROGRAM, "name": "Shop", **program},
            "assets": [{"symbol": "PTS", "name": "Points", "scale": 0},
                       {"symbol": "LP", "name": "Lot points", "scale": 0, "inventory_mode": "LOT"},
                       {"symbol": "GC", "name": "Gift credit", "scale": 0, "issuance_policy": "PREFUNDED"}],
            "rules": rules}


def _ev(key: str, who: str, at: str, data: dict, **kw) -> S.Row:
    return S.Row(S.PROGRAM, key, who, T + at, json.dumps(data), **kw)


def _op(key: str, operation: str, who: str | None, at: str, params: dict) -> L.OpRow:
    return L.OpRow(S.PROGRAM, key, operation, who, T + at, json.dumps(params))


# Found by the property test; the engine was wrong and has been fixed.
def test_regression_operation_on_participant_created_by_a_target():
    # decisions.md: a participant is created by "an action target ... that names an unknown external
    # id" in a CREATE program, and operations name an existing participant. k0 (09:00) creates u2 as
    # its target; the tag operation on u2 at 10:00 comes after it in the stream (semantics.md 3), so
    # it completes. The engine failed it with participant_not_found: engine/intake.py decided
    # existence from events' subjects and recipients only, before the stream ran (now such a row is
    # deferred to its turn in the kernel).
    result = _both(L.LedgerScenario(
        [_program([{"name": "Refer", "key": "refer", "condition": "true",
                    "actions": [{"type": "TAG", "tag": "referred",
                                 "target": {"type": "PARTICIPANT", "external_id": "event.friend"}}]}])],
        [[_ev("k0", "u1", "09:00:00Z", {"friend": "u2"})]],
        [[_op("o0", "tag", "u2", "10:00:00Z", {"tag": "vip"})]]))
    assert result.operations[("shop", "o0")] == ("COMPLETED", None)
    assert result.participants["u2"]["tags"] == ["referred", "vip"]


# Found while fixing the test above (the same cause); the engine was wrong and has been fixed.
def test_regression_event_of_a_reject_program_for_a_participant_created_by_a_target():
    # The same for an event: club (REJECT) finds u2 at 10:00, created at 09:00 by shop's target, and
    # u2 is enrolled in club by that event (and in shop by its creation there at 09:00: semantics.md
    # 5.1 "create and enrol"). Before it (08:00) u2 does not exist: participant_not_found.
    sc = L.LedgerScenario(
        [_program([{"name": "Refer", "key": "refer", "condition": "has(event.friend)",
                    "actions": [{"type": "TAG", "tag": "referred",
                                 "target": {"type": "PARTICIPANT", "external_id": "event.friend"}}]}]),
         _program([{"name": "Visit", "key": "visit", "condition": "true",
                    "actions": [{"type": "COUNTER", "key": "visits", "value": "1"}]}],
                  key=S.OTHER, name="Club", on_unknown_participant="REJECT")],
        [[S.Row(S.OTHER, "c0", "u2", T + "08:00:00Z", "{}"), _ev("k0", "u1", "09:00:00Z", {"friend": "u2"}),
          S.Row(S.OTHER, "c1", "u2", T + "10:00:00Z", "{}")]], [[]])
    result = _both(sc)
    assert result.events[(S.OTHER, "c0")] == ("FAILED", "participant_not_found")
    assert result.events[(S.OTHER, "c1")] == ("COMPLETED", None)
    assert result.participants["u2"] == {"tags": ["referred"], "counters": {"visits": D(1)}, "attributes": {}}
    with tempfile.TemporaryDirectory() as tmp:  # enrolled in club by c1 (the oracle does not model enrollments)
        d = Path(tmp)
        prog_dir, _, runs = _write(d, sc)
        for ev_file, op_file in runs:
            run_batch(prog_dir, ev_file, d / "ledger.duckdb", operations=op_file)
        with duckdb.connect(str(d / "ledger.duckdb"), read_only=True) as con:
            enrolled = con.execute(
                "SELECT pr.key, hour(e.enrolled_at AT TIME ZONE 'UTC') FROM enrollments e "
                "JOIN programs pr ON pr.id = e.program_id JOIN participants pa ON pa.id = e.participant_id "
                "WHERE pa.external_id = 'u2' ORDER BY 2").fetchall()
    assert enrolled == [(S.PROGRAM, 9), (S.OTHER, 10)]


# Found while fixing the tests above (the same cause); the engine was wrong and has been fixed.
def test_regression_a_target_creates_a_participant_whose_first_event_comes_later():
    # decisions.md: created_at is the creating event's timestamp, and a target creates. k0's target
    # creates u2 at 09:00; u2's own first event (k1, 10:00) finds it. The engine created u2 at intake
    # for the whole batch, from k1 (created_at 10:00), so the target found it instead of creating
    # it. The second batch (k2) reads created_at back from the ledger.
    result = _both(L.LedgerScenario(
        [_program([{"name": "Refer", "key": "refer", "condition": "has(event.friend)",
                    "actions": [{"type": "TAG", "tag": "referred",
                                 "target": {"type": "PARTICIPANT", "external_id": "event.friend"}}]},
                   {"name": "Early", "key": "early",
                    "condition": 'participant.created_at < timestamp("2025-03-01T09:30:00Z")',
                    "actions": [{"type": "COUNTER", "key": "early", "value": "1"}]}])],
        [[_ev("k0", "u1", "09:00:00Z", {"friend": "u2"}), _ev("k1", "u2", "10:00:00Z", {})],
         [_ev("k2", "u2", "11:00:00Z", {})]], [[], []]))
    assert result.participants["u2"]["counters"] == {"early": D(2)}


def _both(sc: L.LedgerScenario) -> OracleResult:
    """Check engine == oracle, and return the oracle's result for hand-computed assertions."""
    check(sc)
    with tempfile.TemporaryDirectory() as tmp:
        _, files, _ = _write(Path(tmp), sc)
        return run_oracle(files, [[r.for_oracle() for r in b] for b in sc.batches],
                          [[o.for_oracle() for o in b] for b in sc.operations])


# Found by the property test; the engine was wrong and has been fixed.
def test_regression_target_lots_expire_before_the_target_is_debited():
    # semantics.md 3: before an event at t is evaluated, everything due at or before t for the
    # entities it touches has happened; 9.1: expired lots are never spendable. u2's lot of 5 expires
    # at 10:00; at 11:00 u1's event debits 3 from u2 as its target. The expiry (5, at 10:00) comes
    # first, so u2 has 0 and the debit fails. The engine applied due changes only to the event's
    # participant and recipient: it passed the balance check with the expired 5 and took nothing
    # from the lots.
    result = _both(L.LedgerScenario(
        [_program([{"name": "Earn", "key": "earn", "condition": 'event.type == "earn"',
                    "actions": [{"type": "CREDIT", "asset": "LP", "amount": "5", "expires_at": "1h"}]},
                   {"name": "Gift", "key": "gift", "condition": 'event.type == "gift"',
                    "actions": [{"type": "DEBIT", "asset": "LP", "amount": "3",
                                 "target": {"type": "PARTICIPANT", "external_id": "event.friend"}}]}])],
        [[_ev("k0", "u2", "09:00:00Z", {"type": "earn"}), _ev("k1", "u1", "09:00:00Z", {"type": "visit"}),
          _ev("k2", "u1", "11:00:00Z", {"type": "gift", "friend": "u2"})]], [[]]))
    assert result.events[("shop", "k2")] == ("FAILED", "insufficient_balance")
    expiry = [e for e in result.ledger if e.action_type == "EXPIRATION"]
    assert [(e.source[1], e.amount, e.effective_at.hour) for e in expiry] == [("u2", D(5), 9 + 1)]
    assert ("PARTICIPANT", "u2", "LP", "AVAILABLE") not in result.accounts  # 5 - 5 = 0


# Found by the property test; the engine was wrong and has been fixed.
def test_regression_an_operation_applies_due_counter_resets_of_its_participant():
    # semantics.md 3: a counter's reset_after is a time-driven change, due for the participant an
    # operation touches. visits = 2 at 09:00 with reset_after 1h; the adjust at 11:00 touches u1
    # after the reset was due (10:00), so visits is 0. The engine left 2 (operations other than the
    # state ones never read the participant's state).
    result = _both(L.LedgerScenario(
        [_program([])], [[]],
        [[_op("o0", "upsert_participant", "u1", "08:00:00Z", {}),
          _op("o1", "set_counter", "u1", "09:00:00Z", {"key": "visits", "value": "2", "reset_after": "1h"}),
          _op("o2", "adjust", "u1", "11:00:00Z", {"asset": "PTS", "amount": "1", "type": "CREDIT"})]]))
    assert result.participants["u1"]["counters"] == {"visits": D(0)}


# Found by the property test; the engine was wrong (inconsistent) and has been fixed.
def test_regression_operations_check_the_participant_before_their_params():
    # Contract silent on which error wins; the oracle's choice (tests/oracle/README.md) is the one
    # most operations already followed: asset, then participant_inactive, then the other params.
    # adjust and set_counter checked their amount / value first.
    result = _both(L.LedgerScenario(
        [_program([])], [[]],
        [[_op("o0", "upsert_participant", "u1", "08:00:00Z", {"status": "SUSPENDED"}),
          _op("o1", "adjust", "u1", "09:00:00Z", {"asset": "PTS", "amount": "x", "type": "CREDIT"}),
          _op("o2", "set_counter", "u1", "09:00:00Z", {"key": "visits", "value": "abc"}),
          _op("o3", "hold", "u1", "09:00:00Z", {"asset": "PTS", "amount": "-1"})]]))
    assert {k: v for k, v in result.operations.items() if k[1] != "o0"} == {
        ("shop", key): ("FAILED", "participant_inactive") for key in ("o1", "o2", "o3")}


# Found by the property test; the engine was wrong and has been fixed.
def test_regression_transfer_to_a_participant_created_later_in_the_stream():
    # semantics.md 3 and decisions.md: participants exist from the event that creates them, in
    # stream order. u2's first event is at 09:00; u1's transfer to u2 at 08:00 names a participant
    # that does not exist yet: participant_not_found. The engine found u2 (participants were created
    # at intake for the whole batch) and failed the transfer for u1's balance instead
    # (insufficient_balance); with a balance it would have completed.
    result = _both(L.LedgerScenario(
        [_program([{"name": "Earn", "key": "earn", "condition": "true",
                    "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "5"}]}])],
        [[_ev("k0", "u1", "07:00:00Z", {}), _ev("k1", "u2", "09:00:00Z", {})]],
        [[_op("o0", "transfer", "u1", "08:00:00Z", {"asset": "PTS", "recipients": [{"external_id": "u2", "amount": "1"}]}),
          _op("o1", "transfer", "u1", "10:00:00Z", {"asset": "PTS", "recipients": [{"external_id": "u2", "amount": "1"}]})]]))
    assert result.operations == {("shop", "o0"): ("FAILED", "participant_not_found"), ("shop", "o1"): ("COMPLETED", None)}


# Found while probing the strategies' edge cases; the engine was wrong and has been fixed.
def test_regression_a_lot_expiring_at_creation_is_not_spendable():
    # semantics.md 9.1: "Expired lots are never spendable, even before the expiry entry is
    # written." The CREDIT of 5 with expires_at 0s expires at its own `now`; the DEBIT of 3 in the
    # same event finds nothing spendable: insufficient_balance, the event rolls back (5.5). The
    # engine checked the AVAILABLE balance (5), then took nothing from the lots (verify:
    # lot_remainders).
    result = _both(L.LedgerScenario(
        [_program([{"name": "E", "key": "e", "condition": "true",
                    "actions": [{"type": "CREDIT", "asset": "LP", "amount": "5", "expires_at": "0s"},
                                {"type": "DEBIT", "asset": "LP", "amount": "3"}]}])],
        [[_ev("k0", "u1", "01:00:00Z", {})]], [[]]))
    assert result.events[("shop", "k0")] == ("FAILED", "insufficient_balance")
    assert result.ledger == [] and result.lots == {}


def test_reversal_for_an_inactive_participant_completes():
    # semantics.md 7 lists the actions an inactive participant cannot take; operations are not
    # listed. decisions.md: a reversal corrects an earlier redemption (the participant's own value
    # coming back), so it completes for a SUSPENDED participant, like VOID_HOLD.
    check(L.LedgerScenario([_program([])], [[]], [[
        _op("s", "upsert_participant", "u1", "00:00:00Z", {}),
        _op("a", "adjust", "u1", "01:00:00Z", {"asset": "PTS", "amount": "10", "type": "CREDIT"}),
        _op("r", "redeem", "u1", "02:00:00Z", {"asset": "PTS", "amount": "4"}),
        _op("x", "set_participant_status", "u1", "03:00:00Z", {"status": "SUSPENDED"}),
        _op("v", "reverse_redemption", "u1", "04:00:00Z", {"redemption": "r"})]]))


def _reversal_entries(result: OracleResult, key: str) -> list[tuple]:
    return [(e.action_type, e.source, e.dest, e.amount, e.effective_at.strftime("%H:%M"))
            for e in result.ledger if e.origin is not None and e.origin[:2] == ("operation", key)]


LP_U1 = ("PARTICIPANT", "u1", "LP", "AVAILABLE")
BREAKAGE_LP = ("SYSTEM_BREAKAGE", None, "LP", "AVAILABLE")
REDEMPTION_LP = ("SYSTEM_REDEMPTION", None, "LP", "AVAILABLE")


def _expiring_lot_of_5() -> tuple[list[dict], list[list[S.Row]]]:
    """Programs and event batches of the reversal scenarios below (fresh for each): u1's event
    k0 at 01:00 makes a lot of 5 LP (rule e, action 0) that expires at 02:00."""
    return ([_program([{"name": "E", "key": "e", "condition": "true",
                        "actions": [{"type": "CREDIT", "asset": "LP", "amount": "5", "expires_at": "1h"}]}])],
            [[_ev("k0", "u1", "01:00:00Z", {})]])


# Found by the property test; the engine was wrong and has been fixed.
def test_regression_reversal_gives_nothing_back_to_a_lot_past_its_expiry():
    # decisions.md, "Reversals": LOT value goes back LIFO to the lots it came from; a lot past its
    # expires_at (semantics.md 9.1: "even before the expiry entry is written") takes nothing back,
    # and the value it cannot take comes back expired. The lot of 5 (expires 02:00) was fully
    # redeemed at 01:30, so it is CONSUMED and never got an EXPIRATION; the reversal at 03:00 gives
    # the 5 back (REDEMPTION_REVERSAL) and expires it at once (EXPIRATION, part 1, at 03:00). The
    # engine revived the lot (AVAILABLE 5 again: unspendable, and its expiry entry would be dated
    # 02:00, before the reversal).
    result = _both(L.LedgerScenario(
        *_expiring_lot_of_5(),
        [[_op("r", "redeem", "u1", "01:30:00Z", {"asset": "LP", "amount": "5"}),
          _op("v", "reverse_redemption", "u1", "03:00:00Z", {"redemption": "r"})]]))
    lot = result.lots[("shop", "event", "k0", "e", 0)]
    assert (lot[3], lot[4]) == (D(0), "CONSUMED")  # remaining 5 - 5 = 0, and no value comes back to it
    assert _reversal_entries(result, "v") == [("REDEMPTION_REVERSAL", REDEMPTION_LP, LP_U1, D(5), "03:00"),
                                              ("EXPIRATION", LP_U1, BREAKAGE_LP, D(5), "03:00")]
    assert LP_U1 not in result.accounts and result.accounts[BREAKAGE_LP] == D(5)
    assert result.redemptions[("shop", "r")][3] == D(5)  # fully reversed


# Found while fixing the test above; the engine (and the oracle) were wrong and have been fixed.
def test_regression_reversal_to_an_expired_lot_keeps_the_lots_whole():
    # An EXPIRED lot took nothing back, and both the engine and the oracle put the value in
    # AVAILABLE without a lot: never spendable, never expiring, and `perkflow verify`
    # (lot_remainders) failed. Now it comes back expired (decisions.md, "Reversals"). The lot of 5
    # (expires 02:00) gave 3 to the redemption at 01:30 and expired its other 2 at 02:00 (written
    # when the adjust at 02:30 touched u1); the reversal of 1 at 03:00 and of the other 2 at 04:00
    # each come back and expire at once.
    result = _both(L.LedgerScenario(
        *_expiring_lot_of_5(),
        [[_op("r", "redeem", "u1", "01:30:00Z", {"asset": "LP", "amount": "3"}),
          _op("t", "adjust", "u1", "02:30:00Z", {"asset": "PTS", "amount": "1", "type": "CREDIT"}),
          _op("v", "reverse_redemption", "u1", "03:00:00Z", {"redemption": "r", "amount": "1"}),
          _op("w", "reverse_redemption", "u1", "04:00:00Z", {"redemption": "r"})]]))
    lot = result.lots[("shop", "event", "k0", "e", 0)]
    assert (lot[3], lot[4]) == (D(0), "EXPIRED")
    assert _reversal_entries(result, "v") == [("REDEMPTION_REVERSAL", REDEMPTION_LP, LP_U1, D(1), "03:00"),
                                              ("EXPIRATION", LP_U1, BREAKAGE_LP, D(1), "03:00")]
    assert _reversal_entries(result, "w") == [("REDEMPTION_REVERSAL", REDEMPTION_LP, LP_U1, D(2), "04:00"),
                                              ("EXPIRATION", LP_U1, BREAKAGE_LP, D(2), "04:00")]
    assert LP_U1 not in result.accounts and result.accounts[BREAKAGE_LP] == D(5)


# Found while fixing the tests above; the engine (and the oracle) were wrong and have been fixed.
def test_regression_reversal_gives_back_to_live_lots_and_expires_the_rest():
    # Lot A (3, expires 02:00, created 01:00) and lot B (4, no expiry, created 01:10); the
    # redemption of 5 at 01:30 takes A's 3 (FIFO; A is CONSUMED) and 2 of B. The reversal of 4 at
    # 03:00: B takes back its 2 (LIFO), A, past its expiry, nothing; the other 2 expire.
    result = _both(L.LedgerScenario(
        [_program([{"name": "A", "key": "a", "condition": 'event.type == "a"',
                    "actions": [{"type": "CREDIT", "asset": "LP", "amount": "3", "expires_at": "1h"}]},
                   {"name": "B", "key": "b", "condition": 'event.type == "b"',
                    "actions": [{"type": "CREDIT", "asset": "LP", "amount": "4"}]}])],
        [[_ev("k0", "u1", "01:00:00Z", {"type": "a"}), _ev("k1", "u1", "01:10:00Z", {"type": "b"})]],
        [[_op("r", "redeem", "u1", "01:30:00Z", {"asset": "LP", "amount": "5"}),
          _op("v", "reverse_redemption", "u1", "03:00:00Z", {"redemption": "r", "amount": "4"})]]))
    a, b = result.lots[("shop", "event", "k0", "a", 0)], result.lots[("shop", "event", "k1", "b", 0)]
    assert (a[3], a[4]) == (D(0), "CONSUMED") and (b[3], b[4]) == (D(4), "AVAILABLE")
    assert _reversal_entries(result, "v") == [("REDEMPTION_REVERSAL", REDEMPTION_LP, LP_U1, D(4), "03:00"),
                                              ("EXPIRATION", LP_U1, BREAKAGE_LP, D(2), "03:00")]
    assert result.accounts[LP_U1] == D(4) and result.accounts[BREAKAGE_LP] == D(2)


# Found while fixing the tests above; the engine was wrong and has been fixed.
def test_regression_a_reversal_applies_what_is_due_for_the_redeemer():
    # decisions.md: time-driven changes happen for every participant an operation touches before it
    # reads or writes it. u2's operation reverses u1's redemption: u1's lot (5, expires 02:00, 3
    # redeemed at 01:30) expires its 2 at 02:00 first, then the 3 come back expired. The engine
    # touched only the operation's participant (u2), so u1's lot kept its 2 past its expiry.
    result = _both(L.LedgerScenario(
        *_expiring_lot_of_5(),
        [[_op("u", "upsert_participant", "u2", "00:00:00Z", {}),
          _op("r", "redeem", "u1", "01:30:00Z", {"asset": "LP", "amount": "3"}),
          _op("v", "reverse_redemption", "u2", "03:00:00Z", {"redemption": "r"})]]))
    expiry = [(e.source[1], e.amount, e.effective_at.strftime("%H:%M")) for e in result.ledger
              if e.action_type == "EXPIRATION" and e.origin is None]
    assert expiry == [("u1", D(2), "02:00")]
    assert LP_U1 not in result.accounts


# Found by the property test with the stronger strategies (wt-verify); the engine was wrong and
# has been fixed. decisions.md ("Operations and rewards"): LOT value goes back LIFO to the lots it
# came from; only a lot expired at the reversal takes nothing back. u4's lot of 10 (no expiry) gave
# 5 to the redemption at 20:00 (batch 1); in batch 2 u2's operation reverses it, timestamped 08:30,
# before the redemption itself (a late row: processed after what was already processed,
# semantics.md 3, with its own instant). The 5 go back to the lot at 08:30. The engine loaded
# neither the redeemer (named by no row of batch 2) nor its lots, found none of the lots the
# redemption took, and sent the 5 to SYSTEM_BREAKAGE as an EXPIRATION part (engine/operations.py
# `_reverse` now loads the redeemer and the lots taken).
def test_regression_a_reversal_by_another_participant_in_a_later_batch_finds_the_redeemers_lots():
    result = _both(L.LedgerScenario(
        [_program([])], [[], []],
        [[_op("s4", "upsert_participant", "u4", "00:00:00Z", {}),
          _op("s2", "upsert_participant", "u2", "00:00:00Z", {}),
          _op("a", "adjust", "u4", "00:00:00Z", {"asset": "LP", "amount": "10", "type": "CREDIT"}),
          _op("r", "redeem", "u4", "20:00:00Z", {"asset": "LP", "amount": "5"})],
         [_op("v", "reverse_redemption", "u2", "08:30:00Z", {"redemption": "r", "amount": "5"})]]))
    u4 = ("PARTICIPANT", "u4", "LP", "AVAILABLE")
    assert _reversal_entries(result, "v") == [("REDEMPTION_REVERSAL", REDEMPTION_LP, u4, D(5), "08:30")]
    lot = result.lots[("shop", "operation", "a", None, 0)]
    assert (lot[3], lot[4]) == (D(10), "AVAILABLE")
    assert result.accounts[u4] == D(10) and BREAKAGE_LP not in result.accounts


# Found while fixing the test above; the engine was wrong and has been fixed. A lot the redemption
# consumed whole is CONSUMED, and a later batch loaded only lots that still hold value
# (sql/lookups.sql entity_lots), so even the redeemer's own reversal found no lot to give back to
# and expired the value. Now the lots a redemption took are loaded by id (lots_by_id).
def test_regression_a_reversal_in_a_later_batch_gives_back_to_a_lot_the_redemption_consumed_whole():
    result = _both(L.LedgerScenario(
        [_program([])], [[], []],
        [[_op("s4", "upsert_participant", "u1", "00:00:00Z", {}),
          _op("a", "adjust", "u1", "00:00:00Z", {"asset": "LP", "amount": "10", "type": "CREDIT"}),
          _op("r", "redeem", "u1", "20:00:00Z", {"asset": "LP", "amount": "10"})],
         [_op("v", "reverse_redemption", "u1", "21:30:00Z", {"redemption": "r", "amount": "5"})]]))
    assert _reversal_entries(result, "v") == [("REDEMPTION_REVERSAL", REDEMPTION_LP, LP_U1, D(5), "21:30")]
    lot = result.lots[("shop", "operation", "a", None, 0)]
    assert (lot[3], lot[4]) == (D(5), "AVAILABLE")


_LATE = [_program([{"name": "A", "key": "a", "condition": 'event.type == "a"',
                    "actions": [{"type": "CREDIT", "asset": "LP", "amount": "5", "expires_at": "11h"}]},
                   {"name": "B", "key": "b", "condition": 'event.type == "b"',
                    "actions": [{"type": "CREDIT", "asset": "LP", "amount": "4"}]}])]


# Contract silent, decided (decisions.md, "Operations and rewards": a reversal that arrives late).
def test_a_late_reversal_gives_back_to_a_lot_not_expired_at_its_instant():
    # Lot A (5, created 01:00, expires 12:00) and lot B (4, no expiry); the redemption of 7 at
    # 10:00 takes all of A (CONSUMED: it never gets an expiry entry) and 2 of B; an adjust at 13:00
    # touches u1 (nothing of A is left to expire). Batch 2 holds the reversal, timestamped 09:00:
    # processed after 13:00 (semantics.md 3), its entry carries 09:00, and at 09:00 A has not
    # expired, so A takes its 5 back and B its 2. A is then past its expiry in the history already
    # processed: the next touch (14:00, batch 3) expires it, dated 12:00 (semantics.md 3: entries
    # of time-driven changes carry the instant they were due).
    result = _both(L.LedgerScenario(
        _LATE, [[_ev("k0", "u1", "01:00:00Z", {"type": "a"}), _ev("k1", "u1", "02:00:00Z", {"type": "b"})], [], []],
        [[_op("r", "redeem", "u1", "10:00:00Z", {"asset": "LP", "amount": "7"}),
          _op("t", "adjust", "u1", "13:00:00Z", {"asset": "PTS", "amount": "1", "type": "CREDIT"})],
         [_op("v", "reverse_redemption", "u1", "09:00:00Z", {"redemption": "r"})],
         [_op("w", "adjust", "u1", "14:00:00Z", {"asset": "PTS", "amount": "1", "type": "CREDIT"})]]))
    assert _reversal_entries(result, "v") == [("REDEMPTION_REVERSAL", REDEMPTION_LP, LP_U1, D(7), "09:00")]
    expiry = [(e.amount, e.effective_at.strftime("%H:%M")) for e in result.ledger if e.action_type == "EXPIRATION"]
    assert expiry == [(D(5), "12:00")]
    a, b = result.lots[("shop", "event", "k0", "a", 0)], result.lots[("shop", "event", "k1", "b", 0)]
    assert (a[3], a[4]) == (D(0), "EXPIRED") and (b[3], b[4]) == (D(4), "AVAILABLE")


def test_a_late_reversal_gives_nothing_back_to_a_lot_whose_expiry_was_already_written():
    # Lot A (5, expires 12:00) gave 3 to the redemption at 10:00; its other 2 expired at 12:00
    # (written when the adjust at 13:00 touched u1). The reversal, in batch 2 and timestamped
    # 09:00, comes after that expiry: history is never rewritten, so A stays EXPIRED and takes
    # nothing back, and the 3 come back expired at the reversal's own instant.
    result = _both(L.LedgerScenario(
        _LATE, [[_ev("k0", "u1", "01:00:00Z", {"type": "a"})], []],
        [[_op("r", "redeem", "u1", "10:00:00Z", {"asset": "LP", "amount": "3"}),
          _op("t", "adjust", "u1", "13:00:00Z", {"asset": "PTS", "amount": "1", "type": "CREDIT"})],
         [_op("v", "reverse_redemption", "u1", "09:00:00Z", {"redemption": "r"})]]))
    assert _reversal_entries(result, "v") == [("REDEMPTION_REVERSAL", REDEMPTION_LP, LP_U1, D(3), "09:00"),
                                              ("EXPIRATION", LP_U1, BREAKAGE_LP, D(3), "09:00")]
    a = result.lots[("shop", "event", "k0", "a", 0)]
    assert (a[3], a[4]) == (D(0), "EXPIRED")
    assert LP_U1 not in result.accounts and result.accounts[BREAKAGE_LP] == D(5)

# Found by the property test with the stronger strategies (1,500 cases); the engine was wrong and
# has been fixed. semantics.md 7: "An amount of exactly 0 is a no-op"; semantics.md 5 step 3: a
# rule's action amounts are evaluated before its actions apply. u1 holds nothing; the rule holds
# 1 and then releases `participant.balances.PTS.held`, which is 0 when evaluated, so the RELEASE
# does nothing (the oracle). The kernel read the 0 amount as "no amount" (engine/kernel.py
# `_amount` gives None for 0, which `_apply_value` took for a RELEASE without amount) and
# released everything held: a RELEASE of 1.
@pytest.mark.parametrize("amount", ["participant.balances.PTS.held", "0"])
def test_regression_a_release_of_zero_is_a_no_op_not_a_release_of_everything(amount):
    result = _both(L.LedgerScenario(
        [_program([{"name": "R", "key": "r", "condition": "true",
                    "actions": [{"type": "HOLD", "asset": "PTS", "amount": "1"},
                                {"type": "RELEASE", "asset": "PTS", "amount": amount}]}])],
        [[_ev("k0", "u1", "10:00:00Z", {})]],
        [[_op("s1", "upsert_participant", "u1", "00:00:00Z", {}),
          _op("a", "adjust", "u1", "00:00:00Z", {"asset": "PTS", "amount": "30", "type": "CREDIT"})]]))
    assert [(e.action_type, e.amount) for e in result.ledger if e.origin[1] == "k0"] == [("HOLD", D(1))]
    assert result.accounts[("PARTICIPANT", "u1", "PTS", "HELD")] == D(1)


# Found by the property test with the stronger strategies (wt-verify); the engine was wrong and
# has been fixed (main abd435e, from wt-pinned: engine/kernel.py `_toucher` applies a touched
# participant's due counter resets with its lots). The same cause as test_engine_vs_oracle's
# test_bug_a_credit_target_does_not_get_its_due_counter_reset: a due counter reset was applied to
# an event's or operation's own participant and recipient only. semantics.md 3: "before an event
# at time t is evaluated, everything due at or before t for the entities it touches has
# happened"; decisions.md ("Operations and rewards") lists the entities touched: an action's
# target, a transfer's recipients, a reversal's redeemer. The oracle was right.
_RESET_U1 = [_op("s1", "upsert_participant", "u1", "00:00:00Z", {}),
             _op("s2", "upsert_participant", "u2", "00:00:00Z", {}),
             _op("c", "set_counter", "u1", "08:00:00Z", {"key": "spend", "value": "-2", "reset_after": "1h"})]


def test_regression_a_credit_target_gets_its_due_counter_reset():
    # u1's spend = -2 at 08:00, reset due at 09:00; u2's event at 12:30 credits u1 as its target:
    # spend is 0 (oracle); the engine kept -2.
    result = _both(L.LedgerScenario(
        [_program([{"name": "R", "key": "r", "condition": "true",
                    "actions": [{"type": "CREDIT", "asset": "LP", "amount": "1",
                                 "target": {"type": "PARTICIPANT", "external_id": "event.friend"}}]}])],
        [[_ev("k0", "u2", "12:30:00Z", {"friend": "u1"})]], [_RESET_U1]))
    assert result.participants["u1"]["counters"] == {"spend": D(0)}


def test_regression_a_transfer_recipient_gets_its_due_counter_reset():
    # As above, u2 transfers 1 PTS to u1 at 12:00.
    result = _both(L.LedgerScenario(
        [_program([])], [[]],
        [_RESET_U1 + [_op("a", "adjust", "u2", "00:00:00Z", {"asset": "PTS", "amount": "5", "type": "CREDIT"}),
                      _op("t", "transfer", "u2", "12:00:00Z",
                          {"asset": "PTS", "recipients": [{"external_id": "u1", "amount": "1"}]})]]))
    assert result.participants["u1"]["counters"] == {"spend": D(0)}


def test_regression_a_reversals_redeemer_gets_its_due_counter_reset():
    # As above, u2's operation at 12:00 reverses u1's redemption of 01:00.
    result = _both(L.LedgerScenario(
        [_program([])], [[]],
        [_RESET_U1 + [_op("a", "adjust", "u1", "00:00:00Z", {"asset": "PTS", "amount": "5", "type": "CREDIT"}),
                      _op("r", "redeem", "u1", "01:00:00Z", {"asset": "PTS", "amount": "2"}),
                      _op("v", "reverse_redemption", "u2", "12:00:00Z", {"redemption": "r"})]]))
    assert result.participants["u1"]["counters"] == {"spend": D(0)}


def _kernel_journal(sc: L.LedgerScenario, *, kernel: bool) -> tuple[list, list, int]:
    """The engine's journal (seq, id, entry_hash, in seq order) and lots after every batch of `sc`,
    with every batch forced through the kernel (`kernel`) or not, and how many batches took it."""
    import engine.execute as execute
    calls = []
    original_seq, original_needs = execute._execute_sequential, execute.needs_kernel
    execute._execute_sequential = lambda *a, **k: calls.append(1) or original_seq(*a, **k)
    if kernel:
        execute.needs_kernel = lambda program: True
    con = duckdb.connect(":memory:")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            prog_dir, _, runs = _write(Path(tmp), sc)
            _run_batches(con, prog_dir, runs, Path(tmp) / "ledger.duckdb")
        journal = con.execute("SELECT seq, id, action_index, entry_hash FROM journal_entries ORDER BY seq").fetchall()
        lots = con.execute("SELECT id, entity_id, asset_id, amount, remaining, status, created_at, expires_at, "
                           "matures_at FROM lots ORDER BY id").fetchall()
        return journal, lots, len(calls)
    finally:
        execute._execute_sequential, execute.needs_kernel = original_seq, original_needs
        con.close()


def _set_based_equals_kernel(sc: L.LedgerScenario) -> None:
    """Every batch of `sc` takes the set-based path, and its ledger and lots are the kernel's
    entry for entry (ids, seqs and hashes: the order and numbering of due changes included)."""
    journal, lots, kernel_batches = _kernel_journal(sc, kernel=False)
    assert kernel_batches == 0, "a batch took the kernel: the case does not test the set-based path"
    assert (journal, lots) == _kernel_journal(sc, kernel=True)[:2]


def _club(credit: dict) -> dict:
    club = _program([{"name": "C", "key": "c", "condition": 'event.type == "earn"',
                      "actions": [{"type": "CREDIT", "asset": "LP", "amount": "3"} | credit]}])
    club["program"] |= {"key": S.OTHER, "name": "Club"}
    return club


_SHOP_PTS = {"name": "R", "key": "r", "condition": "true", "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}


# Found while fixing the set-based path's counter resets (test_engine_vs_oracle's
# test_regression_a_due_counter_reset_happens_in_a_batch_whose_programs_write_no_counters): the
# same gap for lots; engine/setwise_lots.py `settle` took the due lots of the events' subjects
# only. Fixed: it touches each event's subject, then its recipient, as the kernel does.
def test_regression_a_recipients_lot_expires_when_a_set_based_batch_touches_it():
    # semantics.md 3: everything due for the entities an event touches (its recipient too: the
    # kernel's touch(ev.recipient)) happens before it is evaluated. Club's k0 (09:00) gives u3 a
    # lot of 3 LP expiring 10:00. Batch 2 holds only shop's k1 (11:00, u1, recipient u3), whose
    # rule credits PTS: the set-based path. By hand: EXPIRATION of 3 LP from u3 to
    # SYSTEM_BREAKAGE, dated 10:00, written with k1 (oracle). Engine: none (with u3 as k1's own
    # participant it was written).
    sc = L.LedgerScenario(
        [_program([_SHOP_PTS], on_unknown_participant="REJECT"), _club({"expires_at": "1h"})],
        [[S.Row(S.OTHER, "k0", "u3", T + "09:00:00Z", '{"type": "earn"}'),
          S.Row(S.OTHER, "k9", "u1", T + "08:00:00Z", '{"type": "visit"}')],
         [_ev("k1", "u1", "11:00:00Z", {"type": "buy"}, recipient_external_id="u3")]], [[], []])
    result = _both(sc)
    expiry = [e for e in result.ledger if e.action_type == "EXPIRATION"]
    assert [(e.source[1], e.amount, e.effective_at.hour) for e in expiry] == [("u3", D(3), 10)]
    _set_based_equals_kernel(sc)


def test_regression_a_recipients_lot_matures_when_a_set_based_batch_touches_it():
    # As above, club's lot of 3 for u3 (09:00) matures after 30m (09:30) and expires after 2h
    # (11:00). Shop's k1 at 10:00 (u1, recipient u3): by hand, a MATURITY of 3 LP from u3's
    # DEFERRED to u3's AVAILABLE dated 09:30, no expiry; u3 holds 3 LP AVAILABLE and k1's 1 PTS.
    sc = L.LedgerScenario(
        [_program([_SHOP_PTS], on_unknown_participant="REJECT"), _club({"matures_at": "30m", "expires_at": "2h"})],
        [[S.Row(S.OTHER, "k0", "u3", T + "09:00:00Z", '{"type": "earn"}'),
          S.Row(S.OTHER, "k9", "u1", T + "08:00:00Z", '{"type": "visit"}')],
         [_ev("k1", "u1", "10:00:00Z", {"type": "buy"}, recipient_external_id="u3")]], [[], []])
    result = _both(sc)
    timed = [(e.action_type, e.source, e.dest, e.amount, (e.effective_at.hour, e.effective_at.minute))
             for e in result.ledger if e.origin is None]
    assert timed == [("MATURITY", ("PARTICIPANT", "u3", "LP", "DEFERRED"), ("PARTICIPANT", "u3", "LP", "AVAILABLE"),
                      D(3), (9, 30))]
    assert result.accounts[("PARTICIPANT", "u3", "LP", "AVAILABLE")] == D(3)
    assert ("PARTICIPANT", "u3", "LP", "DEFERRED") not in result.accounts
    assert result.accounts[("PARTICIPANT", "u3", "PTS", "AVAILABLE")] == D(1)
    _set_based_equals_kernel(sc)


def test_regression_a_recipient_that_is_also_a_subject_gets_its_due_lot_changes_in_kernel_order():
    # Club: "earn" gives 3 LP expiring after 1h, "earn2" 4 LP expiring after 2h. Batch 1: u1
    # earns at 08:00 (3, expires 09:00) and earn2s at 08:15 (4, 10:15); u3 earns at 09:00 (3,
    # 10:00) and earn2s at 09:00 (4, 11:00). Batch 2, only shop (1 PTS per event, to the
    # recipient when there is one; no LOT credit, so the set-based path): k3 09:30 u3, nothing
    # due; k1 10:30 u1, recipient u3: u1's two expiries (3 at 09:00, 4 at 10:15), then u3's
    # 3 at 10:00 (u3's second touch in the batch); k2 11:00 u3: its 4 at 11:00. By hand: u3
    # holds 3 PTS, nobody LP, breakage 3 + 4 + 3 + 4 = 14. The kernel numbers the expiries per
    # (event, holder, asset): at k1 u1's are 0 and 1, u3's is 0 (_set_based_equals_kernel).
    club = _club({"expires_at": "1h"})
    club["rules"].append({"name": "C2", "key": "c2", "condition": 'event.type == "earn2"',
                          "actions": [{"type": "CREDIT", "asset": "LP", "amount": "4", "expires_at": "2h"}]})
    sc = L.LedgerScenario(
        [_program([_SHOP_PTS], on_unknown_participant="REJECT"), club],
        [[S.Row(S.OTHER, "k8", "u1", T + "08:00:00Z", '{"type": "earn"}'),
          S.Row(S.OTHER, "k6", "u1", T + "08:15:00Z", '{"type": "earn2"}'),
          S.Row(S.OTHER, "k0", "u3", T + "09:00:00Z", '{"type": "earn"}'),
          S.Row(S.OTHER, "k5", "u3", T + "09:00:00Z", '{"type": "earn2"}')],
         [_ev("k3", "u3", "09:30:00Z", {"type": "visit"}),
          _ev("k1", "u1", "10:30:00Z", {"type": "buy"}, recipient_external_id="u3"),
          _ev("k2", "u3", "11:00:00Z", {"type": "visit"})]], [[], []])
    result = _both(sc)
    expiry = sorted((e.source[1], e.amount, (e.effective_at.hour, e.effective_at.minute))
                    for e in result.ledger if e.action_type == "EXPIRATION")
    assert expiry == [("u1", D(3), (9, 0)), ("u1", D(4), (10, 15)), ("u3", D(3), (10, 0)), ("u3", D(4), (11, 0))]
    # each expiry is written with the event that finds it: after k3's credit, before k1's / k2's
    batch2 = [(e.origin[1] if e.origin else "due", e.source[1], e.amount) for e in result.ledger[4:]]
    assert batch2[0] == ("k3", None, D(1))
    assert sorted(batch2[1:4], key=repr) == [("due", "u1", D(3)), ("due", "u1", D(4)), ("due", "u3", D(3))]
    assert batch2[4:] == [("k1", None, D(1)), ("due", "u3", D(4)), ("k2", None, D(1))]
    assert result.accounts[("PARTICIPANT", "u3", "PTS", "AVAILABLE")] == D(3)
    assert not [k for k in result.accounts if k[0] == "PARTICIPANT" and k[2] == "LP"]
    assert result.accounts[BREAKAGE_LP] == D(14)
    _set_based_equals_kernel(sc)


def test_group_lots_expire_and_mature_when_a_row_touches_the_group():
    # docs/decisions.md "Groups": a group's lots expire and mature like a participant's, applied
    # when an action targets the group or an operation names it. By hand (LP, scale 0):
    # k0 08:00 pool 10 (expires 10:00), k1 08:30 defer 6 (matures 09:30); k2 09:00 spend 4: 6 of
    # the first lot left, the deferred 6 not spendable yet; o1 09:45 group_adjust DEBIT 8: the
    # maturity (6 at 09:30) first, then 6 + 2 FIFO; o2 10:30 transfer 3 from u1 (earned 5 at
    # k3) to the group: the first lot's expiry (0 left: nothing written) and a lot of 3 without
    # expiry; o3 11:00 add_group_member names the group: nothing due; k4 12:00 spend 10 fails
    # (4 + 3 = 7); a deferred 2 credited at k5 12:00 with expires_at 1h30m, matures_at 2h
    # expires from DEFERRED at 13:30 before maturing: k6 14:00 forfeit 7 takes 4 + 3, the
    # expiry of 2 written first.
    group = {"type": "GROUP", "id": "family"}
    rules = [{"name": n, "key": n, "condition": f'event.type == "{n}"', "actions": [a]} for n, a in (
        ("pool", {"type": "CREDIT", "asset": "LP", "amount": "10", "expires_at": "2h", "target": group}),
        ("defer", {"type": "CREDIT", "asset": "LP", "amount": "6", "matures_at": "1h", "target": group}),
        ("spend", {"type": "DEBIT", "asset": "LP", "amount": "event.n", "target": group}),
        ("earn", {"type": "CREDIT", "asset": "LP", "amount": "5"}),
        ("late", {"type": "CREDIT", "asset": "LP", "amount": "2", "expires_at": "1h30m", "matures_at": "2h",
                  "target": group}),
        ("fine", {"type": "FORFEIT", "asset": "LP", "amount": "7", "target": group}))]
    program = _program(rules)
    program["groups"] = [{"key": "family", "name": "Family",
                          "members": [{"external_id": "u1", "role": "ADMIN"}, {"external_id": "u2"}]}]
    sc = L.LedgerScenario(
        [program],
        [[_ev("k0", "u1", "08:00:00Z", {"type": "pool"}), _ev("k1", "u2", "08:30:00Z", {"type": "defer"}),
          _ev("k2", "u1", "09:00:00Z", {"type": "spend", "n": 4}), _ev("k3", "u1", "09:00:00Z", {"type": "earn"})],
         [_ev("k4", "u2", "12:00:00Z", {"type": "spend", "n": 10}), _ev("k5", "u1", "12:00:00Z", {"type": "late"}),
          _ev("k6", "u2", "14:00:00Z", {"type": "fine"})]],
        [[_op("o1", "group_adjust", None, "09:45:00Z", {"group": "family", "asset": "LP", "amount": "8",
                                                        "type": "DEBIT"}),
          _op("o2", "transfer", "u1", "10:30:00Z", {"asset": "LP", "recipients": [{"group_id": "family",
                                                                                  "amount": "3"}]}),
          _op("o3", "remove_group_member", "u2", "11:00:00Z", {"group": "family"})], []])
    result = _both(sc)
    assert result.events[("shop", "k4")] == ("FAILED", "insufficient_balance")
    assert all(s == ("COMPLETED", None) for k, s in result.events.items() if k[1] != "k4")
    timed = [(e.action_type, e.amount, e.effective_at.hour, e.effective_at.minute)
             for e in result.ledger if e.origin is None]
    assert timed == [("MATURITY", D(6), 9, 30), ("EXPIRATION", D(2), 13, 30)]
    assert not [k for k in result.accounts if k[0] == "GROUP"]   # all spent, forfeited or expired
    assert result.accounts[("PARTICIPANT", "u1", "LP", "AVAILABLE")] == D(2)
    assert result.accounts[BREAKAGE_LP] == D(7) + D(2)
