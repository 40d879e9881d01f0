"""The LEDGER_ENTITY redemption target (semantics.md 9.4; Scrip's program fields
`redemption_target_type` / `redemption_target_entity_id`; docs/decisions.md "Redemption target"),
black box: real program files, `perkflow run --operations` Parquet and `perkflow op` in
subprocesses, the ledger read back by SQL. Every expected number is computed by hand in the
comments; `perkflow verify` must pass after every run.

The entity is a group declared in the project (by key or id). A redemption debits the
participant's AVAILABLE and credits the group's AVAILABLE in one entry (on LOT assets the group
gets a new lot dated at the redemption, without expiry). Each redemption keeps the group it
credited; its reversals take the value back from that group as a spend of the group's, and fail
`insufficient_balance` when it no longer holds it.
"""

from __future__ import annotations

import json
from decimal import Decimal as D
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.helpers.io import cli, event, query, write_events, write_program
from tests.oracle.interpreter import group_id

PTS = {"symbol": "PTS", "name": "Points", "scale": 0}
LP = {"symbol": "LP", "name": "Lot points", "scale": 0, "inventory_mode": "LOT"}
FAMILY = {"key": "family", "name": "Family", "members": [{"external_id": "u1", "role": "ADMIN"}]}
TEAM = {"key": "team", "name": "Team", "members": [{"external_id": "u2", "role": "ADMIN"}]}
EARN = {"name": "earn", "key": "earn", "condition": 'event.type == "earn"',
        "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "event.n"}]}
INTO_FAMILY = {"redemption_target_type": "LEDGER_ENTITY", "redemption_target_entity_id": "family"}


class Ledger:
    """One project directory: its program file, its ledger, and runs of the CLI against them."""

    def __init__(self, tmp: Path, program: dict, assets: list[dict], rules: list[dict], groups: list[dict],
                 rewards: list[dict] | None = None):
        self.tmp, self.db, self.programs = tmp, tmp / "ledger.duckdb", tmp / "programs"
        self.runs = 0
        self.write(program, assets, rules, groups, rewards)

    def write(self, program: dict, assets: list[dict], rules: list[dict], groups: list[dict],
              rewards: list[dict] | None = None) -> None:
        write_program(self.programs / "shop.yaml", {
            "program": {"key": "shop", "name": "Shop", **program}, "assets": assets, "rules": rules,
            "groups": groups, "rewards": rewards or []})

    def run(self, events: list[dict], ops: list[tuple]) -> dict[str, tuple[str, str | None]]:
        """One `perkflow run` of event rows and (operation, key, external id, time, params) rows;
        returns key -> (status, error_code) of every row so far, after `perkflow verify` passed."""
        self.runs += 1
        ev_file = write_events(self.tmp / f"events{self.runs}.parquet", events or [
            event("shop", f"none{self.runs}", "u1", "2025-03-01T00:00:00Z", {"type": "none"})])
        op_file = self.tmp / f"ops{self.runs}.parquet"
        pq.write_table(pa.Table.from_pylist(
            [{"operation": o, "program_id": "shop", "idempotency_key": k, "external_id": who, "timestamp": at,
              "params": json.dumps(params)} for o, k, who, at, params in ops],
            schema=pa.schema([(c, pa.string()) for c in
                              ("operation", "program_id", "idempotency_key", "external_id", "timestamp", "params")])),
            op_file)
        res = cli("run", "--programs", str(self.programs), "--events", str(ev_file), "--operations", str(op_file),
                  "--db", str(self.db), "--json")
        assert res.returncode == 0, res.stderr[-2000:]
        self.verify()
        return self.outcomes()

    def op(self, operation: str, key: str, who: str | None, at: str, **params) -> dict:
        """`perkflow op`: one operation, its JSON answer."""
        args = ["op", operation, "--programs", str(self.programs), "--db", str(self.db), "--program", "shop",
                "--key", key, "--timestamp", at, "--params", json.dumps(params), "--json"]
        res = cli(*args, *(["--external-id", who] if who else []))
        assert res.returncode == 0, res.stderr[-2000:]
        self.verify()
        return json.loads(res.stdout.strip().splitlines()[-1])

    def verify(self) -> None:
        res = cli("verify", "--db", str(self.db))
        assert res.returncode == 0, res.stdout + res.stderr

    def outcomes(self) -> dict[str, tuple[str, str | None]]:
        return {k: (s, c) for k, s, c in query(
            self.db, "SELECT idempotency_key, status, error_code FROM events WHERE idempotency_key NOT LIKE 'none%' "
                     "UNION ALL SELECT idempotency_key, status, error_code FROM operations")}

    def error(self, key: str) -> str:
        return query(self.db, "SELECT error_message FROM operations WHERE idempotency_key = ?", [key])[0][0]

    def held(self, entity_type: str, name: str, symbol: str) -> D:
        """AVAILABLE of a participant (by external id) or a group (by key)."""
        rows = query(self.db, "SELECT b.available FROM balances b LEFT JOIN groups g ON g.id = b.entity_id "
                              "WHERE b.entity_type = ? AND coalesce(b.external_id, g.key) = ? AND b.asset_symbol = ?",
                     [entity_type, name, symbol])
        return D(rows[0][0]) if rows else D(0)

    def lots(self, entity_type: str, name: str) -> list[tuple]:
        """(created_at HH:MM, amount, remaining, status, has an expiry) of a holder's LP lots, oldest first."""
        return [(c.strftime("%H:%M"), D(a), D(r), s, e is not None) for c, a, r, s, e in query(
            self.db, "SELECT l.created_at, l.amount, l.remaining, l.status, l.expires_at FROM lots l "
                     "LEFT JOIN participants p ON p.id = l.entity_id LEFT JOIN groups g ON g.id = l.entity_id "
                     "WHERE l.entity_type = ? AND coalesce(p.external_id, g.key) = ? ORDER BY l.created_at, l.id",
            [entity_type, name])]

    def targets(self) -> list[tuple]:
        return query(self.db, "SELECT r.idempotency_key, r.target_type, g.key, r.amount, r.reversed_amount, r.status "
                              "FROM redemptions r LEFT JOIN groups g ON g.id = r.target_entity_id ORDER BY 1")

    def summary(self, symbol: str) -> tuple:
        return query(self.db, "SELECT total_issued, total_redeemed, total_expired, total_forfeited, current_balance "
                              "FROM ledger_summary WHERE asset_symbol = ?", [symbol])[0]


def earn(key: str, who: str, at: str, n: int) -> dict:
    return event("shop", key, who, at, {"type": "earn", "n": n})


T = "2025-03-01T"
OK = ("COMPLETED", None)


def test_redemptions_credit_the_group_and_reversals_take_it_back_from_it(tmp_path):
    cup = {"key": "cup", "name": "Cup", "redemption_type": "UNIT_BASED", "asset": "PTS", "unit_cost": "5"}
    led = Ledger(tmp_path, INTO_FAMILY, [PTS], [EARN], [FAMILY], [cup])
    out = led.run([earn("e1", "u1", T + "10:00:00Z", 100)], [
        ("redeem", "r1", "u1", T + "11:00:00Z", {"asset": "PTS", "amount": "30"}),        # u1 70, family 30
        ("redeem_item", "r2", "u1", T + "11:30:00Z", {"reward": "cup", "quantity": 2}),   # u1 60, family 40
        ("reverse_redemption", "v1", "u1", T + "12:00:00Z", {"redemption": "r1", "amount": "10"}),  # 70, 30
        ("redeem", "r3", "u1", T + "12:30:00Z", {"asset": "PTS", "amount": "71"}),        # 70 < 71: nothing moves
    ])
    assert out == {"e1": OK, "r1": OK, "r2": OK, "v1": OK, "r3": ("FAILED", "insufficient_balance")}
    assert (led.held("PARTICIPANT", "u1", "PTS"), led.held("GROUP", "family", "PTS")) == (D(70), D(30))
    # one balanced entry per redemption: the participant's AVAILABLE to the group's AVAILABLE
    assert query(led.db, "SELECT p.entity_type, p.bucket, p.amount FROM postings p JOIN journal_entries j "
                         "ON j.id = p.journal_entry_id WHERE j.action_type = 'REDEMPTION' ORDER BY j.seq, p.amount") == [
        ("PARTICIPANT", "AVAILABLE", D(-30)), ("GROUP", "AVAILABLE", D(30)),
        ("PARTICIPANT", "AVAILABLE", D(-10)), ("GROUP", "AVAILABLE", D(10))]
    assert query(led.db, "SELECT count(*) FROM postings WHERE entity_type = 'SYSTEM_REDEMPTION'") == [(0,)]
    assert led.targets() == [("r1", "LEDGER_ENTITY", "family", D(30), D(10), "PARTIALLY_REVERSED"),
                             ("r2", "LEDGER_ENTITY", "family", D(10), D(0), "COMPLETED")]
    # reports: the redeemer's side is redeemed (30 + 10 - 10 = 30), the group's side issued to it
    # (100 earned + 30 + 10 - 10 = 130); what holders hold is 70 + 30 = 100
    assert led.summary("PTS") == (D(130), D(30), D(0), D(0), D(100))

    # the family spends 25 of it; the rest of r1 (20) is more than it holds (5): the reversal fails,
    # naming the group and what it holds, and takes nothing from anyone
    assert led.op("group_adjust", "g1", None, T + "13:00:00Z", group="family", type="DEBIT", asset="PTS",
                  amount="25")["status"] == "COMPLETED"
    answer = led.op("reverse_redemption", "v2", "u1", T + "14:00:00Z", redemption="r1")
    assert (answer["status"], answer["error_code"]) == ("FAILED", "insufficient_balance")
    assert "group family" in answer["error_message"] and "PTS 5, needs 20" in answer["error_message"]
    assert (led.held("PARTICIPANT", "u1", "PTS"), led.held("GROUP", "family", "PTS")) == (D(70), D(5))
    # what it holds can come back: 1 cup (5) of r2, by quantity
    assert led.op("reverse_redemption", "v3", "u1", T + "15:00:00Z", redemption="r2",
                  quantity=1)["status"] == "COMPLETED"
    assert (led.held("PARTICIPANT", "u1", "PTS"), led.held("GROUP", "family", "PTS")) == (D(75), D(0))
    assert led.targets()[1] == ("r2", "LEDGER_ENTITY", "family", D(10), D(5), "PARTIALLY_REVERSED")


def test_lot_redemptions_give_the_group_a_new_lot_and_reversals_spend_its_lots_fifo(tmp_path):
    earn_lp = {"name": "earn", "key": "earn", "condition": 'event.type == "earn"',
               "actions": [{"type": "CREDIT", "asset": "LP", "amount": "event.n", "expires_at": "720h"}]}
    led = Ledger(tmp_path, INTO_FAMILY, [LP], [earn_lp], [FAMILY])
    out = led.run([earn("e1", "u1", T + "10:00:00Z", 10), earn("e2", "u1", T + "10:30:00Z", 5)], [
        ("group_adjust", "g1", None, T + "09:00:00Z", {"group": "family", "type": "CREDIT", "asset": "LP", "amount": "4"}),
        ("redeem", "r1", "u1", T + "11:00:00Z", {"asset": "LP", "amount": "12"}),  # u1's lots FIFO: 10 and 2
    ])
    assert out == {"e1": OK, "e2": OK, "g1": OK, "r1": OK}
    # the group's new lot is dated at the redemption, without the source lots' expiry
    assert led.lots("GROUP", "family") == [("09:00", D(4), D(4), "AVAILABLE", False),
                                           ("11:00", D(12), D(12), "AVAILABLE", False)]
    assert led.lots("PARTICIPANT", "u1") == [("10:00", D(10), D(0), "CONSUMED", True),
                                             ("10:30", D(5), D(3), "AVAILABLE", True)]
    # a later batch: 6 back. The family spends FIFO (4 from its 09:00 lot, 2 from the 11:00 one);
    # u1's lots get it back LIFO (2 to the 10:30 lot, 4 to the 10:00 lot)
    out = led.run([], [("reverse_redemption", "v1", "u1", T + "12:00:00Z", {"redemption": "r1", "amount": "6"})])
    assert out["v1"] == OK
    assert led.lots("GROUP", "family") == [("09:00", D(4), D(0), "CONSUMED", False),
                                           ("11:00", D(12), D(10), "AVAILABLE", False)]
    assert led.lots("PARTICIPANT", "u1") == [("10:00", D(10), D(4), "AVAILABLE", True),
                                             ("10:30", D(5), D(5), "AVAILABLE", True)]
    assert (led.held("PARTICIPANT", "u1", "LP"), led.held("GROUP", "family", "LP")) == (D(9), D(10))
    # the other 6: more than the family's 10? no: 10 >= 6, so it completes and leaves it 4
    assert led.op("reverse_redemption", "v2", "u1", T + "13:00:00Z", redemption="r1")["status"] == "COMPLETED"
    assert led.lots("GROUP", "family")[1] == ("11:00", D(12), D(4), "AVAILABLE", False)
    assert led.lots("PARTICIPANT", "u1") == [("10:00", D(10), D(10), "AVAILABLE", True),
                                             ("10:30", D(5), D(5), "AVAILABLE", True)]


def test_each_redemption_keeps_the_group_it_was_made_with(tmp_path):
    # Scrip: "a change applies only to redemptions created afterwards; existing redemptions and
    # their reversals keep the target captured when they were created"
    led = Ledger(tmp_path, INTO_FAMILY, [PTS], [EARN], [FAMILY, TEAM])
    out = led.run([earn("e1", "u1", T + "10:00:00Z", 50)],
                  [("redeem", "r1", "u1", T + "11:00:00Z", {"asset": "PTS", "amount": "20"})])  # family 20
    assert out["r1"] == OK
    # the program now redeems into team, named by its id
    led.write({"redemption_target_type": "LEDGER_ENTITY", "redemption_target_entity_id": group_id("team")},
              [PTS], [EARN], [FAMILY, TEAM])
    out = led.run([], [("redeem", "r2", "u1", T + "12:00:00Z", {"asset": "PTS", "amount": "5"}),     # team 5
                       ("reverse_redemption", "v1", "u1", T + "13:00:00Z", {"redemption": "r1", "amount": "8"})])
    assert (out["r2"], out["v1"]) == (OK, OK)
    assert (led.held("GROUP", "family", "PTS"), led.held("GROUP", "team", "PTS")) == (D(12), D(5))
    # and then into SYSTEM_REDEMPTION: r1 and r2 still come back from their groups
    led.write({}, [PTS], [EARN], [FAMILY, TEAM])
    out = led.run([], [("redeem", "r3", "u1", T + "14:00:00Z", {"asset": "PTS", "amount": "1"}),
                       ("reverse_redemption", "v2", "u1", T + "15:00:00Z", {"redemption": "r1"}),   # 12 from family
                       ("reverse_redemption", "v3", "u1", T + "15:00:00Z", {"redemption": "r2"})])  # 5 from team
    assert (out["r3"], out["v2"], out["v3"]) == (OK, OK, OK)
    assert (led.held("GROUP", "family", "PTS"), led.held("GROUP", "team", "PTS")) == (D(0), D(0))
    assert led.held("PARTICIPANT", "u1", "PTS") == D(49)  # 50 - 20 - 5 + 8 - 1 + 12 + 5
    assert [t[:3] for t in led.targets()] == [("r1", "LEDGER_ENTITY", "family"), ("r2", "LEDGER_ENTITY", "team"),
                                              ("r3", "SYSTEM_REDEMPTION", None)]


def test_an_archived_group_takes_no_redemption_but_gives_back_what_it_received_while_declared(tmp_path):
    led = Ledger(tmp_path, INTO_FAMILY, [PTS], [EARN], [FAMILY])
    assert led.run([earn("e1", "u1", T + "10:00:00Z", 50)],
                   [("redeem", "r1", "u1", T + "11:00:00Z", {"asset": "PTS", "amount": "20"})])["r1"] == OK
    led.write(INTO_FAMILY, [PTS], [EARN], [FAMILY | {"status": "ARCHIVED"}])
    out = led.run([], [("redeem", "r2", "u1", T + "12:00:00Z", {"asset": "PTS", "amount": "5"}),
                       ("reverse_redemption", "v1", "u1", T + "13:00:00Z", {"redemption": "r1", "amount": "15"})])
    assert out["r2"] == ("FAILED", "group_inactive") and out["v1"] == OK
    assert "family is ARCHIVED" in led.error("r2") and "redemption target" in led.error("r2")
    assert (led.held("PARTICIPANT", "u1", "PTS"), led.held("GROUP", "family", "PTS")) == (D(45), D(5))
    # a group no program file declares any more: its reversal fails, naming why, and moves nothing
    led.write({}, [PTS], [EARN], [])
    out = led.run([], [("reverse_redemption", "v2", "u1", T + "14:00:00Z", {"redemption": "r1"})])
    assert out["v2"] == ("FAILED", "group_not_found")
    assert "declared in no program file" in led.error("v2")
    assert (led.held("PARTICIPANT", "u1", "PTS"), led.held("GROUP", "family", "PTS")) == (D(45), D(5))


def test_a_target_that_names_no_group_is_refused_at_load_and_nothing_is_written(tmp_path):
    # a participant's external id is no group either: the entity of LEDGER_ENTITY is a group
    for entity in ("nope", "u1"):
        led = Ledger(tmp_path / entity, {"redemption_target_type": "LEDGER_ENTITY", "redemption_target_entity_id": entity},
                     [PTS], [EARN], [FAMILY])
        events = write_events(tmp_path / entity / "e.parquet", [earn("e1", "u1", T + "10:00:00Z", 5)])
        res = cli("run", "--programs", str(led.programs), "--events", str(events), "--db", str(led.db))
        assert res.returncode == 2, res.stderr
        assert "shop.yaml" in res.stderr and f"program.redemption_target_entity_id: '{entity}' is not a group" in res.stderr
        assert not led.db.exists() or query(led.db, "SELECT count(*) FROM batches") == [(0,)]
