"""Outsider round (session 19): lots, redemptions, transfers, wallets, tiers and groups as a black
box. Each test writes program files and real Parquet rows (or uses `perkflow op`), runs the
`perkflow` CLI in a subprocess into a real DuckDB file, and compares the ledger with numbers
worked out by hand from semantics.md 2.3, 7, 9, 10 and 11 (and docs/decisions.md where the
contract is silent). Earlier rounds' files (test_outsider_value.py, test_outsider_tiers.py,
test_group_lots.py, test_outsider_groups_automations.py) hold what they found; this file holds
what they missed: a reward named by its id; `perkflow op` loading the sample programs into any
ledger; group recipients in the transfers report; recipients given to `perkflow op` as text;
`redemptions.lots_taken` text that differed between one batch and several; CEL balances counting
value a lot of the same event had already lost; and four inputs that stopped a run with an
internal error (exit 1) instead of failing a row or the load (a reversal naming its redemption
by a number, whole numbers past the ledger's INTEGER / BIGINT columns, redeemed units past BIGINT).
"""

from __future__ import annotations

import json
from decimal import Decimal as D

import pytest

from tests.e2e.test_contract_audit import LOT, OK, SIMPLE, Ledger, at, ev, op, on, program
from tests.helpers.io import cli

EARN = on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"})
MUG = {"key": "mug", "name": "Mug", "redemption_type": "UNIT_BASED", "asset": "PTS", "unit_cost": "5", "max_total": 3}


def perkflow_op(lg: Ledger, *args: str, programs: bool = True) -> dict:
    """One `perkflow op ... --json` against the ledger; returns its printed status."""
    extra = ("--programs", str(lg.programs)) if programs else ()
    res = cli("op", *args, *extra, "--db", str(lg.db), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_s9_4_redeem_item_names_its_reward_by_the_rewards_id_as_scrip_does(tmp_path):
    """9.4 / scrip-reference 16: a catalog redemption's body is `{program_id, reward_id, quantity}`
    and `reward_id` is the reward's id (the `rewards` table's `id`, a UUID), as an asset or a
    program or a group may be named by its id (docs/decisions.md "Operations and rewards").
    perkflow accepted `reward_id` only as the reward's *key*: the id failed `invalid_operation`
    ("unknown reward"). Now the id (in any case) is that reward; the key still works."""
    lg = Ledger(tmp_path, program([EARN], [LOT], rewards=[MUG]))
    lg.run([ev("e1", "a", at(1), "earn", n=50)])
    (reward_id,) = lg.sql("SELECT id::VARCHAR FROM rewards WHERE key = 'mug'")[0]
    lg.run(operations=[op("redeem_item", "r1", "a", at(2), reward_id=reward_id, quantity=2),
                       op("redeem_item", "r2", "a", at(3), reward_id=reward_id.upper()),
                       op("redeem_item", "r3", "a", at(4), reward="mug"),
                       op("redeem_item", "r4", "a", at(5), reward_id="no-such-reward")])
    st = lg.status()
    assert st["r1"] == st["r2"] == OK
    # max_total 3: r1 took 2, r2 1; r3 (by key) finds the same reward out of stock
    assert st["r3"] == ("FAILED", "out_of_stock")
    assert st["r4"] == ("FAILED", "invalid_operation")
    assert lg.entries("r1") == [("REDEMPTION", D(10))] and lg.entries("r2") == [("REDEMPTION", D(5))]
    assert lg.balance("a") == (D(50) - 10 - 5, D(0), D(0))
    lg.verify()


def test_s2_3_perkflow_op_without_programs_uses_the_programs_the_ledger_stored(tmp_path):
    """2.3: an operation goes through the ledger's programs. `perkflow op` without `--programs`
    (README's form: `perkflow op NAME --program K --key IDEM ...`) loaded the bundled sample
    `data/programs` instead: it wrote the sample programs (customer_loyalty, coffee_club) into
    the user's ledger and rejected the operation `unknown_program`. Like `maintain`, `explain` and
    `replay`, it now uses the program files the ledger's runs stored (recorded as read from the
    files they came from)."""
    stars = {"symbol": "STARS", "name": "Stars", "inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED", "scale": 0}
    lg = Ledger(tmp_path, program([on("earn", {"type": "CREDIT", "asset": "STARS", "amount": "event.n"})], [stars]))
    lg.run([ev("e1", "a", at(1), "earn", n=5)])
    out = perkflow_op(lg, "adjust", "--program", "shop", "--key", "o1", "--external-id", "a", "--timestamp", at(2),
                      "--param", "type=CREDIT", "--param", "asset=STARS", "--param", "amount=7",
                      "--param", "description=goodwill", programs=False)
    assert (out["status"], out["error_code"]) == ("COMPLETED", None)
    # the ledger's program, still recorded as read from its own file
    assert lg.sql("SELECT key, source_file FROM programs") == [("shop", str(lg.programs / "shop.yaml"))]
    assert lg.balance("a", "STARS") == (D(12), D(0), D(0))
    lg.verify()


def test_s12_the_transfers_report_says_which_recipient_is_a_group(tmp_path):
    """12 (`transfers`, "the project's docs list every column"); 9.3 with a group recipient
    (docs/decisions.md "Groups": a transfer recipient may be `{group_id, amount}`). The view gave
    a group recipient's id as `recipient_participant_id`, with nothing saying it was a group, so
    a report joined to `participants` lost the group's leg and a reader saw a participant id
    no participant has. Now each row says `recipient_type` (PARTICIPANT or GROUP), and a group
    recipient's id and key are in `recipient_group_id` / `recipient_group_key`."""
    fam = {"key": "fam", "name": "Fam", "members": [{"external_id": "a", "role": "ADMIN"}]}
    lg = Ledger(tmp_path, program([EARN], [LOT], groups=[fam]))
    lg.run([ev("e1", "a", at(1), "earn", n=50), ev("e2", "b", at(1), "earn", n=1)],
           [op("transfer", "t1", "a", at(2), asset="PTS", description="split",
               recipients=[{"external_id": "b", "amount": "4"}, {"group_id": "fam", "amount": "6"}])])
    assert lg.status()["t1"] == OK
    (b_id,) = lg.sql("SELECT id FROM participants WHERE external_id = 'b'")[0]
    (fam_id,) = lg.sql("SELECT id FROM groups WHERE key = 'fam'")[0]
    rows = lg.sql("SELECT recipient_type, recipient_participant_id, recipient_external_id, recipient_group_id, "
                  "recipient_group_key, amount FROM transfers WHERE idempotency_key = 't1'")
    assert rows == [("PARTICIPANT", b_id, "b", None, None, D(4)), ("GROUP", None, None, fam_id, "fam", D(6))]


def test_s9_3_perkflow_op_transfer_recipients_given_as_a_param_say_to_use_params(tmp_path):
    """9.3 / 13 (clear errors): `perkflow op transfer --param recipients=[...]` hands the list over
    as text (every --param value is text), and the transfer failed "params.recipients must list 1
    to 100 recipients" though the text lists one. The message now says it got text and that a
    list goes in `--params` (JSON); given there, the same transfer completes."""
    lg = Ledger(tmp_path, program([EARN], [LOT]))
    lg.run([ev("e1", "a", at(1), "earn", n=50), ev("e2", "b", at(1), "earn", n=1)])
    recipients = '[{"external_id": "b", "amount": "2"}]'
    base = ("transfer", "--program", "shop", "--external-id", "a", "--timestamp", at(2),
            "--param", "asset=PTS", "--param", "description=gift")
    out = perkflow_op(lg, *base, "--key", "t1", "--param", f"recipients={recipients}")
    assert (out["status"], out["error_code"]) == ("FAILED", "invalid_operation")
    assert "--params" in out["error_message"] and "text" in out["error_message"]
    out = perkflow_op(lg, *base, "--key", "t2", "--params", f'{{"recipients": {recipients}}}')
    assert (out["status"], out["error_code"]) == ("COMPLETED", None)
    assert lg.balance("b") == (D(3), D(0), D(0))


def test_s1_5_a_redemptions_lots_taken_is_the_same_text_in_one_batch_or_several(tmp_path):
    """1.4 / 1.5: the same stream in 1 or N batches gives byte-identical ledgers. `redemptions.lots_taken`
    ([[lot id, amount], ...], docs/tables.md) wrote each amount as Python printed the Decimal it
    held: "2.5" and "0.0" when the lots were made in the same batch, "2.500000000000000000" and
    "0E-18" when they were read back from the ledger in a later one. Now each amount is plain
    decimal text ("2.5", "0") whichever batch wrote it.

    By hand (scale 1): lots L1 = 3 (day 1 12:00) and L2 = 10 (13:00); r1 = 2 mugs of 2.5 = 5 takes
    3 of L1 and 2 of L2 (FIFO); r2 = 1.5 (day 3) takes 1.5 of L2 (L1 is empty); v1 gives one mug
    (2.5) back LIFO: 2 to L2, 0.5 to L1, so r1 has taken 2.5 of L1 and 0 of L2."""
    rules = [EARN]
    mug = {"key": "mug", "name": "Mug", "redemption_type": "UNIT_BASED", "asset": "PTS", "unit_cost": "2.5"}
    events = [ev("e1", "a", at(1), "earn", n=3), ev("e2", "a", at(1, 13), "earn", n=10)]
    ops = [op("redeem_item", "r1", "a", at(2), reward="mug", quantity=2),
           op("redeem", "r2", "a", at(3), asset="PTS", amount="1.5", description="pay"),
           op("reverse_redemption", "v1", None, at(4), redemption="r1", quantity=1)]
    taken = {}
    for cut in (False, True):
        lg = Ledger(tmp_path / f"cut{cut}", program(rules, [{**LOT, "scale": 1}], rewards=[mug]))
        if cut:
            lg.run(events)
            for o in ops:
                lg.run(operations=[o])
        else:
            lg.run(events, ops)
        assert all(s == OK for s in lg.status().values())
        order = {lot: f"L{i + 1}" for i, (lot,) in enumerate(lg.sql("SELECT id::VARCHAR FROM lots ORDER BY created_at"))}
        taken[cut] = {k: [(order[lot], amount) for lot, amount in json.loads(text)]
                      for k, text in lg.sql("SELECT idempotency_key, lots_taken::VARCHAR FROM redemptions")}
    assert taken[False] == taken[True] == {"r1": [("L1", "2.5"), ("L2", "0")], "r2": [("L2", "1.5")]}


def test_s9_1_participant_balances_leave_out_a_lot_already_expired_in_the_same_event(tmp_path):
    """6 + 9.1: CEL's `participant.balances.PTS.available` is the state "as of this point in the
    event", and AVAILABLE is the spendable bucket (8); "expired lots are never spendable, even
    before the expiry entry is written". A CREDIT with `expires_at: 0s` makes a lot that is expired
    at once (its EXPIRATION is written at the holder's next touch, docs/decisions.md "A lot never
    expires before it exists"); a later rule of the same event saw it as available: a DEBIT of 7
    guarded by `available >= 7` matched and failed the whole event `insufficient_balance`, since
    only 2 can be spent. Now the view leaves such lots out: available is 2, the guard is false,
    and the event completes; a DEBIT of what the view shows succeeds.

    By hand: x credits 5 (expires at once) and 2: available 2. y (a second participant) does the
    same and debits what the view says (2): its balance is 5 - 5 (expiry) + 2 - 2 = 0."""
    rules = [
        {"name": "a", "key": "a", "order": 10, "condition": 'event.type == "x" || event.type == "y"', "actions": [
            {"type": "CREDIT", "asset": "PTS", "amount": "5", "expires_at": "0s"},
            {"type": "CREDIT", "asset": "PTS", "amount": "2"}]},
        {"name": "b", "key": "b", "order": 20, "condition": 'event.type == "x" || event.type == "y"', "actions": [
            {"type": "SET_ATTRIBUTE", "key": "avail", "value": "participant.balances.PTS.available"}]},
        {"name": "c", "key": "c", "order": 30, "condition": 'event.type == "x" && participant.balances.PTS.available >= 7.0',
         "actions": [{"type": "DEBIT", "asset": "PTS", "amount": "7"}]},
        {"name": "d", "key": "d", "order": 40, "condition": 'event.type == "y"',
         "actions": [{"type": "DEBIT", "asset": "PTS", "amount": "participant.balances.PTS.available"}]},
    ]
    lg = Ledger(tmp_path, program(rules, [LOT]))
    lg.run([ev("x1", "a", at(1), "x"), ev("y1", "b", at(1), "y"),
            ev("x2", "a", at(1), "noop"), ev("y2", "b", at(1), "noop")])  # touch both: the expiries are written
    assert lg.status()["x1"] == lg.status()["y1"] == OK
    assert lg.state("a")[("ATTRIBUTE", "avail")] == lg.state("b")[("ATTRIBUTE", "avail")] == "2"
    assert lg.entries("x1") == [("CREDIT", D(5)), ("CREDIT", D(2))]
    assert lg.entries("y1") == [("CREDIT", D(5)), ("CREDIT", D(2)), ("DEBIT", D(2))]
    assert lg.balance("a") == (D(2), D(0), D(0)) and lg.balance("b") == (D(0), D(0), D(0))
    lg.verify()


def test_s13_a_reversal_naming_its_redemption_by_a_number_fails_the_row_not_the_run(tmp_path):
    """13: an operation whose params have an unexpected shape fails that operation
    (`invalid_operation`); the run goes on (docs/decisions.md "Operation params"). A reversal whose
    `redemption` is a JSON number (the redeeming operation's key was "12345") stopped the whole
    run with an internal error (exit 1, a DuckDB conversion error at the lookup of a redemption of
    an earlier batch); in the redemption's own batch the same row was `redemption_not_found`. Now
    it fails `invalid_operation` in both, and the rows beside it are processed."""
    lg = Ledger(tmp_path, program([EARN], [LOT]))
    lg.run([ev("e1", "a", at(1), "earn", n=50)],
           [op("redeem", "12345", "a", at(2), asset="PTS", amount="10", description="pay")])
    lg.run(operations=[op("reverse_redemption", "v1", None, at(3), redemption=12345, reason="refund"),
                       op("reverse_redemption", "v2", None, at(3, 13), redemption_id=7, reason="refund"),
                       op("reverse_redemption", "v3", None, at(3, 14), redemption="12345", amount="4", reason="refund")])
    st = lg.status()
    assert st["v1"] == st["v2"] == ("FAILED", "invalid_operation")
    assert st["v3"] == OK
    assert lg.balance("a") == (D(50) - 10 + 4, D(0), D(0))
    lg.verify()


@pytest.mark.parametrize("where, spec", [
    ("rewards[0] (Mug).max_total", {"rewards": [{**MUG, "max_total": 2 ** 63}]}),
    ("rewards[0] (Mug).max_per_participant", {"rewards": [{**MUG, "max_per_participant": 2 ** 64}]}),
    ("tiers[0] (t).levels[0].rank", {"tiers": [{"key": "t", "levels": [{"key": "s", "rank": 3_000_000_000}]}]}),
    ("rules[0] (earn).order", {"rules": [{**EARN, "order": 3_000_000_000}]}),
])
def test_s13_a_whole_number_the_ledger_cannot_hold_is_a_load_error(tmp_path, where, spec):
    """13: program files that do not validate stop the run before anything is written, exit 2
    (1 is for unexpected internal errors). A reward's `max_total` / `max_per_participant` of 2^63
    or more (the ledger's BIGINT), or a tier level's `rank` or a rule's `order` past INTEGER
    (2^31 - 1), passed `perkflow validate` and then stopped `perkflow run` with an internal error
    (exit 1) when the catalog was written. Now they are load errors naming the field, for
    validate and run alike."""
    base = program([EARN], [LOT])
    lg = Ledger(tmp_path, {**base, **spec})
    res = cli("validate", "--programs", str(lg.programs))
    assert res.returncode == 2 and where in res.stderr, res.stdout + res.stderr
    out = lg.run([ev("e1", "a", at(1), "earn", n=1)], expect=2)
    assert where in out["stderr"] and "internal error" not in out["stderr"]
    assert not lg.db.exists() or lg.sql("SELECT count(*) FROM events") == [(0,)]


def test_s13_a_default_order_past_what_the_ledger_holds_is_a_load_error(tmp_path):
    """13, as above: a rule without `order` takes the highest before + 10 (semantics.md 2.1); after a
    rule at order 2^31 - 1 that default is past INTEGER and crashed the catalog write (exit 1)."""
    rules = [{**EARN, "order": 2 ** 31 - 1}, {**on("spend", {"type": "DEBIT", "asset": "PTS", "amount": "1"})}]
    lg = Ledger(tmp_path, program(rules, [LOT]))
    out = lg.run([ev("e1", "a", at(1), "earn", n=1)], expect=2)
    assert "rules[1] (spend): order" in out["stderr"] and "internal error" not in out["stderr"]


def test_s13_units_past_what_the_ledger_counts_fail_the_redemption_not_the_run(tmp_path):
    """13 / invariant 7: one bad row fails, the rest of the batch is processed. A reward without
    `max_total` counts its redeemed units in BIGINT columns; a `redeem_item` whose units took the
    count past 2^63 - 1 (a tiny `unit_cost` at scale 18 keeps the cost small) stopped the run with
    an internal error at the write (exit 1). Now it fails `invalid_operation`; by hand: 2^62 units
    of 10^-18 cost 4.611686018427387904, the second 2^62 would make 2^63 units."""
    dust = {"key": "dust", "name": "Dust", "redemption_type": "UNIT_BASED", "asset": "PTS",
            "unit_cost": "0.000000000000000001"}
    lg = Ledger(tmp_path, program([EARN], [{**SIMPLE, "scale": 18}], rewards=[dust]))
    lg.run([ev("e1", "a", at(1), "earn", n=100)],
           [op("redeem_item", "r1", "a", at(2), reward="dust", quantity=2 ** 62),
            op("redeem_item", "r2", "a", at(3), reward="dust", quantity=2 ** 62),
            op("redeem_item", "r3", "a", at(4), reward="dust", quantity=1)])
    st = lg.status()
    assert st["r1"] == st["r3"] == OK and st["r2"] == ("FAILED", "invalid_operation")
    assert lg.balance("a")[0] == D(100) - D("4.611686018427387904") - D("0.000000000000000001")
    assert lg.sql("SELECT redeemed_count FROM reward_usage WHERE participant_id = ''") == [(2 ** 62 + 1,)]


def test_s12_a_failed_transfer_row_names_its_asset_by_id_too(tmp_path):
    """12 (`transfers`): a transfer that wrote no entry (FAILED on an empty balance) had its
    `asset_symbol` from its params but `asset_id` null, so a report joining on the id lost it.
    The id now comes from the asset its params name (by symbol, or by id in any letter case)."""
    lg = Ledger(tmp_path, program([EARN], [LOT]))
    lg.run([ev("e1", "a", at(1), "earn", n=3), ev("e2", "b", at(1), "earn", n=1)])
    (pts,) = lg.sql("SELECT id FROM assets WHERE symbol = 'PTS'")[0]
    lg.run([], [op("transfer", "t1", "a", at(2), asset="PTS", description="too much",
                   recipients=[{"external_id": "b", "amount": "5"}]),
                op("transfer", "t2", "a", at(3), asset_id=str(pts).upper(), description="too much",
                   recipients=[{"external_id": "b", "amount": "5"}])])
    rows = lg.sql("SELECT idempotency_key, status, asset_symbol, asset_id, journal_entry_id FROM transfers "
                  "ORDER BY idempotency_key")
    assert rows == [("t1", "FAILED", "PTS", pts, None), ("t2", "FAILED", "PTS", pts, None)]
