"""An outsider's scenario tests, round 6: tiers and their lifecycles, black box. Expectations come
from semantics.md 10 (and 1.4 / 1.6: one result whichever path evaluates a batch), scrip-reference
14 and docs/decisions.md "Tiers" alone, not from engine/, tests/oracle or tests/differential;
every test runs the real CLI on Parquet events into a real DuckDB file.

Each scenario runs twice: as a small batch, which the sequential kernel takes, and with 600
filler events of other participants (events no rule matches, so they change nothing a test
reads), which puts a program with tiers but no lifecycle on the running-state path (README "How
it runs"); both must give the hand-computed result.

- A qualification threshold written with an exponent (`threshold: 1e3` in YAML is the text
  '1e3', a decimal the catalog accepts, = 1000) was met by a counter of 0 on the running path:
  Polars compared the counters with Decimal('1E+3') as if it were 1, so everyone qualified at
  their first event, while the kernel (exact) waited for 1000. The same for a budget `limit` of
  '3e2' (the running path took it as 3: every credit was BUDGET_EXCEEDED).
- An asset's `max_transaction_amount` past what DECIMAL(38, 18) holds ('1e24', or 19 decimals)
  crashed every run (exit 1) when the catalog was written: now a load error (exit 2).
- Another program's lifecycle closes (reviews, counter rollovers) due before a batch's events
  were applied late when that batch took the running path (a program without tiers counting
  the same counter), or when the run was given the other files only: a rollover applied later
  wiped the counts made after the close, and a review read them.
- A counter rolled over by tiers of two programs, or rolled by one and reset by another's
  `reset_after`, loaded (the one-clock check looked at one file); a CALENDAR_YEAR or NONE period
  with a `start_month` / `start_day` loaded and ignored it.
- SET_TIER with `expires_at` was refused with a message about lots (CREDIT only), not SET_TIER's
  fields nor the set_tier operation's params.expires_at.
"""

from __future__ import annotations

from decimal import Decimal as D

from tests.e2e.test_contract_audit import OK, Ledger, ev, program
from tests.helpers.io import cli

FILLER = 600


def filler(when: str) -> list[dict]:
    """Events no rule matches, from 50 other participants: enough to take the running path."""
    return [ev(f"fill{i}", f"filler{i % 50}", when, "noise") for i in range(FILLER)]


def both_paths(tmp_path, spec: dict, events: list[dict]) -> list[Ledger]:
    """The scenario alone (kernel) and with the filler (running path), each in its own ledger."""
    out = []
    for name, rows in (("kernel", events), ("running", events + filler(events[0]["when"]))):
        (tmp_path / name).mkdir()
        lg = Ledger(tmp_path / name, spec)
        report = lg.run(rows)
        if name == "running":
            assert report["running_rounds"] > 0, report  # the scenario reached the path it is for
        out.append(lg)
    return out


def history(lg: Ledger) -> list[tuple]:
    """(participant, tier, from, to, reason, effective_at) of every tier change, in order."""
    return lg.sql("SELECT p.external_id, h.tier_key, h.from_level, h.to_level, h.reason, "
                  "strftime(h.effective_at, '%Y-%m-%d %H:%M') "
                  "FROM tier_history h JOIN participants p ON p.id = h.participant_id ORDER BY h.seq")


def at(hour: int) -> str:
    return f"2025-03-01T{hour:02d}:00:00Z"


def test_thresholds_written_with_an_exponent_are_their_value_on_every_path(tmp_path):
    # semantics.md 10: upgraded to the highest level whose criteria the counters meet; '2.5e2' is
    # 250 and '1e3' is 1000 (decisions.md "Tiers": thresholds are exact decimals). Each purchase
    # adds its amount to `spend`, then earns the rank of the level held before it (0 without one:
    # qualification runs after the rules, so each event is paid at the level the earlier ones gave).
    tier = {"key": "club", "levels": [
        {"key": "regular", "rank": 1, "qualification": {"criteria": [{"counter": "spend", "operator": ">=", "threshold": "2.5e2"}]}},
        {"key": "big", "rank": 2, "qualification": {"criteria": [{"counter": "spend", "operator": ">=", "threshold": "1e3"}]}},
        {"key": "never", "rank": 3, "qualification": {"criteria": [{"counter": "spend", "operator": ">", "threshold": "1E+24"}]}}]}
    rules = [
        {"name": "Spend", "key": "spend", "order": 10, "condition": 'event.type == "buy"',
         "actions": [{"type": "COUNTER", "key": "spend", "value": "event.amount"}]},
        {"name": "Rank points", "key": "rank_points", "order": 20, "condition": 'event.type == "buy"',
         "actions": [{"type": "CREDIT", "asset": "PTS",
                      "amount": "has(participant.tiers.club) ? participant.tiers.club.rank * 10 : 1"}]},
    ]
    events = [ev("b1", "a", at(10), "buy", amount=100),   # spend 100: nothing yet; paid 1
              ev("b2", "a", at(11), "buy", amount=200),   # spend 300 >= 250: regular; paid 1
              ev("b3", "a", at(12), "buy", amount=600),   # spend 900 < 1000: still regular; paid 10
              ev("b4", "a", at(13), "buy", amount=100),   # spend 1000 >= 1000: big; paid 10
              ev("b5", "a", at(14), "buy", amount=0)]     # big (never is past any counter); paid 20
    for lg in both_paths(tmp_path, program(rules, tiers=[tier]), events):
        assert history(lg) == [("a", "club", None, "regular", "AUTO", "2025-03-01 11:00"),
                               ("a", "club", "regular", "big", "AUTO", "2025-03-01 13:00")]
        assert [lg.entries(k) for k in ("b1", "b2", "b3", "b4", "b5")] == [
            [("CREDIT", D(1))], [("CREDIT", D(1))], [("CREDIT", D(10))], [("CREDIT", D(10))], [("CREDIT", D(20))]]


def test_a_budget_limit_written_with_an_exponent_is_its_value_on_every_path(tmp_path):
    # semantics.md 2.1 / 5.3: a rule's budget `limit` of '3e2' is 300: three credits of 100 fit,
    # the fourth and fifth are BUDGET_EXCEEDED (the rule is skipped, the event completes).
    rules = [{"name": "Buy", "key": "buy", "condition": 'event.type == "buy"',
              "budgets": [{"asset": "PTS", "limit": "3e2"}],
              "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "100"}]},
             {"name": "Visits", "key": "visits", "condition": 'event.type == "buy"',
              "actions": [{"type": "COUNTER", "key": "visits", "value": "1"}]}]
    events = [ev(f"b{i}", "a", at(10 + i), "buy") for i in range(5)]
    for lg in both_paths(tmp_path, program(rules), events):
        assert all(lg.status()[f"b{i}"] == OK for i in range(5))
        assert lg.balance("a")[0] == D(300)
        assert lg.sql("SELECT e.idempotency_key, r.outcome FROM rule_evaluations r JOIN events e ON e.id = r.event_id "
                      "JOIN rules u ON u.id = r.rule_id WHERE u.key = 'buy' ORDER BY 1") == [
            ("b0", "MATCHED"), ("b1", "MATCHED"), ("b2", "MATCHED"), ("b3", "BUDGET_EXCEEDED"), ("b4", "BUDGET_EXCEEDED")]


def test_a_max_transaction_amount_the_ledger_cannot_hold_is_a_load_error(tmp_path):
    # semantics.md 2.1 / 13: a program file that does not validate stops the run before anything is
    # written (exit 2, a message naming the file and field). An asset's max_transaction_amount is
    # stored as a ledger amount, DECIMAL(38, 18) (semantics.md 1.1, 8): '1e24' (or one with 19
    # decimals) is not one, and crashed the run at the catalog write (exit 1, internal error).
    for i, limit in enumerate(("1e24", "0.0000000000000000001")):
        pts = {"symbol": "PTS", "name": "Points", "inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED", "scale": 0,
               "max_transaction_amount": limit}
        rules = [{"name": "Buy", "key": "buy", "condition": 'event.type == "buy"',
                  "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "event.amount"}]}]
        (tmp_path / str(i)).mkdir()
        lg = Ledger(tmp_path / str(i), program(rules, assets=[pts]))
        out = lg.run([ev("b1", "a", at(10), "buy", amount=150)], expect=2)
        said = " ".join(out["stderr"].split())  # the console wraps long lines
        assert "max_transaction_amount" in said and "DECIMAL(38, 18)" in said, said
        assert not lg.db.exists() or lg.sql("SELECT COUNT(*) FROM events") == [(0,)]


#: `club` has a lifecycle tier on `visits`; `cafe` has no tiers and counts the same `visits`
#: (counters belong to the participant, whichever program writes them: decisions.md
#: "Participants and state"). 2026-01-01: a keeps gold (10 >= 10), b drops one rank to silver
#: (9 < 10), visits roll to 0 (NONE); then each coffee counts 1.
STATUS = {"key": "status", "levels": [
    {"key": "silver", "rank": 1, "qualification": {"criteria": [{"counter": "visits", "operator": ">=", "threshold": 5}]}},
    {"key": "gold", "rank": 2, "qualification": {"criteria": [{"counter": "visits", "operator": ">=", "threshold": 10}]}}],
    "lifecycle": {"retention": {"mode": "PERIOD_BASED"}, "qualification_period": {"type": "CALENDAR_YEAR"},
                  "downgrade_policy": {"mode": "DROP_ONE"}, "counters": {"rollover": "NONE", "qualifying": ["visits"]}}}
CLUB = program([{"name": "Visit", "key": "visit", "condition": 'event.type == "visit"',
                 "actions": [{"type": "COUNTER", "key": "visits", "value": "event.n"}]}], key="club", tiers=[STATUS])
CAFE = program([{"name": "Coffee", "key": "coffee", "condition": 'event.type == "coffee"',
                 "actions": [{"type": "COUNTER", "key": "visits", "value": "1"},
                             {"type": "CREDIT", "asset": "PTS", "amount": "1"}]}], key="cafe")
YEAR1 = [ev("a1", "a", "2025-06-01T10:00:00Z", "visit", n=10) | {"program": "club"},   # a: gold, visits 10
         ev("b1", "b", "2025-06-01T10:00:00Z", "visit", n=10) | {"program": "club"},   # b: gold ...
         ev("b2", "b", "2025-07-01T10:00:00Z", "visit", n=-1) | {"program": "club"}]   # ... visits 9
COFFEES = [ev(f"c{w}", w, "2026-02-01T10:00:00Z", "coffee") | {"program": "cafe"} for w in ("a", "b")]


def coffee_after_the_close(tmp_path, name: str, batch: list[dict], *, club_file: bool = True) -> None:
    """YEAR1, then `batch` (the coffees, in 2026), then maintenance: the closes happened before
    the coffees whatever took them."""
    (tmp_path / name).mkdir()
    lg = Ledger(tmp_path / name, CLUB, CAFE)
    lg.run(YEAR1)
    if not club_file:
        (lg.programs / "club.yaml").unlink()
    lg.run(batch)
    maintain = cli("maintain", "--as-of", "2026-03-01T00:00:00Z", "--db", str(lg.db))
    assert maintain.returncode == 0, maintain.stderr
    assert history(lg) == [("a", "status", None, "gold", "AUTO", "2025-06-01 10:00"),
                           ("b", "status", None, "gold", "AUTO", "2025-06-01 10:00"),
                           ("b", "status", "gold", "silver", "LIFECYCLE", "2026-01-01 00:00")], name
    assert [lg.state(w)[("COUNTER", "visits")] for w in ("a", "b")] == [D(1), D(1)], name


def test_another_programs_due_rollover_and_review_come_before_a_long_batch_writes_the_counter(tmp_path):
    # semantics.md 3: before an event at time t is evaluated, everything due at or before t for
    # the entities it touches has happened (tier period ends included), whichever program's event
    # it is; semantics.md 10 / decisions.md "Tiers": a review reads the counters as of its due
    # instant, then the period close rolls the qualifying counters. A long batch of cafe events
    # took the running path, which applied neither club's close: a's visit after it was wiped by
    # the rollover maintenance applied later (visits 0, not 1), and b's review read the cafe
    # visit made after its due instant and kept gold.
    fill = [row | {"program": "cafe"} for row in filler("2026-02-01T09:00:00Z")]
    for name, batch in (("kernel", COFFEES), ("long batch", COFFEES + fill)):
        coffee_after_the_close(tmp_path, name, batch)


def test_a_run_without_the_tiers_program_file_still_applies_its_due_closes(tmp_path):
    # The same, for a run given only cafe's file (club's definitions are in the ledger, as
    # `perkflow maintain` reads them): the kernel applied only the tiers of the files it was
    # given, so the same two differences came from leaving a program file out of a run.
    coffee_after_the_close(tmp_path, "cafe file only", COFFEES, club_file=False)


def test_two_programs_cannot_put_two_clocks_on_one_counter(tmp_path):
    # decisions.md "Tiers", counter rollover: a counter rolls over with one tier only and cannot
    # also have a COUNTER reset_after (rejected at load: two clocks); counters belong to the
    # participant across programs, so a second program doing either is the same conflict. It was
    # checked within one file only: both loaded (semantics.md 2.1 / 13: exit 2, nothing written).
    yearly = {**STATUS, "key": "yearly", "lifecycle": {**STATUS["lifecycle"], "qualification_period": {
        "type": "FIXED_YEAR", "start_month": 7, "start_day": 1}}}
    second_tier = program([], key="shop", tiers=[yearly])
    daily = program([{"name": "Daily", "key": "daily", "condition": 'event.type == "visit"',
                      "actions": [{"type": "COUNTER", "key": "visits", "value": "1", "reset_after": "24h"}]}], key="shop")
    for name, other, message in (("tier", second_tier, "counter 'visits' already rolls over with tier 'status' of program 'club'"),
                                 ("reset_after", daily, "counter 'visits' rolls over with tier 'status' of program 'club'")):
        (tmp_path / name).mkdir()
        lg = Ledger(tmp_path / name, CLUB, other)
        out = lg.run([ev("v1", "a", at(10), "visit", n=1) | {"program": "club"}], expect=2)
        said = " ".join(out["stderr"].split())  # the console wraps long lines
        assert "shop.yaml" in said and message in said, said
        assert not lg.db.exists()


def test_a_start_day_on_a_calendar_year_is_a_load_error_not_ignored(tmp_path):
    # scrip-reference 14: CALENDAR_YEAR is 1 January to 31 December, FIXED_YEAR "uses start_month
    # and start_day"; decisions.md "Tiers": a CALENDAR_YEAR period ends on 1 January. A
    # CALENDAR_YEAR with start_month 4 loaded and ended its periods on 1 January, the start
    # silently ignored, as an unknown field would be (semantics.md 2.1: such files are errors).
    for period in ({"type": "CALENDAR_YEAR", "start_month": 4, "start_day": 1}, {"type": "NONE", "start_day": 1}):
        tier = {**STATUS, "lifecycle": {**STATUS["lifecycle"], "qualification_period": period}}
        if period["type"] == "NONE":
            tier["lifecycle"] = {k: v for k, v in tier["lifecycle"].items() if k != "counters"}  # rollover needs a year
        name = period["type"]
        (tmp_path / name).mkdir()
        lg = Ledger(tmp_path / name, program([], key="club", tiers=[tier]))
        out = lg.run([ev("v1", "a", at(10), "visit") | {"program": "club"}], expect=2)
        said = " ".join(out["stderr"].split())
        assert "qualification_period: start_month and start_day apply to FIXED_YEAR only" in said, said


def test_an_expires_at_on_set_tier_points_at_the_operation_that_has_one(tmp_path):
    # README / decisions.md: a field an action never takes is a load error that lists the fields
    # that action takes (semantics.md 2.1: exit 2, nothing written). SET_TIER with `expires_at`
    # (Scrip's tier PUT has one; perkflow's is the set_tier operation's) said "expires_at applies
    # to CREDIT only (a lot's expiry ...)", naming neither SET_TIER's fields nor where an expiring
    # level is set.
    rules = [{"name": "Promo", "key": "promo", "condition": 'event.type == "promo"',
              "actions": [{"type": "SET_TIER", "tier": "status", "level": "gold", "expires_at": "720h"}]}]
    lg = Ledger(tmp_path, program(rules, key="club", tiers=[STATUS]))
    out = lg.run([ev("p1", "a", at(10), "promo") | {"program": "club"}], expect=2)
    said = " ".join(out["stderr"].split())
    assert "actions[0].expires_at: SET_TIER sets a level without an expiry (its fields are description, level, " \
           "target, tier); a level that expires is set by the set_tier operation's params.expires_at" in said, said
