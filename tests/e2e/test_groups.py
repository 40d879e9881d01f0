"""Groups, PROGRAM targets of value actions and the program's redemption target (semantics.md 7,
8, 9.2, 9.4, 11, 2.3; docs/decisions.md "Groups", "PROGRAM targets", "Redemption target"),
through the engine into a real ledger. Every expected number is computed by hand in the comments;
Scenario.run checks `perkflow verify` and that ledger_summary's current balance is what
participants and groups hold, after every batch.
"""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from engine.catalog import load_catalog
from engine.errors import CatalogError
from tests.helpers.io import program_spec, query, write_program
from tests.helpers.scenario import Scenario, asset, at, ev, on, op

OK = ("COMPLETED", None)
FAMILY = {"key": "family", "name": "Family",
          "members": [{"external_id": "u1", "role": "ADMIN"}, {"external_id": "u2"}]}


def group_target(key: str = "family") -> dict:
    return {"type": "GROUP", "id": key}


def summary(s: Scenario, symbol: str = "PTS") -> tuple:
    return query(s.db, "SELECT total_issued, total_redeemed, total_expired, total_forfeited, current_balance "
                       "FROM ledger_summary WHERE asset_symbol = ?", [symbol])[0]


def test_rules_move_a_group_wallet_and_its_state(tmp_path):
    rules = [
        on("pool", {"type": "CREDIT", "asset": "PTS", "amount": "event.n", "target": group_target()},
           {"type": "COUNTER", "key": "pooled", "value": "event.n", "target": group_target()},
           {"type": "TAG", "tag": "Active", "target": group_target()}),
        # the group named by the event (a CEL id)
        on("spend", {"type": "DEBIT", "asset": "PTS", "amount": "event.n",
                     "target": {"type": "GROUP", "id": "event.group"}}),
        on("freeze", {"type": "HOLD", "asset": "PTS", "amount": "5", "target": group_target()}),
        on("unfreeze", {"type": "RELEASE", "asset": "PTS", "target": group_target()}),
        on("fine", {"type": "FORFEIT", "asset": "PTS", "amount": "1", "target": group_target()},
           {"type": "SET_ATTRIBUTE", "key": "fined", "value": "yes", "target": group_target()}),
    ]
    s = Scenario(tmp_path, "shop", rules, [asset("PTS")], groups=[FAMILY])
    out = s.run(ev("e1", "u1", at("2025-03-01 10:00"), "pool", n=10),
                ev("e2", "u2", at("2025-03-01 11:00"), "pool", n=5),          # group 15
                ev("e3", "u1", at("2025-03-01 12:00"), "spend", n=20, group="family"),  # 15 < 20
                ev("e4", "u1", at("2025-03-01 13:00"), "spend", n=4, group="family"),   # 11
                ev("e5", "u1", at("2025-03-01 14:00"), "freeze"),                       # 6 + 5 held
                ev("e6", "u1", at("2025-03-01 15:00"), "spend", n=1, group="nope"),
                ev("e7", "u2", at("2025-03-01 16:00"), "unfreeze"),                     # 11
                ev("e8", "u2", at("2025-03-01 17:00"), "fine"))                         # 10
    assert out == {"e1": OK, "e2": OK, "e3": ("FAILED", "insufficient_balance"), "e4": OK, "e5": OK,
                   "e6": ("FAILED", "group_not_found"), "e7": OK, "e8": OK}
    assert s.group("family", "PTS") == (D(10), D(0), D(0))
    # the members' own balances are untouched: the group is a wallet of its own
    assert s.balance("u1", "PTS") == s.balance("u2", "PTS") == (D(0), D(0), D(0))
    assert [(t, a) for t, a, _ in s.entries("e5") + s.entries("e7")] == [("HOLD", D(5)), ("RELEASE", D(5))]
    state = {(k, key): (t, n) for k, key, t, n in query(
        s.db, "SELECT kind, key, text_value, number_value FROM group_state WHERE group_key = 'family'")}
    assert state == {("COUNTER", "pooled"): (None, D(15)), ("TAG", "active"): (None, None),
                     ("ATTRIBUTE", "fined"): ("yes", None)}
    # issued 15 to the group; 4 debited back (redeemed); 1 forfeited: 15 - 4 - 1 = 10 held by the group
    assert summary(s) == (D(15), D(4), D(0), D(1), D(10))


def test_membership_operations_keep_an_admin(tmp_path):
    s = Scenario(tmp_path, "shop", [on("join", {"type": "TAG", "tag": "member"})], [asset("PTS")], groups=[FAMILY])
    s.run(*(ev(f"j{u}", f"u{u}", at("2025-03-01 09:00"), "join") for u in (1, 2, 3)))
    # founding members, from the program file
    assert s.members("family") == {"u1": ("ADMIN", "ACTIVE"), "u2": ("MEMBER", "ACTIVE")}
    t = lambda m: at(f"2025-03-01 10:{m:02d}")  # noqa: E731
    out = s.run(op("add_group_member", "o1", "u3", t(1), group="family"),
                op("add_group_member", "o2", "u3", t(2), group="family"),           # already active
                op("remove_group_member", "o3", "u1", t(3), group="family"),        # u1 is the only ADMIN
                op("set_group_member_role", "o4", "u1", t(4), group="family", role="MEMBER"),  # likewise
                op("set_group_member_role", "o5", "u2", t(5), group="family", role="ADMIN"),
                op("remove_group_member", "o6", "u1", t(6), group="family"),        # u2 is ADMIN now
                op("remove_group_member", "o7", "u1", t(7), group="family"),        # u1 has left
                op("add_group_member", "o8", "ghost", t(8), group="family"),       # no such participant
                op("add_group_member", "o9", "u3", t(9), group="nope"),
                op("add_group_member", "o10", "u1", t(10), group="family", role="OWNER"),
                op("add_group_member", "o11", "u1", t(11), group_id="family", role="ADMIN"))  # rejoins; Scrip's name
    assert out == {"j1": OK, "j2": OK, "j3": OK, "o1": OK, "o2": ("FAILED", "already_member"),
                   "o3": ("FAILED", "last_admin"), "o4": ("FAILED", "last_admin"), "o5": OK, "o6": OK,
                   "o7": ("FAILED", "not_a_member"), "o8": ("FAILED", "participant_not_found"),
                   "o9": ("FAILED", "group_not_found"), "o10": ("FAILED", "invalid_operation"), "o11": OK}
    assert s.members("family") == {"u1": ("ADMIN", "ACTIVE"), "u2": ("ADMIN", "ACTIVE"), "u3": ("MEMBER", "ACTIVE")}
    assert query(s.db, "SELECT p.external_id, m.joined_at IS NULL, m.left_at IS NULL FROM group_members m "
                       "JOIN participants p ON p.id = m.participant_id ORDER BY 1") == [
        ("u1", False, True), ("u2", True, True), ("u3", False, True)]  # u1 rejoined at o11; u2 a founder
    # a re-run changes nothing, and a later batch sees the stored membership
    out = s.run(op("remove_group_member", "o12", "u2", t(12), group="family"),
                op("remove_group_member", "o13", "u1", t(13), group="family"))   # now the last ADMIN
    assert out["o12"] == OK and out["o13"] == ("FAILED", "last_admin")
    assert s.members("family")["u2"] == ("ADMIN", "LEFT")


def test_membership_in_one_batch_or_two_is_the_same(tmp_path):
    rows = [ev("j1", "u1", at("2025-03-01 09:00"), "join"), ev("j2", "u2", at("2025-03-01 09:01"), "join"),
            op("set_group_member_role", "o1", "u2", at("2025-03-01 10:00"), group="family", role="ADMIN"),
            op("remove_group_member", "o2", "u1", at("2025-03-01 11:00"), group="family"),
            op("remove_group_member", "o3", "u2", at("2025-03-01 12:00"), group="family")]
    results = []
    for cut, name in ((len(rows), "one"), (3, "two")):
        s = Scenario(tmp_path / name, "shop", [on("join", {"type": "TAG", "tag": "m"})], [asset("PTS")], groups=[FAMILY])
        out = s.run(*rows[:cut])
        if cut < len(rows):
            out |= s.run(*rows[cut:])
        results.append((out, s.members("family")))
    assert results[0] == results[1]
    assert results[0][0]["o3"] == ("FAILED", "last_admin")
    assert results[0][1] == {"u1": ("ADMIN", "LEFT"), "u2": ("ADMIN", "ACTIVE")}


def test_an_archived_group_takes_no_value_and_no_member(tmp_path):
    archived = FAMILY | {"status": "ARCHIVED"}
    rules = [on("pool", {"type": "CREDIT", "asset": "PTS", "amount": "3", "target": group_target()}),
             on("mark", {"type": "TAG", "tag": "seen", "target": group_target()})]
    s = Scenario(tmp_path, "shop", rules, [asset("PTS")], groups=[archived])
    out = s.run(ev("e1", "u1", at("2025-03-01 10:00"), "pool"), ev("e2", "u1", at("2025-03-01 11:00"), "mark"),
                op("add_group_member", "o1", "u1", at("2025-03-01 12:00"), group="family"))
    # like an inactive participant: value actions and counters fail, tags still work
    assert out == {"e1": ("FAILED", "group_inactive"), "e2": OK, "o1": ("FAILED", "group_inactive")}


def test_a_program_target_moves_the_prefunded_wallet(tmp_path):
    gift = asset("GIFT", policy="PREFUNDED")
    rules = [on("topup", {"type": "CREDIT", "asset": "GIFT", "amount": "event.n", "target": {"type": "PROGRAM"}}),
             on("earn", {"type": "CREDIT", "asset": "GIFT", "amount": "event.n"}),
             on("unfund", {"type": "DEBIT", "asset": "GIFT", "amount": "event.n", "target": {"type": "PROGRAM"}}),
             on("burn", {"type": "FORFEIT", "asset": "GIFT", "amount": "event.n", "target": {"type": "PROGRAM"}})]
    s = Scenario(tmp_path, "shop", rules, [gift])
    out = s.run(ev("e1", "u1", at("2025-03-01 10:00"), "topup", n=20),   # wallet 20 (issuance -20)
                ev("e2", "u1", at("2025-03-01 11:00"), "earn", n=5),     # wallet 15, u1 5
                ev("e3", "u1", at("2025-03-01 12:00"), "unfund", n=3),   # wallet 12, issuance -17
                ev("e4", "u1", at("2025-03-01 13:00"), "burn", n=2),     # wallet 10, breakage 2
                ev("e5", "u1", at("2025-03-01 14:00"), "unfund", n=11),  # 10 < 11
                ev("e6", "u1", at("2025-03-01 15:00"), "earn", n=11))    # 10 < 11
    assert out == {"e1": OK, "e2": OK, "e3": OK, "e4": OK, "e5": ("FAILED", "insufficient_wallet"),
                   "e6": ("FAILED", "insufficient_wallet")}
    assert s.wallet("GIFT") == D(10) and s.balance("u1", "GIFT") == (D(5), D(0), D(0))
    assert s.system("SYSTEM_ISSUANCE", "GIFT") == D(-17) and s.system("SYSTEM_BREAKAGE", "GIFT") == D(2)
    # the wallet is not a holder: only u1's credit of 5 was issued
    assert summary(s, "GIFT") == (D(5), D(0), D(0), D(0), D(5))


@pytest.mark.parametrize("action, message", [
    ({"type": "CREDIT", "asset": "PTS", "amount": "1"}, "PTS is UNLIMITED: it has no program wallet"),
    ({"type": "HOLD", "asset": "GIFT", "amount": "1"}, "a PROGRAM target takes CREDIT, DEBIT or FORFEIT"),
    ({"type": "CREDIT", "asset": "GIFT", "amount": "1", "bucket": "HELD"}, "bucket: does not apply with a PROGRAM"),
    ({"type": "DEBIT", "asset": "GIFT", "amount": "1", "allow_negative": True}, "a program wallet may not go below"),
])
def test_program_targets_that_mean_nothing_are_rejected_at_load(tmp_path, action, message):
    spec = program_spec("shop", [on("x", action | {"target": {"type": "PROGRAM"}})],
                        assets=[asset("PTS"), asset("GIFT", policy="PREFUNDED")])
    write_program(tmp_path / "shop.yaml", spec)
    with pytest.raises(CatalogError) as e:
        load_catalog(tmp_path / "shop.yaml")
    assert "shop.yaml: rules[0] (x): actions[0]" in str(e.value) and message in str(e.value)


@pytest.mark.parametrize("groups, target, message", [
    ([FAMILY], {"type": "GROUP", "id": "friends"}, "target.id: 'friends' is not a group of this project"),
    ([FAMILY], {"type": "GROUP"}, "target.id: required for a GROUP target"),
    ([FAMILY], {"type": "GROUP", "id": "family", "external_id": "u1"}, "a GROUP target names its group by `id`"),
    ([{"key": "family", "name": "F", "members": [{"external_id": "u1"}]}], group_target(),
     "groups[0] (family): Value error, at least one member must be ADMIN"),
    ([{"key": "family", "name": "F", "members": []}], group_target(), "groups[0] (family).members"),
    ([{"key": "family", "name": "F", "members": [{"external_id": "u1", "role": "ADMIN"},
                                                 {"external_id": "u1"}]}],
     group_target(), "members: participant 'u1' is listed twice"),
])
def test_bad_groups_and_group_targets_are_rejected_at_load(tmp_path, groups, target, message):
    spec = program_spec("shop", [on("x", {"type": "CREDIT", "asset": "PTS", "amount": "1", "target": target})],
                        assets=[asset("PTS")]) | {"groups": groups}
    write_program(tmp_path / "shop.yaml", spec)
    with pytest.raises(CatalogError) as e:
        load_catalog(tmp_path / "shop.yaml")
    assert "shop.yaml" in str(e.value) and message in str(e.value)


def test_a_group_shared_by_two_files_must_be_the_same(tmp_path):
    for key, name in (("a", "Family"), ("b", "Familia")):
        write_program(tmp_path / f"{key}.yaml", program_spec(key, [on("x", {"type": "TAG", "tag": "t"})],
                                                             assets=[asset("PTS")])
                      | {"groups": [FAMILY | {"name": name}]})
    with pytest.raises(CatalogError, match=r"b.yaml: groups\[0\] \(family\) conflicts with its definition in .*a.yaml"):
        load_catalog(tmp_path)


def test_redemptions_post_to_the_programs_target_and_reversals_take_it_back_from_there(tmp_path):
    s = Scenario(tmp_path, "shop", [on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "100"})], [asset("PTS")],
                 redemption_target_type="SYSTEM_BREAKAGE")
    out = s.run(ev("e1", "u1", at("2025-03-01 10:00"), "earn"),
                op("redeem", "r1", "u1", at("2025-03-01 11:00"), asset="PTS", amount="30"),     # u1 70, breakage 30
                op("reverse_redemption", "v1", "u1", at("2025-03-01 12:00"), redemption="r1", amount="10"))  # 80, 20
    assert out == {"e1": OK, "r1": OK, "v1": OK}
    assert (s.system("SYSTEM_BREAKAGE", "PTS"), s.system("SYSTEM_REDEMPTION", "PTS")) == (D(20), D(0))
    # the program now posts to SYSTEM_REDEMPTION; r1 keeps the target it was made with (Scrip)
    write_program(s.programs / "shop.yaml", program_spec(
        "shop", [on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "100"})], assets=[asset("PTS")]))
    out = s.run(op("reverse_redemption", "v2", "u1", at("2025-03-01 13:00"), redemption="r1"),  # 20 back: 100, 0
                op("redeem", "r2", "u1", at("2025-03-01 14:00"), asset="PTS", amount="5"))      # 95, redemption 5
    assert out["v2"] == OK and out["r2"] == OK
    assert (s.system("SYSTEM_BREAKAGE", "PTS"), s.system("SYSTEM_REDEMPTION", "PTS")) == (D(0), D(5))
    assert s.balance("u1", "PTS") == (D(95), D(0), D(0))
    assert query(s.db, "SELECT idempotency_key, target_type FROM redemptions ORDER BY 1") == [
        ("r1", "SYSTEM_BREAKAGE"), ("r2", "SYSTEM_REDEMPTION")]
    # redeemed 30 - 10 - 20 + 5 = 5, whatever the target; nothing counted as forfeited
    assert summary(s) == (D(100), D(5), D(0), D(0), D(95))


def test_a_lot_redemption_to_breakage_is_restored_to_its_lots(tmp_path):
    s = Scenario(tmp_path, "shop", [on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"})],
                 [asset("PTS", mode="LOT")], redemption_target_type="SYSTEM_BREAKAGE")
    out = s.run(ev("e1", "u1", at("2025-03-01 10:00"), "earn", n=10), ev("e2", "u1", at("2025-03-01 10:30"), "earn", n=5),
                op("redeem", "r1", "u1", at("2025-03-01 11:00"), asset="PTS", amount="12"),  # lots 0 and 3
                op("reverse_redemption", "v1", "u1", at("2025-03-01 12:00"), redemption="r1", amount="4"))
    assert out == {"e1": OK, "e2": OK, "r1": OK, "v1": OK}
    # r1 took 10 from the first lot and 2 from the second (FIFO); 4 back LIFO: 2 to the second, 2 to the first
    assert s.lots("u1", "PTS") == [("AVAILABLE", D(2), None, False), ("AVAILABLE", D(5), None, False)]
    assert s.system("SYSTEM_BREAKAGE", "PTS") == D(8)


@pytest.mark.parametrize("program, message", [
    ({"redemption_target_type": "LEDGER_ENTITY", "redemption_target_entity_id": "family"},
     "program.redemption_target_entity_id: 'family' is not a group of this project"),
    ({"redemption_target_type": "LEDGER_ENTITY"}, "redemption_target_entity_id is required"),
    ({"redemption_target_type": "SYSTEM_BREAKAGE", "redemption_target_entity_id": "x"},
     "must be omitted with SYSTEM_REDEMPTION or SYSTEM_BREAKAGE"),
])
def test_redemption_targets_that_are_wrong_are_rejected_at_load(tmp_path, program, message):
    write_program(tmp_path / "shop.yaml", program_spec("shop", [on("x", {"type": "TAG", "tag": "t"})], **program))
    with pytest.raises(CatalogError, match="shop.yaml") as e:
        load_catalog(tmp_path / "shop.yaml")
    assert message in str(e.value)


def test_founding_members_changed_in_the_file_are_refused(tmp_path):
    rules = [on("join", {"type": "TAG", "tag": "m"})]
    s = Scenario(tmp_path, "shop", rules, [asset("PTS")], groups=[FAMILY])
    s.run(ev("j1", "u1", at("2025-03-01 09:00"), "join"))
    # a name or status may change; the founding members may not (membership changes are operations)
    write_program(s.programs / "shop.yaml", program_spec("shop", rules, assets=[asset("PTS")])
                  | {"groups": [FAMILY | {"name": "The Family"}]})
    s.run(ev("j2", "u1", at("2025-03-01 10:00"), "join"))
    assert query(s.db, "SELECT name FROM groups") == [("The Family",)]
    write_program(s.programs / "shop.yaml", program_spec("shop", rules, assets=[asset("PTS")])
                  | {"groups": [FAMILY | {"members": [{"external_id": "u2", "role": "ADMIN"}]}]})
    with pytest.raises(CatalogError, match="group family: `members` differs from the founding members"):
        s.run(ev("j3", "u1", at("2025-03-01 11:00"), "join"))
    assert query(s.db, "SELECT COUNT(*) FROM events") == [(2,)]


def test_perkflow_op_changes_a_membership(tmp_path):
    from tests.helpers.io import cli
    s = Scenario(tmp_path, "shop", [on("join", {"type": "TAG", "tag": "m"})], [asset("PTS")], groups=[FAMILY])
    s.run(ev("j3", "u3", at("2025-03-01 09:00"), "join"))
    res = cli("op", "add_group_member", "--programs", str(s.programs), "--db", str(s.db), "--program", "shop",
              "--key", "k1", "--external-id", "u3", "--timestamp", at("2025-03-01 10:00"),
              "--param", "group=family", "--param", "role=ADMIN", "--json")
    assert res.returncode == 0, res.stderr
    assert query(s.db, "SELECT m.role, m.status FROM group_members m JOIN participants p ON p.id = m.participant_id "
                       "WHERE p.external_id = 'u3'") == [("ADMIN", "ACTIVE")]


def test_a_group_counter_resets_lazily_and_by_maintenance(tmp_path):
    from engine.maintain import maintain
    from datetime import datetime, timezone
    rules = [on("visit", {"type": "COUNTER", "key": "visits", "value": "1", "reset_after": "24h",
                          "target": group_target()})]
    s = Scenario(tmp_path, "shop", rules, [asset("PTS")], groups=[FAMILY])
    s.run(ev("v1", "u1", at("2025-03-01 10:00"), "visit"), ev("v2", "u2", at("2025-03-01 20:00"), "visit"))
    visits = lambda: query(s.db, "SELECT number_value FROM group_state WHERE key = 'visits'")[0][0]  # noqa: E731
    assert visits() == 2  # created 10:00, due to reset at 10:00 the next day
    s.run(ev("v3", "u1", at("2025-03-02 11:00"), "visit"))  # reset at 03-02 10:00, then + 1
    assert visits() == 1
    maintain(datetime(2025, 3, 3, 12, tzinfo=timezone.utc), s.db)  # due 03-03 10:00
    assert visits() == 0


def test_a_transfer_pays_a_group(tmp_path):
    rules = [on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"})]
    s = Scenario(tmp_path, "shop", rules, [asset("PTS")], groups=[FAMILY, {
        "key": "old", "name": "Old", "status": "ARCHIVED", "members": [{"external_id": "u2", "role": "ADMIN"}]}])
    out = s.run(ev("e1", "u1", at("2025-03-01 10:00"), "earn", n=20), ev("e2", "u2", at("2025-03-01 10:00"), "earn", n=1),
                # Scrip's recipients: one of external_id | participant_id | group_id
                op("transfer", "t1", "u1", at("2025-03-01 11:00"), asset="PTS",
                   recipients=[{"group_id": "family", "amount": "5"}, {"external_id": "u2", "amount": "3"}]),
                op("transfer", "t2", "u1", at("2025-03-01 12:00"), asset="PTS",
                   recipients=[{"group_id": "old", "amount": "1"}]),
                op("transfer", "t3", "u1", at("2025-03-01 12:30"), asset="PTS",
                   recipients=[{"group_id": "nope", "amount": "1"}]),
                op("transfer", "t4", "u1", at("2025-03-01 13:00"), asset="PTS",
                   recipients=[{"group_id": "family", "external_id": "u2", "amount": "1"}]))
    assert out == {"e1": OK, "e2": OK, "t1": OK, "t2": ("FAILED", "group_inactive"),
                   "t3": ("FAILED", "group_not_found"), "t4": ("FAILED", "invalid_operation")}
    # u1: 20 - 5 - 3 = 12; u2: 1 + 3 = 4; family 5; the transfer is internal to holders
    assert (s.balance("u1", "PTS")[0], s.balance("u2", "PTS")[0], s.group("family", "PTS")[0]) == (D(12), D(4), D(5))
    assert summary(s) == (D(21), D(0), D(0), D(0), D(21))


def test_validate_lists_the_groups(tmp_path):
    import json
    from tests.helpers.io import cli
    write_program(tmp_path / "shop.yaml", program_spec("shop", [on("x", {"type": "TAG", "tag": "t"})])
                  | {"groups": [FAMILY]})
    res = cli("validate", "--programs", str(tmp_path / "shop.yaml"), "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["groups"] == ["family"]


def test_a_chunked_batch_moves_a_group_as_one_batch_does(tmp_path, monkeypatch):
    # a time-ordered event file read 2 rows at a time (PERKFLOW_CHUNK_ROWS) in one transaction
    rules = [on("pool", {"type": "CREDIT", "asset": "PTS", "amount": "event.n", "target": group_target()},
                {"type": "COUNTER", "key": "n", "value": "1", "target": group_target()}),
             on("spend", {"type": "DEBIT", "asset": "PTS", "amount": "event.n", "target": group_target()})]
    rows = [ev(f"e{i}", f"u{i % 3}", at(f"2025-03-01 1{i}:00"), kind, n=n)
            for i, (kind, n) in enumerate([("pool", 5), ("pool", 4), ("spend", 6), ("spend", 9), ("pool", 1)])]
    got = []
    for name, chunk in (("whole", None), ("chunked", "2")):
        if chunk:
            monkeypatch.setenv("PERKFLOW_CHUNK_ROWS", chunk)
        s = Scenario(tmp_path / name, "shop", rules, [asset("PTS")], groups=[FAMILY])
        out = s.run(*rows)
        state = query(s.db, "SELECT number_value FROM group_state WHERE key = 'n'")
        got.append((out, s.group("family", "PTS"), state, query(s.db, "SELECT COUNT(*) FROM batches")))
    # 5 + 4 - 6 = 3; 9 > 3 fails; + 1 = 4; three pools counted
    assert got[0] == got[1]
    assert got[0][0]["e3"] == ("FAILED", "insufficient_balance") and got[0][1] == (D(4), D(0), D(0))
    assert got[0][2] == [(D(3),)]


def test_group_balance_operations(tmp_path):
    # Scrip's /v1/groups/{id}/balances/adjust | hold | release | forfeit: the row names the group, no participant
    s = Scenario(tmp_path, "shop", [on("x", {"type": "TAG", "tag": "t"})], [asset("PTS")], groups=[FAMILY])
    t = lambda m: at(f"2025-03-01 10:{m:02d}")  # noqa: E731
    out = s.run(op("group_adjust", "a1", None, t(1), group="family", asset="PTS", amount="50", type="CREDIT"),  # 50
                op("group_hold", "h1", None, t(2), group="family", asset="PTS", amount="20"),           # 30 + 20 held
                op("group_adjust", "a2", None, t(3), group="family", asset="PTS", amount="40", type="DEBIT"),  # 30 < 40
                op("group_forfeit", "f1", None, t(4), group_id="family", asset="PTS", amount="5", bucket="HELD"),  # 15 held
                op("group_release", "r1", None, t(5), group="family", asset="PTS"),                      # 45, 0 held
                op("group_adjust", "a3", None, t(6), group="nope", asset="PTS", amount="1", type="CREDIT"),
                op("group_adjust", "a4", None, t(7), asset="PTS", amount="1", type="CREDIT"))
    assert out == {"a1": OK, "h1": OK, "a2": ("FAILED", "insufficient_balance"), "f1": OK, "r1": OK,
                   "a3": ("FAILED", "group_not_found"), "a4": ("FAILED", "invalid_operation")}
    assert s.group("family", "PTS") == (D(45), D(0), D(0))
    assert summary(s) == (D(50), D(0), D(0), D(5), D(45))
