"""The worked examples of docs/writing-rules.md, each run as a test.

Every example is a program file in docs/examples/ (shown verbatim in the guide) and an event
stream in docs/examples/events/<name>.ndjson. Each test writes the stream as Parquet, runs it
through `perkflow run` in a subprocess, and checks the ledger two ways:

1. against values computed here from what the pattern means (the arithmetic is written out), and
2. against the one-event-at-a-time oracle (`tests.oracle.run_oracle`) on the same input: event
   statuses, entries, balances, participant and program state, rule evaluations.

`test_guide_shows_the_tested_files` keeps the guide from drifting: every YAML block labelled with
an example file name must be byte-identical to that file, and every example file must be shown.

Contract: semantics.md 5 (evaluation), 6 (CEL), 7 (actions); docs/decisions.md.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from engine.io.events import json_doubles
from tests.differential.ledger_view import read_ledger_file
from tests.helpers.io import ROOT, event, run_json, ts, write_events
from tests.oracle import run_oracle

D = Decimal
GUIDE = ROOT / "docs" / "writing-rules.md"
EXAMPLES = ROOT / "docs" / "examples"
NAMES = ["category_multipliers", "welcome_bonus", "nth_purchase", "weekly_streak", "referral_bonus",
         "time_window_promo", "refund_clawback", "capped_campaign"]
COMPARED = ("events", "entries", "balances", "participants", "program_state", "evaluations")


def stream(name: str) -> list[dict]:
    text = (EXAMPLES / "events" / f"{name}.ndjson").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def run_example(name: str, tmp_path: Path):
    """(run report, the engine's ledger, the oracle's) for one example, as `OracleResult`s."""
    rows = stream(name)
    program = EXAMPLES / f"{name}.yaml"
    parquet = write_events(tmp_path / "events" / f"{name}.parquet", [
        event(r["program_id"], r["idempotency_key"], r["external_id"], r["event_timestamp"], r["event_data"])
        for r in rows])
    db = tmp_path / "ledger.duckdb"
    report = run_json(program, parquet, db)
    assert report["read"] == len(rows)
    assert report["read"] == report["completed"] + report["failed"] + report["duplicates"] + report["rejected"]
    got = read_ledger_file(db)
    want = run_oracle([program], [[{
        "program_id": r["program_id"], "idempotency_key": r["idempotency_key"], "external_id": r["external_id"],
        "event_timestamp": ts(r["event_timestamp"]), "event_data": json_doubles(r["event_data"])} for r in rows]])
    for field in COMPARED:
        assert getattr(got, field) == getattr(want, field), f"{name}: engine and oracle differ in {field}"
    return report, got


def statuses(result, program: str) -> dict[str, tuple[str, str | None]]:
    return {key: st for (pk, key), st in result.events.items() if pk == program}


def outcomes(result, program: str) -> list[tuple[str, str, str]]:
    return [(key, rule, outcome) for pk, key, rule, outcome in result.evaluations if pk == program]


def credits(result, key: str) -> list[tuple[str, str, Decimal]]:
    """(rule, external id, amount) of the CREDIT entries of one event, in ledger order."""
    return [(rule, ext, amt) for _pk, k, rule, _i, kind, ext, _sym, amt in result.entries if k == key and kind == "CREDIT"]


def all_completed(result, program: str) -> bool:
    return all(st == ("COMPLETED", None) for st in statuses(result, program).values())


# ---------------------------------------------------------------------------------------------


def test_category_multipliers(tmp_path):
    report, r = run_example("category_multipliers", tmp_path)
    assert report["completed"] == 6 and report["failed"] == 0 and all_completed(r, "category_multipliers")
    # electronics 3x; grocery/produce 2x; anything else 1x; round(x, 0) is half away from zero.
    c1 = D("40.0") * 3                     # 120
    c2 = D(51)                             # 25.5 * 2 = 51.0
    c3 = D(25)                             # 12.25 * 2 = 24.5 -> 25 (half away from zero)
    c4 = D(20)                             # 19.5 * 1 -> 20
    c5 = D(0)                              # 0.1 * 3 -> 0: a zero credit is a no-op, and the rule still stops
    assert credits(r, "c1") == [("electronics_3x", "alice", c1)]   # stop_after_match: no base points
    assert credits(r, "c2") == [("grocery_2x", "alice", c2)]
    assert credits(r, "c3") == [("grocery_2x", "alice", c3)]
    assert credits(r, "c4") == [("base_points", "bob", c4)]
    assert credits(r, "c5") == []
    assert ("c5", "electronics_3x", "MATCHED") in outcomes(r, "category_multipliers")
    assert not any(k == "c5" and rule == "base_points" for k, rule, _ in outcomes(r, "category_multipliers"))
    assert not any(k == "c6" for k, _, _ in outcomes(r, "category_multipliers"))  # a view matches nothing
    assert r.balances == {("alice", "PTS"): c1 + c2 + c3, ("bob", "PTS"): c4 + c5}  # 196, 20


def test_welcome_bonus(tmp_path):
    _, r = run_example("welcome_bonus", tmp_path)
    assert all_completed(r, "welcome_bonus")
    welcome = D(500)
    assert credits(r, "w1") == [("welcome", "alice", welcome), ("base_points", "alice", D(12))]
    assert credits(r, "w2") == [("base_points", "alice", D(30))]       # tagged: no second bonus
    assert credits(r, "w3") == []                                     # browsing is not a purchase
    assert credits(r, "w4") == [("welcome", "bob", welcome), ("base_points", "bob", D(8))]  # 7.5 -> 8
    assert r.balances == {("alice", "PTS"): welcome + 12 + 30, ("bob", "PTS"): welcome + 8}
    assert r.participants["alice"] == {
        "tags": ["welcomed"], "counters": {},
        # `now` is CEL (an expression); `new-customer` references nothing known: a literal string.
        "attributes": {"first_purchase_at": "2025-11-03T09:00:00Z", "segment": "new-customer"}}
    assert r.participants["bob"]["attributes"]["first_purchase_at"] == "2025-11-05T10:00:00Z"


def test_nth_purchase(tmp_path):
    _, r = run_example("nth_purchase", tmp_path)
    assert all_completed(r, "nth_purchase")
    alice_purchases, bob_purchases, every, bonus = 11, 4, 5, D(100)
    milestones = [n for n in range(1, alice_purchases + 1) if n % every == 0]     # 5th and 10th
    assert [k for k in ("a%02d" % n for n in range(1, 12)) if credits(r, k)] == ["a%02d" % n for n in milestones]
    assert r.balances == {("alice", "PTS"): bonus * len(milestones)}             # 200; bob never reached 5
    assert r.participants["alice"]["counters"] == {"purchases": D(alice_purchases)}
    assert r.participants["bob"]["counters"] == {"purchases": D(bob_purchases)}


def test_weekly_streak(tmp_path):
    _, r = run_example("weekly_streak", tmp_path)
    assert all_completed(r, "weekly_streak")
    bonus = D(50)
    # alice: counter created at 11-03T08:00; periods [11-03 08:00, 11-10 08:00), [11-10 08:00, 11-17 08:00).
    # a1..a4 fall in period 1 (counts 1, 2, 3, 4): bonus on a3. a5 at exactly 11-10T08:00 is reset
    # first (due <= now): counts 1, 2, 3 for a5..a7, bonus on a7.
    assert [k for k in ("a1", "a2", "a3", "a4", "a5", "a6", "a7") if credits(r, k)] == ["a3", "a7"]
    # bob: counter created 11-03T20:00, reset due 11-10T20:00. b1=1, b2 (11-10 19:00)=2,
    # b3 (21:00) reset -> 1, b4 = 2. Three visits within 26 hours, but across two periods: no bonus.
    assert not any(credits(r, k) for k in ("b1", "b2", "b3", "b4"))
    assert r.balances == {("alice", "PTS"): bonus * 2}
    assert r.participants["alice"]["counters"] == {"weekly_visits": D(3)}
    assert r.participants["bob"]["counters"] == {"weekly_visits": D(2)}


def test_referral_bonus(tmp_path):
    _, r = run_example("referral_bonus", tmp_path)
    assert all_completed(r, "referral_bonus")
    new_member, referrer = D(100), D(200)
    assert credits(r, "r2") == [("referral", "bob", new_member), ("referral", "alice", referrer)]
    assert credits(r, "r3") == [("referral", "carol", new_member), ("referral", "alice", referrer)]
    assert credits(r, "r4") == []      # bob was referred already (tag)
    assert credits(r, "r5") == []      # self-referral
    assert credits(r, "r6") == [("referral", "erin", new_member), ("referral", "zoe", referrer)]  # zoe created
    assert credits(r, "r7") == []      # no referrer: has() is false
    assert r.balances == {("alice", "PTS"): 2 * referrer, ("bob", "PTS"): new_member, ("carol", "PTS"): new_member,
                          ("erin", "PTS"): new_member, ("zoe", "PTS"): referrer}
    assert r.participants["alice"] == {"tags": [], "counters": {"referrals": D(2)}, "attributes": {}}
    assert r.participants["zoe"] == {"tags": [], "counters": {"referrals": D(1)}, "attributes": {}}
    assert r.participants["bob"] == {"tags": ["referred"], "counters": {}, "attributes": {"referred_by": "alice"}}
    assert r.participants["erin"]["attributes"] == {"referred_by": "zoe"}
    assert r.participants["dave"]["tags"] == [] and r.participants["frank"]["tags"] == []
    assert r.program_state["referral_bonus"]["counters"] == {"referrals": D(3)}


def test_time_window_promo(tmp_path):
    _, r = run_example("time_window_promo", tmp_path)
    assert all_completed(r, "time_window_promo")
    base, promo, happy = D(10), D(10), D(25)   # amount 10.0; promo is a second 1x; happy hour 17-19 Paris
    expected = {
        "t1": [("base_points", base)],                                 # one second before active_from
        "t2": [("base_points", base), ("black_friday_2x", promo)],     # active_from is inclusive
        "t3": [("base_points", base), ("black_friday_2x", promo), ("happy_hour", happy)],  # 16:30Z = 17:30 CET
        "t4": [("base_points", base)],                                 # active_to is exclusive
        "t5": [("base_points", base), ("happy_hour", happy)],          # 17:00Z = 18:00 CET
        "t6": [("base_points", base)],                                 # 18:00Z = 19:00 CET: over
    }
    for key, want in expected.items():
        assert [(rule, amt) for rule, _ext, amt in credits(r, key)] == want, key
    total = lambda keys: sum((a for k in keys for _, a in expected[k]), D(0))  # noqa: E731
    assert r.balances == {("alice", "PTS"): total(["t1", "t2", "t3", "t4"]), ("bob", "PTS"): total(["t5", "t6"])}
    assert r.balances[("alice", "PTS")] == 85 and r.balances[("bob", "PTS")] == 45


def test_refund_clawback(tmp_path):
    report, r = run_example("refund_clawback", tmp_path)
    assert statuses(r, "refund_clawback") == {
        "f1": ("COMPLETED", None), "f2": ("COMPLETED", None), "f3": ("COMPLETED", None),
        "f4": ("FAILED", "insufficient_balance"),     # bob redeems 50 of 30
        "f5": ("COMPLETED", None),                    # the refund overdraws: allowed
        "f6": ("FAILED", "insufficient_balance"),     # a redemption from a negative balance
    }
    assert report["completed"] == 4 and report["failed"] == 2
    alice = D(100) - 80 - 100                          # purchase, redeem, refund: -80
    bob = D(30)
    assert r.balances == {("alice", "PTS"): alice, ("bob", "PTS"): bob}
    # A FAILED event is rolled back as a whole: the TAG before bob's failing DEBIT is gone too.
    assert r.participants["alice"]["tags"] == ["redeemer"]
    assert r.participants["bob"]["tags"] == []


def test_capped_campaign(tmp_path):
    _, r = run_example("capped_campaign", tmp_path)
    assert all_completed(r, "capped_campaign")
    limit, bonus, base = D(1000), D(250), D(10)
    paid = int(limit // bonus)                         # 4 bonuses reach the limit exactly; the 5th would pass it
    for i in range(1, 7):
        rule, amount = ("launch_bonus", bonus) if i <= paid else ("base_points", base)
        assert [(ru, a) for ru, _e, a in credits(r, f"p{i}")] == [(rule, amount)], f"p{i}"
    ev = outcomes(r, "capped_campaign")
    assert [k for k, rule, o in ev if o == "BUDGET_EXCEEDED"] == ["p5", "p6", "k3"]  # stream order
    # The daily check-in: 5 a time, 10 per UTC day for the whole program.
    checkin, daily = D(5), D(10)
    assert [k for k in ("k1", "k2", "k3", "k4") if credits(r, k)] == ["k1", "k2", "k4"]
    alice = 2 * bonus + base + 2 * checkin             # p1, p3 bonus; p5 base; k1, k4 (k3 over the day's 10)
    bob = 2 * bonus + base + checkin                   # p2, p4 bonus; p6 base; k2
    assert 2 * checkin == daily
    assert r.balances == {("alice", "PTS"): alice, ("bob", "PTS"): bob}


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_ndjson_runs_as_shown(tmp_path, name):
    """The guide runs the .ndjson streams directly; they give the same ledger as Parquet."""
    run_json(EXAMPLES / f"{name}.yaml", EXAMPLES / "events" / f"{name}.ndjson", tmp_path / "a.duckdb")
    rows = stream(name)
    parquet = write_events(tmp_path / "e.parquet", [
        event(r["program_id"], r["idempotency_key"], r["external_id"], r["event_timestamp"], r["event_data"])
        for r in rows])
    run_json(EXAMPLES / f"{name}.yaml", parquet, tmp_path / "b.duckdb")
    a, b = read_ledger_file(tmp_path / "a.duckdb"), read_ledger_file(tmp_path / "b.duckdb")
    for field in COMPARED:
        assert getattr(a, field) == getattr(b, field), field


LABEL = re.compile(r"^\*\*`(docs/examples/[^`]+\.yaml)`\*\*\s*$")


def labelled_blocks(text: str) -> dict[str, str]:
    """{path: code} for every ```yaml block whose preceding non-blank line is **`docs/examples/X.yaml`**."""
    lines, out, label, i = text.splitlines(keepends=True), {}, None, 0
    while i < len(lines):
        line = lines[i]
        m = LABEL.match(line.strip())
        if m:
            label = m.group(1)
        elif line.startswith("```"):
            j = i + 1
            while not lines[j].startswith("```"):
                j += 1
            if label is not None:
                assert line.strip() == "```yaml", f"{label}: labelled block is not ```yaml"
                assert label not in out, f"{label} is shown twice"
                out[label] = "".join(lines[i + 1:j])
            label, i = None, j
        elif line.strip():
            label = None
        i += 1
    return out


def test_guide_shows_the_tested_files():
    blocks = labelled_blocks(GUIDE.read_text(encoding="utf-8"))
    files = {f"docs/examples/{p.name}" for p in EXAMPLES.glob("*.yaml")}
    assert set(blocks) == files, "every example file is shown once, and only example files are labelled"
    assert files == {f"docs/examples/{n}.yaml" for n in NAMES}, "every example file has a test"
    for label, code in blocks.items():
        assert code == (ROOT / label).read_text(encoding="utf-8"), f"{label}: the guide differs from the file"
