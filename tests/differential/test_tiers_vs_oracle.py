"""Tier lifecycles, engine against oracle (tests/oracle/tiers.py): random tier programs using
every lifecycle option (tests/differential/tier_strategies.py) over 2.5-year streams cut into
batches, with maintenance runs at random instants between batches and a final one. The oracle
runs the stream whole and maintains once at the end; the engine's tier history (per participant
and tier, in order, with the due instants), levels (with when each was reached and where its
lifecycle window starts: participant_tiers.reviewed_at), counters, tags, balances and event
statuses must be the oracle's. So this holds the engine to the contract and, at once, to batch
invariance and "maintenance early, late or never gives the same ledger" (semantics.md 1.5, 3).

`PERKFLOW_TIER_EXAMPLES` sets the number of cases (default 40).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import duckdb
from hypothesis import given, settings

from engine.maintain import maintain
from engine.run import run_batch
from tests.differential import tier_strategies as TS
from tests.differential.ledger_view import read_ledger
from tests.differential.test_engine_vs_oracle import SCHEMA, SETTINGS
from tests.helpers.io import write_events, write_program
from tests.oracle import run_oracle
from tests.helpers.examples import examples

EXAMPLES = examples("PERKFLOW_TIER_EXAMPLES", 40)


def _chains(rows: list[tuple]) -> dict[tuple, list[tuple]]:
    """History rows grouped per (program, tier, participant), each group in its order."""
    out: dict[tuple, list[tuple]] = {}
    for prog, tier, ext, *rest in rows:
        out.setdefault((prog, tier, ext), []).append(tuple(rest))
    return out


def _engine(prog_dir: Path, sc: TS.TierScenario, work: Path) -> tuple:
    db = work / "w.duckdb"
    for i, batch in enumerate(sc.batches):
        run_batch(prog_dir, write_events(work / f"b{i}.parquet", [r.for_parquet() for r in batch], schema=SCHEMA), db)
        if i < len(sc.maintain) and sc.maintain[i] is not None:
            maintain(sc.maintain[i], db)
    maintain(TS.END, db)
    con = duckdb.connect(str(db), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        history = con.execute("""
            SELECT pr.key, h.tier_key, p.external_id, h.from_level, h.to_level, h.reason, e.idempotency_key,
                   h.effective_at
            FROM tier_history h JOIN participants p ON p.id = h.participant_id JOIN programs pr ON pr.id = h.program_id
            LEFT JOIN events e ON e.id = h.event_id ORDER BY h.seq""").fetchall()
        # reviewed_at: the window start when it is not achieved_at (docs/reports.md)
        levels = dict(((ext, prog, key), tuple(held)) for ext, prog, key, *held in con.execute("""
            SELECT p.external_id, pr.key, t.key, pt.level, pt.achieved_at,
                   greatest(pt.achieved_at, coalesce(pt.reviewed_at, pt.achieved_at))
            FROM participant_tiers pt
            JOIN participants p ON p.id = pt.participant_id JOIN tiers t ON t.id = pt.tier_id
            JOIN programs pr ON pr.id = t.program_id""").fetchall())
        return history, levels, read_ledger(con)
    finally:
        con.close()


def same_as_oracle(sc: TS.TierScenario) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        program = write_program(work / "programs" / "club.yaml", sc.program)
        want = run_oracle([program], [[r.for_oracle() for r in b] for b in sc.batches], maintain_at=TS.END)
        history, levels, got = _engine(program.parent, sc, work)
    assert got.events == want.events
    assert _chains(history) == _chains(want.tier_history)
    assert levels == want.tiers
    assert got.participants == want.participants
    assert got.balances == want.balances


@settings(max_examples=EXAMPLES, **SETTINGS)
@given(TS.tier_scenarios())
def test_tier_lifecycles_match_the_oracle(sc):
    same_as_oracle(sc)
