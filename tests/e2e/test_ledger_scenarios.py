"""Every rule action and every operation against hand-computed balances, failure paths included
(semantics.md 2.3, 7, 8, 9), run through the engine into a real DuckDB file. A failing event or
operation is FAILED with its error code and changes no balance; after every batch `perkflow
verify` passes and ledger_summary's current balance equals what participants hold
(tests/helpers/scenario.py). Holds by reference, settles and voids: test_ledger_holds.py."""

from __future__ import annotations

from decimal import Decimal as D

from tests.helpers.io import query
from tests.helpers.scenario import Scenario, asset, at, ev, on, op

OK = ("COMPLETED", None)


def t(day: int, hour: int = 12) -> str:
    return at(f"2025-03-{day:02d} {hour:02d}:00")


CASH = asset("CASH", scale=2, max_transaction_amount="500")
VALUE_RULES = [
    on("earn", {"type": "CREDIT", "asset": "CASH", "amount": "event.n"}),
    on("pend", {"type": "CREDIT", "asset": "CASH", "amount": "event.n", "bucket": "HELD"}),
    on("spend", {"type": "DEBIT", "asset": "CASH", "amount": "event.n"}),
    on("claw", {"type": "DEBIT", "asset": "CASH", "amount": "event.n", "allow_negative": True}),
    on("hold", {"type": "HOLD", "asset": "CASH", "amount": "event.n"}),
    on("release", {"type": "RELEASE", "asset": "CASH", "amount": "event.n"}),
    on("release_all", {"type": "RELEASE", "asset": "CASH"}),
    on("forfeit", {"type": "FORFEIT", "asset": "CASH", "amount": "event.n"}),
    on("forfeit_held", {"type": "FORFEIT", "asset": "CASH", "amount": "event.n", "bucket": "HELD"}),
    on("tag", {"type": "TAG", "tag": "VIP"}),
    on("untag", {"type": "UNTAG", "tag": "vip"}),
    on("count", {"type": "COUNTER", "key": "visits", "value": "event.n"}),
    on("attr", {"type": "SET_ATTRIBUTE", "key": "level", "value": "event.level"}),
]


def test_value_actions_move_between_buckets_and_failures_change_nothing(tmp_path):
    s = Scenario(tmp_path, "shop", VALUE_RULES, [CASH])
    steps = [
        ("e01", "earn", "100.00", OK),
        ("e02", "pend", "20", OK),
        ("e03", "hold", "30", OK),
        ("e04", "release", "10", OK),
        ("e05", "forfeit", "5", OK),
        ("e06", "forfeit_held", "15", OK),
        ("e07", "release_all", None, OK),
        ("e08", "spend", "40", OK),
        ("e09", "spend", "61", ("FAILED", "insufficient_balance")),     # 60 available
        ("e10", "release", "1", ("FAILED", "insufficient_balance")),     # nothing held
        ("e11", "forfeit_held", "1", ("FAILED", "insufficient_balance")),
        ("e12", "hold", "60.01", ("FAILED", "insufficient_balance")),
        ("e13", "claw", "70", OK),                                        # overdraws to -10
        ("e14", "earn", "0.005", ("FAILED", "invalid_scale")),
        ("e15", "earn", "-3", ("FAILED", "amount_not_positive")),
        ("e16", "earn", "0", OK),                                         # exactly 0: a no-op
        ("e17", "earn", "600", ("FAILED", "max_transaction_amount_exceeded")),
    ]
    out = s.run(*[ev(key, "a", t(1, 1 + i), typ, **({} if n is None else {"n": float(n) if "." in n else int(n)}))
                  for i, (key, typ, n, _) in enumerate(steps)])
    for key, typ, n, expected in steps:
        assert out[key] == expected, (key, typ, n)
        if expected != OK:
            assert s.entries(key) == [], key
    assert s.entries("e16") == []
    available = D("100.00") - 30 + 10 - 5 + (20 + 30 - 10 - 15) - 40 - 70
    assert s.balance("a", "CASH") == (available, D(0), D(0))
    assert s.system("SYSTEM_BREAKAGE", "CASH") == D(5) + 15
    assert query(s.db, "SELECT total_issued, total_redeemed, total_forfeited, current_balance FROM ledger_summary") == [
        (D(100) + 20, D(40) + 70, D(5) + 15, available)]


def test_state_actions_and_inactive_participants(tmp_path):
    s = Scenario(tmp_path, "shop", VALUE_RULES, [CASH])
    out = s.run(ev("e1", "a", t(1, 1), "earn", n=50), ev("e2", "a", t(1, 2), "pend", n=10),
                ev("e3", "a", t(1, 3), "tag"), ev("e4", "a", t(1, 4), "count", n=2),
                ev("e5", "a", t(1, 5), "count", n=-0.5), ev("e6", "a", t(1, 6), "attr", level="gold"))
    assert set(out.values()) == {OK}
    assert s.state("a") == {("TAG", "vip"): None, ("COUNTER", "visits"): D(2) - D("0.5"), ("ATTRIBUTE", "level"): "gold"}
    for status in ("SUSPENDED", "CLOSED"):
        blocked = ["earn", "spend", "hold", "release", "forfeit", "count"]
        rows = [op("set_participant_status", f"{status}-s", "a", t(2 if status == "SUSPENDED" else 3, 1),
                   status=status)]
        rows += [ev(f"{status}-{typ}", "a", t(2 if status == "SUSPENDED" else 3, 2 + i), typ, n=1)
                 for i, typ in enumerate(blocked)]
        rows += [ev(f"{status}-untag", "a", t(2 if status == "SUSPENDED" else 3, 10), "untag"),
                 ev(f"{status}-attr", "a", t(2 if status == "SUSPENDED" else 3, 11), "attr", level=status.lower()),
                 ev(f"{status}-tag", "a", t(2 if status == "SUSPENDED" else 3, 12), "tag")]
        out = s.run(*rows)
        for typ in blocked:
            assert out[f"{status}-{typ}"] == ("FAILED", "participant_inactive"), (status, typ)
        assert out[f"{status}-untag"] == out[f"{status}-attr"] == out[f"{status}-tag"] == OK
        assert s.balance("a", "CASH") == (D(50), D(10), D(0))
        assert s.state("a")[("ATTRIBUTE", "level")] == status.lower()
        assert s.state("a")[("COUNTER", "visits")] == D(2) - D("0.5")
    out = s.run(op("set_participant_status", "back", "a", t(4, 1), status="ACTIVE"),
                ev("e7", "a", t(4, 2), "earn", n=5))
    assert out["e7"] == OK and s.balance("a", "CASH") == (D(50) + 5, D(10), D(0))


def test_deferred_value_cannot_be_spent_or_held_until_it_matures(tmp_path):
    lot = asset("PTS", "LOT")
    rules = [on("vest", {"type": "CREDIT", "asset": "PTS", "amount": "event.n", "matures_at": "240h"}),
             on("spend", {"type": "DEBIT", "asset": "PTS", "amount": "event.n"}),
             on("hold", {"type": "HOLD", "asset": "PTS", "amount": "event.n"})]
    s = Scenario(tmp_path, "shop", rules, [lot])
    out = s.run(ev("e1", "a", t(1), "vest", n=40),
                ev("e2", "a", t(2), "spend", n=1),
                ev("e3", "a", t(3), "hold", n=1))
    assert out["e2"] == out["e3"] == ("FAILED", "insufficient_balance")
    assert s.balance("a", "PTS") == (D(0), D(0), D(40))
    out = s.run(ev("e4", "a", t(11, 13), "spend", n=15),    # matured on day 11 at 12:00
                ev("e5", "a", t(11, 14), "hold", n=5))
    assert out["e4"] == out["e5"] == OK
    assert s.balance("a", "PTS") == (D(40) - 15 - 5, D(5), D(0))


REWARDS = [
    {"key": "mug", "name": "Mug", "redemption_type": "UNIT_BASED", "asset": "PTS", "unit_cost": "50",
     "max_total": 2, "max_per_participant": 1},
    {"key": "voucher", "name": "Voucher", "redemption_type": "AMOUNT_BASED", "asset": "PTS", "unit_cost": "10"},
    {"key": "old", "name": "Old", "redemption_type": "UNIT_BASED", "asset": "PTS", "unit_cost": "1",
     "available_until": "2025-01-01T00:00:00Z"},
    {"key": "soon", "name": "Soon", "redemption_type": "UNIT_BASED", "asset": "PTS", "unit_cost": "1",
     "available_from": "2026-01-01T00:00:00Z"},
    {"key": "gone", "name": "Gone", "redemption_type": "UNIT_BASED", "asset": "PTS", "unit_cost": "1",
     "status": "OUT_OF_STOCK"},
]


def test_every_operation_with_its_failure_paths(tmp_path):
    pts = asset("PTS")
    gift = asset("GIFT", policy="PREFUNDED", scale=2)
    s = Scenario(tmp_path, "shop", [on("noop", {"type": "TAG", "tag": "x"})], [pts, gift], rewards=REWARDS)
    out = s.run(op("upsert_participant", "u-a", "a", t(1, 1), attributes={"plan": "basic"}, tags=["New", "Web"]),
                op("upsert_participant", "u-b", "b", t(1, 2)),
                op("upsert_participant", "u-c", "c", t(1, 3), status="ACTIVE"))
    assert set(out.values()) == {OK}
    assert s.state("a") == {("ATTRIBUTE", "plan"): "basic", ("TAG", "new"): None, ("TAG", "web"): None}

    steps = [
        (op("adjust", "o01", "a", t(2, 1), type="CREDIT", asset="PTS", amount="500", description="d"), OK),
        (op("adjust", "o02", "a", t(2, 2), type="DEBIT", asset="PTS", amount="501", description="d"),
         ("FAILED", "insufficient_balance")),
        (op("adjust", "o03", "a", t(2, 3), type="CREDIT", asset="PTS", amount="1.5", description="d"),
         ("FAILED", "invalid_scale")),
        (op("adjust", "o04", "a", t(2, 4), type="CREDIT", asset="PTS", amount="-2", description="d"),
         ("FAILED", "amount_not_positive")),
        (op("adjust", "o05", "a", t(2, 5), type="CREDIT", asset="PTS", amount="0", description="d"),
         ("FAILED", "amount_not_positive")),
        (op("fund", "o06", None, t(2, 6), asset="GIFT", amount="100.00"), OK),
        (op("burn", "o07", None, t(2, 7), asset="GIFT", amount="30"), OK),
        (op("burn", "o08", None, t(2, 8), asset="GIFT", amount="70.01"), ("FAILED", "insufficient_wallet")),
        (op("adjust", "o09", "a", t(2, 9), type="CREDIT", asset="GIFT", amount="50", description="d"), OK),
        (op("adjust", "o10", "a", t(2, 10), type="CREDIT", asset="GIFT", amount="25", description="d"),
         ("FAILED", "insufficient_wallet")),                                       # 20 left in the wallet
        (op("redeem", "r1", "a", t(2, 11), asset="PTS", amount="100"), OK),
        (op("redeem_item", "r2", "a", t(2, 12), reward="mug"), OK),
        (op("redeem_item", "r3", "a", t(2, 13), reward="mug"), ("FAILED", "max_per_participant_exceeded")),
        (op("transfer", "x1", "a", t(2, 14), asset="PTS",
            recipients=[{"external_id": "b", "amount": "100"}, {"external_id": "c", "amount": "50"}]), OK),
        (op("transfer", "x2", "a", t(2, 15), asset="PTS", recipients=[{"external_id": "a", "amount": "1"}]),
         ("FAILED", "self_transfer")),
        (op("transfer", "x3", "a", t(2, 16), asset="PTS",
            recipients=[{"external_id": "b", "amount": "1"}] * 101), ("FAILED", "invalid_operation")),
        (op("transfer", "x4", "b", t(2, 17), asset="PTS", recipients=[{"external_id": "c", "amount": "101"}]),
         ("FAILED", "insufficient_balance")),
        (op("redeem_item", "r4", "b", t(2, 18), reward="mug"), OK),
        (op("redeem_item", "r5", "c", t(2, 19), reward="mug"), ("FAILED", "out_of_stock")),
        (op("redeem_item", "r6", "a", t(2, 20), reward="old"), ("FAILED", "reward_not_available")),
        (op("redeem_item", "r7", "a", t(2, 21), reward="soon"), ("FAILED", "reward_not_available")),
        (op("redeem_item", "r8", "a", t(2, 22), reward="gone"), ("FAILED", "reward_not_available")),
        (op("redeem_item", "r9", "a", t(3, 1), reward="voucher", amount="5"), ("FAILED", "below_minimum")),
        (op("redeem_item", "r10", "a", t(3, 2), reward="voucher", amount="20"), OK),
        (op("reverse_redemption", "v1", "a", t(3, 3), redemption="r1", amount="30"), OK),
        (op("reverse_redemption", "v2", "a", t(3, 4), redemption="r1", amount="71"), ("FAILED", "over_reversal")),
        (op("reverse_redemption", "v3", "a", t(3, 5), redemption="r1"), OK),          # the 70 left
        (op("reverse_redemption", "v4", "a", t(3, 6), redemption="r1", amount="1"), ("FAILED", "over_reversal")),
        (op("reverse_redemption", "v5", "a", t(3, 7), redemption="r2", quantity=1), OK),
        (op("reverse_redemption", "v6", "a", t(3, 8), redemption="nope"), ("FAILED", "redemption_not_found")),
        (op("hold", "h1", "a", t(3, 9), asset="PTS", amount="40", description="d"), OK),
        (op("release", "h2", "a", t(3, 10), asset="PTS", amount="15", description="d"), OK),
        (op("forfeit", "h3", "a", t(3, 11), asset="PTS", amount="5", bucket="HELD", description="d"), OK),
        (op("forfeit", "h4", "a", t(3, 12), asset="PTS", amount="3", bucket="AVAILABLE", description="d"), OK),
        (op("release", "h5", "a", t(3, 13), asset="PTS", amount="21", description="d"),
         ("FAILED", "insufficient_balance")),                                      # 20 held
        (op("set_counter", "s1", "a", t(3, 14), key="visits", value="7"), OK),
        (op("set_attribute", "s2", "a", t(3, 15), key="plan", value="gold"), OK),
        (op("tag", "s3", "a", t(3, 16), tag="Gold"), OK),
        (op("untag", "s4", "a", t(3, 17), tag="new"), OK),
        (op("set_participant_status", "s5", "a", t(3, 18), status="PAUSED"), ("FAILED", "invalid_operation")),
    ]
    out = s.run(*[row for row, _ in steps])
    for row, expected in steps:
        assert out[row["key"]] == expected, row
        if expected != OK:
            assert s.entries(row["key"]) == [], row["key"]
    a = D(500) - 100 - 50 - 100 - 50 - 20 + 30 + 70 + 50 - 40 + 15 - 3
    assert s.balance("a", "PTS") == (a, D(40) - 15 - 5, D(0))
    assert s.balance("b", "PTS") == (D(100) - 50, D(0), D(0))
    assert s.balance("c", "PTS") == (D(50), D(0), D(0))
    assert s.balance("a", "GIFT") == (D(50), D(0), D(0))
    assert s.wallet("GIFT") == D(100) - 30 - 50
    assert s.system("SYSTEM_REDEMPTION", "PTS") == D(100) + 50 + 50 + 20 - 30 - 70 - 50
    assert s.system("SYSTEM_BREAKAGE", "PTS") == D(5) + 3
    assert s.system("SYSTEM_BREAKAGE", "GIFT") == D(30)
    assert s.state("a") == {("ATTRIBUTE", "plan"): "gold", ("TAG", "web"): None, ("TAG", "gold"): None,
                            ("COUNTER", "visits"): D(7)}
    assert query(s.db, "SELECT status, reversed_amount FROM redemptions WHERE idempotency_key IN ('r1', 'r2') "
                       "ORDER BY idempotency_key") == [("FULLY_REVERSED", D(100)), ("FULLY_REVERSED", D(50))]

    # an inactive participant: value operations and counters fail, the rest works; the forfeit
    # operation works too (Scrip: "allowed on CLOSED participants", closed-account cleanup)
    rows = [op("set_participant_status", "i0", "c", t(4, 1), status="SUSPENDED"),
            op("adjust", "i1", "c", t(4, 2), type="CREDIT", asset="PTS", amount="1", description="d"),
            op("hold", "i2", "c", t(4, 3), asset="PTS", amount="1", description="d"),
            op("release", "i3", "c", t(4, 4), asset="PTS", description="d"),
            op("forfeit", "i4", "c", t(4, 5), asset="PTS", amount="1", bucket="AVAILABLE", description="d"),
            op("set_counter", "i5", "c", t(4, 6), key="k", value="1"),
            op("redeem", "i6", "c", t(4, 7), asset="PTS", amount="1"),
            op("transfer", "i7", "a", t(4, 8), asset="PTS", recipients=[{"external_id": "c", "amount": "1"}]),
            op("transfer", "i8", "c", t(4, 9), asset="PTS", recipients=[{"external_id": "a", "amount": "1"}]),
            op("tag", "i9", "c", t(4, 10), tag="paused"),
            op("set_attribute", "i10", "c", t(4, 11), key="why", value="review"),
            op("set_participant_status", "i11", "c", t(4, 12), status="CLOSED"),
            op("adjust", "i12", "c", t(4, 13), type="DEBIT", asset="PTS", amount="1", description="d"),
            op("set_participant_status", "i13", "c", t(4, 14), status="ACTIVE"),
            op("adjust", "i14", "c", t(4, 15), type="CREDIT", asset="PTS", amount="5", description="d")]
    out = s.run(*rows)
    failed = {"i1", "i2", "i3", "i5", "i6", "i7", "i8", "i12"}
    for row in rows:
        expected = ("FAILED", "participant_inactive") if row["key"] in failed else OK
        assert out[row["key"]] == expected, row
    assert s.balance("c", "PTS") == (D(50) - 1 + 5, D(0), D(0))
    assert s.balance("a", "PTS") == (a, D(20), D(0))
    assert s.system("SYSTEM_BREAKAGE", "PTS") == D(5) + 3 + 1
    assert s.state("c") == {("TAG", "paused"): None, ("ATTRIBUTE", "why"): "review"}


def test_a_reversal_in_a_later_batch_states_amounts_as_entered(tmp_path):
    # The redemption comes back from the ledger (DECIMAL(38, 18)) in the later batch; its amounts
    # read as entered in the messages: 100 redeemed, 30 reversed, 70 left; a mug costs 50.
    s = Scenario(tmp_path, "shop", [on("noop", {"type": "TAG", "tag": "x"})], [asset("PTS")], rewards=REWARDS)
    assert set(s.run(op("upsert_participant", "u-a", "a", t(1, 1)),
                     op("adjust", "o1", "a", t(1, 2), type="CREDIT", asset="PTS", amount="500", description="d"),
                     op("redeem", "r1", "a", t(1, 3), asset="PTS", amount="100"),
                     op("redeem_item", "r2", "a", t(1, 4), reward="mug")).values()) == {OK}
    out = s.run(op("reverse_redemption", "v1", "a", t(2, 1), redemption="r1", amount="30"),
                op("reverse_redemption", "v2", "a", t(2, 2), redemption="r1", amount="71"),
                op("reverse_redemption", "v3", "a", t(2, 3), redemption="r2", amount="20"))
    assert [out[k] for k in ("v1", "v2", "v3")] == [OK, ("FAILED", "over_reversal"), ("FAILED", "invalid_operation")]
    assert query(s.db, "SELECT idempotency_key, error_message FROM operations WHERE idempotency_key IN ('v2', 'v3') "
                       "ORDER BY 1") == [
        ("v2", "reverse_redemption: 71 exceeds the 70 left to reverse"),
        ("v3", "reverse_redemption: 20 is not a whole number of units of 50; reverse a UNIT_BASED redemption by quantity")]


def test_fund_and_burn_have_no_effect_on_unlimited_assets(tmp_path):
    # Scrip (scrip-reference 2): fund and burn "have no effect on UNLIMITED assets", which mint on
    # each credit: the operation completes and writes nothing; on a PREFUNDED asset it moves the
    # wallet. A bad amount still fails it, whatever the asset.
    gift = asset("GIFT", policy="PREFUNDED")
    s = Scenario(tmp_path, "shop", VALUE_RULES, [CASH, gift])
    out = s.run(op("fund", "f1", None, t(1), asset="CASH", amount="100"),
                op("burn", "f2", None, t(2), asset="CASH", amount="40"),
                op("fund", "f3", None, t(3), asset="CASH", amount="-1"),
                op("fund", "f4", None, t(4), asset="GIFT", amount="100"),
                op("burn", "f5", None, t(5), asset="GIFT", amount="40"))
    assert out == {"f1": OK, "f2": OK, "f3": ("FAILED", "amount_not_positive"), "f4": OK, "f5": OK}
    assert s.wallet("CASH") == D(0) and s.system("SYSTEM_ISSUANCE", "CASH") == D(0)
    assert s.wallet("GIFT") == D(100) - 40 and s.system("SYSTEM_BREAKAGE", "GIFT") == D(40)
    assert query(s.db, "SELECT action_type FROM journal_entries ORDER BY seq") == [("FUND",), ("BURN",)]


def test_a_prefunded_wallet_running_dry_fails_only_the_credits_it_cannot_pay(tmp_path):
    # The wallet holds 100 (fund, in a batch of its own). Credits of 60, 50 and 30 in stream
    # order: 60 is paid (40 left), 50 is more than the wallet holds and fails its whole event
    # with insufficient_wallet (its earlier rule's COUNTER is undone too), 30 still fits (10
    # left). Decided set-wise on the running-state path (engine/running.py), not by the kernel.
    gift = asset("GIFT", policy="PREFUNDED")
    rules = [on("cashback", {"type": "COUNTER", "key": "cashbacks", "value": "1"}, order=1),
             on("cashback", {"type": "CREDIT", "asset": "GIFT", "amount": "event.n"}, order=2)]
    rules[1]["key"] = "cashback_credit"
    s = Scenario(tmp_path, "shop", rules, [gift])
    assert s.run(op("fund", "f1", None, t(1), asset="GIFT", amount="100")) == {"f1": OK}
    out = s.run(ev("e1", "a", t(2, 1), "cashback", n=60), ev("e2", "b", t(2, 2), "cashback", n=50),
                ev("e3", "c", t(2, 3), "cashback", n=30))
    assert s.report.running_rounds > 0 and s.report.sequential_events == 0
    assert {k: v for k, v in out.items() if k.startswith("e")} == {
        "e1": OK, "e2": ("FAILED", "insufficient_wallet"), "e3": OK}
    assert query(s.db, "SELECT error_message FROM events WHERE idempotency_key = 'e2'") == [
        ("insufficient program wallet for CREDIT: GIFT 40, needs 50",)]
    assert s.wallet("GIFT") == D(100) - 60 - 30
    assert [s.balance(who, "GIFT")[0] for who in "abc"] == [D(60), D(0), D(30)]
    assert s.state("a") == {("COUNTER", "cashbacks"): D(1)} and s.state("b") == {}
    assert s.entries("e2") == []


def test_a_rerun_of_the_same_inputs_changes_nothing(tmp_path):
    s = Scenario(tmp_path, "shop", VALUE_RULES, [CASH])
    rows = [ev("e1", "a", t(1, 1), "earn", n=10), ev("e2", "a", t(1, 2), "hold", n=4)]
    s.run(*rows)
    before = query(s.db, "SELECT COUNT(*), SUM(amount) FROM postings WHERE amount > 0")
    s.run(*rows)   # a new file with the same idempotency keys: duplicates
    assert query(s.db, "SELECT COUNT(*), SUM(amount) FROM postings WHERE amount > 0") == before
    assert s.balance("a", "CASH") == (D(10) - 4, D(4), D(0))
