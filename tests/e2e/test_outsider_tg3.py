"""An outsider's scenario tests, session 20: tiers, groups and automations (semantics.md 10, 11),
black box. Expectations come from semantics.md (and docs/decisions.md where it is silent) alone;
every test runs the real CLI on Parquet inputs into a real DuckDB file.

- An automation's `guard_condition` / `participant_filter` was judged on the state the ledger
  stored, without the time-driven changes due by the firing instant (semantics.md 3): a
  guard on `participant.balances` passed on a lot that had expired hours before the firing, and
  a guard on `participant.tiers` passed on a level a lifecycle review had taken away at the
  period end before it, so both firings paid out; and a THRESHOLD firing in the counter
  period a due rollover begins came one maintenance run late (applied after the planning).
- An automation taken out of its program's file and put back later fired, at the next
  maintenance, every instant that passed while it was out (dated in the past); it now passes
  them like a paused automation (archived while out of the file).
- A tier taken out of its program's file kept acting from its stored definition: its lifecycle
  reviewed levels and rolled counters over (a counter the files no longer roll was wiped at
  every 1 January), in runs and in maintenance.
- A lifecycle added to a tier members already held applied, at their next touch, every period
  end since they reached their level (dated in the past, after later events had seen the old
  level) and rolled their counters for closes that passed before it existed; it now starts at
  the ledger's clock when it is first stored (`tiers.lifecycle_since`); so does one of a tier
  taken out of its file and put back.
"""

from __future__ import annotations

from decimal import Decimal as D

from tests.e2e.test_contract_audit import LOT, Ledger, ev, on, program
from tests.helpers.io import cli


def maintain(lg: Ledger, *as_of: str) -> None:
    for t in as_of:
        res = cli("maintain", "--db", str(lg.db), "--as-of", t)
        assert res.returncode == 0, res.stdout + res.stderr


def fired(lg: Ledger, automation: str) -> list[str]:
    """The instants (UTC text) of an automation's SYSTEM events, in order."""
    return [t for (t,) in lg.sql(
        "SELECT strftime(event_timestamp, '%Y-%m-%dT%H:%M:%SZ') FROM events WHERE idempotency_key LIKE ? "
        "ORDER BY event_timestamp", [f"system:automation:{automation}:%"])]


def level(key: str, rank: int, counter: str, threshold: str) -> dict:
    return {"key": key, "rank": rank,
            "qualification": {"mode": "ALL", "criteria": [{"counter": counter, "operator": ">=", "threshold": threshold}]}}


def test_a_guard_sees_the_lot_expiry_due_before_the_firing(tmp_path):
    # semantics.md 3 / 9.1 / 11: a lot of 100 expires at 2 March 06:00 ("expired lots are never
    # spendable, even before the expiry entry is written"); a daily 12:00 automation guarded by
    # `available >= 100` fires on 1 March (100 available) and not on 2 March (0 since 06:00).
    autos = [{"name": "Rich", "key": "rich", "event_name": "rich", "scope": "participants",
              "trigger": {"type": "cron", "cron_expression": "0 12 * * *"},
              "guard_condition": "participant.balances.PTS.available >= 100.0"}]
    rules = [on("buy", {"type": "CREDIT", "asset": "PTS", "amount": "100", "expires_at": "2025-03-02T06:00:00Z"}),
             on("rich", {"type": "COUNTER", "key": "rich", "value": "1"})]
    lg = Ledger(tmp_path, program(rules, [LOT], automations=autos))
    lg.run([ev("b1", "a", "2025-03-01T00:00:00Z", "buy")])
    maintain(lg, "2025-03-03T00:00:00Z")
    assert fired(lg, "rich") == ["2025-03-01T12:00:00Z"]
    assert lg.state("a") == {("COUNTER", "rich"): D(1)}
    assert lg.balance("a") == (D(0), D(0), D(0))


def test_a_guard_sees_the_tier_review_due_before_the_firing(tmp_path):
    # semantics.md 3 / 10 / 11: gold (v >= 5) reached in December 2025 is reviewed at each
    # 1 January 00:00 (CALENDAR_YEAR, DROP_ONE, counters rolled to 0 after each close): kept on
    # 1 January 2026 (v = 5), dropped to silver on 1 January 2027 (v = 0). A yearly 1 January
    # 12:00 bonus for gold members fires in 2026 only, whether maintenance runs once or twice.
    tier = {"key": "club", "levels": [level("silver", 1, "v", "1"), level("gold", 2, "v", "5")],
            "lifecycle": {"retention": {"mode": "PERIOD_BASED"}, "qualification_period": {"type": "CALENDAR_YEAR"},
                          "downgrade_policy": {"mode": "DROP_ONE"}, "counters": {"rollover": "NONE"}}}
    autos = [{"name": "Gold bonus", "key": "gb", "event_name": "gb", "scope": "participants",
              "trigger": {"type": "cron", "cron_expression": "0 12 1 1 *"},
              "guard_condition": 'has(participant.tiers.club) && participant.tiers.club.level == "gold"'}]
    rules = [on("buy", {"type": "COUNTER", "key": "v", "value": "event.n"}), on("gb", {"type": "CREDIT", "asset": "PTS", "amount": "10"})]
    for name, as_of in (("once", ["2027-01-02T00:00:00Z"]), ("twice", ["2026-06-01T00:00:00Z", "2027-01-02T00:00:00Z"])):
        (tmp_path / name).mkdir()
        lg = Ledger(tmp_path / name, program(rules, tiers=[tier], automations=autos))
        lg.run([ev("b1", "a", "2025-12-15T00:00:00Z", "buy", n=5)])
        maintain(lg, *as_of)
        assert lg.sql("SELECT from_level, to_level, reason, strftime(effective_at, '%Y-%m-%d %H:%M') FROM tier_history "
                      "ORDER BY seq") == [(None, "gold", "AUTO", "2025-12-15 00:00"),
                                          ("gold", "silver", "LIFECYCLE", "2027-01-01 00:00")]
        assert fired(lg, "gb") == ["2026-01-01T12:00:00Z"], name
        assert lg.balance("a")[0] == D(10)


def test_a_threshold_sees_the_rollover_due_before_the_maintenance_that_plans_it(tmp_path):
    # semantics.md 3 / 10 / 11, docs/decisions.md "participant_state THRESHOLD": spend 2500 makes
    # the member gold (spend >= 1000) and passes the THRESHOLD spend >= 1000, which fires at the
    # next maintenance (2 June 2025). At the close of 1 January 2026 spend rolls over (EXCESS:
    # 2500 - 1000 = 1500), which begins a new counter period in which it still passes: the first
    # maintenance after the close (as of 5 January) fires again, not only the one after it.
    tier = {"key": "club", "levels": [level("gold", 1, "spend", "1000")],
            "lifecycle": {"retention": {"mode": "PERIOD_BASED"}, "qualification_period": {"type": "CALENDAR_YEAR"},
                          "downgrade_policy": {"mode": "HOLD"}, "counters": {"rollover": "EXCESS"}}}
    autos = [{"name": "Big", "key": "big", "event_name": "big", "scope": "participants",
              "trigger": {"type": "participant_state", "schedule_type": "THRESHOLD",
                          "schedule_config": {"counter": "spend", "operator": ">=", "threshold": 1000}}}]
    rules = [on("buy", {"type": "COUNTER", "key": "spend", "value": "event.amount"}),
             on("big", {"type": "CREDIT", "asset": "PTS", "amount": "7"})]
    lg = Ledger(tmp_path, program(rules, tiers=[tier], automations=autos))
    lg.run([ev("b1", "a", "2025-06-01T00:00:00Z", "buy", amount=2500)])
    maintain(lg, "2025-06-02T00:00:00Z", "2026-01-05T00:00:00Z", "2026-01-06T00:00:00Z")
    assert fired(lg, "big") == ["2025-06-02T00:00:00Z", "2026-01-05T00:00:00Z"]
    assert lg.state("a") == {("COUNTER", "spend"): D(1500)}
    assert lg.balance("a")[0] == D(14)


def test_an_automation_taken_out_of_the_file_and_put_back_does_not_make_up_the_firings_it_missed(tmp_path):
    # semantics.md 11 and docs/decisions.md "Automations" (an automation added later starts where
    # the ledger was; a paused one does not make up its instants): a monthly automation fires on
    # 1 April; a run then loads the file without it, and the maintenance of 2 July has nothing to
    # fire; put back by the run of 15 July, it fires on 1 August and not on 1 May, June and July.
    from tests.helpers.io import write_program
    autos = [{"name": "Monthly", "key": "monthly", "event_name": "monthly", "scope": "participants",
              "trigger": {"type": "cron", "cron_expression": "0 0 1 * *"}}]
    rules = [on("monthly", {"type": "CREDIT", "asset": "PTS", "amount": "10"}),
             on("buy", {"type": "CREDIT", "asset": "PTS", "amount": "1"})]
    lg = Ledger(tmp_path, program(rules, automations=autos))
    lg.run([ev("b1", "a", "2025-03-15T00:00:00Z", "buy")])
    maintain(lg, "2025-04-02T00:00:00Z")
    write_program(lg.programs / "shop.yaml", program(rules))
    lg.run([ev("b2", "a", "2025-04-15T00:00:00Z", "buy")])
    maintain(lg, "2025-07-02T00:00:00Z")
    assert fired(lg, "monthly") == ["2025-04-01T00:00:00Z"]
    write_program(lg.programs / "shop.yaml", program(rules, automations=autos))
    lg.run([ev("b3", "a", "2025-07-15T00:00:00Z", "buy")])
    maintain(lg, "2025-08-02T00:00:00Z")
    assert fired(lg, "monthly") == ["2025-04-01T00:00:00Z", "2025-08-01T00:00:00Z"]
    assert lg.balance("a")[0] == D(23)


def test_a_tier_taken_out_of_the_file_no_longer_rolls_counters_nor_reviews_levels(tmp_path):
    # semantics.md 2.1 / 10: tiers are what the program files define. `club` rolls `spend` to 0 at
    # every 1 January (rollover NONE) and drops members who no longer qualify (DROP_ONE; gold
    # needs spend >= 100, a second level below it). A run then loads the file without the tier
    # (the rule still counts spend): neither that run's event after the close, nor a later run,
    # nor maintenance, rolls spend over or reviews the level any more.
    from tests.helpers.io import write_program
    tier = {"key": "club", "levels": [level("silver", 1, "spend", "10"), level("gold", 2, "spend", "100")],
            "lifecycle": {"retention": {"mode": "PERIOD_BASED"}, "qualification_period": {"type": "CALENDAR_YEAR"},
                          "downgrade_policy": {"mode": "DROP_ONE"}, "counters": {"rollover": "NONE"}}}
    rules = [on("buy", {"type": "COUNTER", "key": "spend", "value": "event.amount"})]
    lg = Ledger(tmp_path, program(rules, tiers=[tier]))
    lg.run([ev("b1", "a", "2025-06-01T00:00:00Z", "buy", amount=150), ev("c1", "c", "2025-06-01T00:00:00Z", "buy", amount=150)])
    write_program(lg.programs / "shop.yaml", program(rules))
    lg.run([ev("b2", "a", "2026-02-01T00:00:00Z", "buy", amount=10)])
    assert lg.state("a") == {("COUNTER", "spend"): D(160)}
    lg.run([ev("b3", "a", "2027-02-01T00:00:00Z", "buy", amount=1)])
    maintain(lg, "2028-02-01T00:00:00Z")
    assert lg.state("a") == {("COUNTER", "spend"): D(161)}
    assert lg.state("c") == {("COUNTER", "spend"): D(150)}
    assert lg.sql("SELECT count(*) FROM tier_history WHERE reason = 'LIFECYCLE'") == [(0,)]
    lg.verify()


def test_a_lifecycle_added_to_a_held_tier_starts_when_it_is_added(tmp_path):
    # semantics.md 3 ("history is never rewritten") / 10: gold (spend >= 1000) was reached in 2023
    # under a tier without lifecycle; an event of 1 June 2025 still sees gold. A run of July 2025
    # adds a CALENDAR_YEAR lifecycle (DROP_ONE, counters rolled to 0). It reviews from the first
    # period end after it was added, 1 January 2026, not at the period ends of 2024 and 2025 that
    # passed before it existed (which dropped the member to silver "since 1 January 2025", after
    # the June event had seen gold, and wiped the spend counted then): on 1 January 2026 spend
    # 1220 keeps gold and rolls to 0; on 1 January 2027 spend 0 drops it to silver.
    from tests.helpers.io import write_program
    levels = [level("bronze", 1, "spend", "100"), level("silver", 2, "spend", "500"), level("gold", 3, "spend", "1000")]
    life = {"retention": {"mode": "PERIOD_BASED"}, "qualification_period": {"type": "CALENDAR_YEAR"},
            "downgrade_policy": {"mode": "DROP_ONE"}, "counters": {"rollover": "NONE"}}
    rules = [on("buy", {"type": "COUNTER", "key": "spend", "value": "event.amount"})]
    lg = Ledger(tmp_path, program(rules, tiers=[{"key": "club", "levels": levels}]))
    lg.run([ev("b1", "a", "2023-03-01T00:00:00Z", "buy", amount=1200)])
    lg.run([ev("b2", "a", "2025-06-01T00:00:00Z", "buy", amount=10)])
    write_program(lg.programs / "shop.yaml", program(rules, tiers=[{"key": "club", "levels": levels, "lifecycle": life}]))
    lg.run([ev("b3", "a", "2025-07-01T00:00:00Z", "buy", amount=10)])

    def changes():
        return lg.sql("SELECT from_level, to_level, reason, strftime(effective_at, '%Y-%m-%d') FROM tier_history ORDER BY seq")
    assert changes() == [(None, "gold", "AUTO", "2023-03-01")]
    assert lg.state("a") == {("COUNTER", "spend"): D(1220)}
    maintain(lg, "2027-02-01T00:00:00Z")
    assert changes() == [(None, "gold", "AUTO", "2023-03-01"), ("gold", "silver", "LIFECYCLE", "2027-01-01")]
    assert lg.sql("SELECT number_value, strftime(last_reset_at, '%Y-%m-%d') FROM participant_state") == [(D(0), "2027-01-01")]
    lg.verify()


def test_a_tier_put_back_in_the_file_starts_its_lifecycle_anew(tmp_path):
    # semantics.md 3 / 10, as the two tests above: `club` (CALENDAR_YEAR, DROP_ONE, spend rolled to
    # 0) is taken out of the file in July 2025 and put back by a run of July 2027. Its lifecycle
    # starts then (the ledger's clock before that run: 1 June 2027): the period ends of 2026 and
    # 2027 that passed while it was out neither roll spend over nor review the gold level.
    from tests.helpers.io import write_program
    levels = [level("silver", 1, "spend", "10"), level("gold", 2, "spend", "100")]
    life = {"retention": {"mode": "PERIOD_BASED"}, "qualification_period": {"type": "CALENDAR_YEAR"},
            "downgrade_policy": {"mode": "DROP_ONE"}, "counters": {"rollover": "NONE"}}
    rules = [on("buy", {"type": "COUNTER", "key": "spend", "value": "event.amount"})]
    with_tier = program(rules, tiers=[{"key": "club", "levels": levels, "lifecycle": life}])
    lg = Ledger(tmp_path, with_tier)
    lg.run([ev("b1", "a", "2025-06-01T00:00:00Z", "buy", amount=150)])
    write_program(lg.programs / "shop.yaml", program(rules))
    lg.run([ev("b2", "a", "2025-07-01T00:00:00Z", "buy", amount=10)])
    lg.run([ev("b3", "a", "2027-06-01T00:00:00Z", "buy", amount=10)])
    write_program(lg.programs / "shop.yaml", with_tier)
    lg.run([ev("b4", "a", "2027-07-01T00:00:00Z", "buy", amount=10)])
    assert lg.sql("SELECT reason FROM tier_history ORDER BY seq") == [("AUTO",)]
    assert lg.state("a") == {("COUNTER", "spend"): D(180)}
