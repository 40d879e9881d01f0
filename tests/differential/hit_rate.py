"""How often the differential strategies produce cases that write journal entries (and how varied
they are): draws N scenarios of `strategies.scenarios` as the property tests do, runs the engine
on each (as test_engine_vs_oracle.run_engine does, in-memory ledger) and prints a summary.

    PYTHONPATH=. .venv/bin/python -m tests.differential.hit_rate [N=200] [main|invariance]

Not a test (pytest does not collect it): a measurement to re-run after changing the strategies.
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings

from engine.errors import CatalogError
from tests.differential import strategies as S
from tests.differential.test_engine_vs_oracle import INVARIANCE_FLAGS, MAIN_FLAGS, _write, run_engine


def measure(n: int, flags: S.Flags) -> Counter:
    stats: Counter = Counter()

    @settings(max_examples=n, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(scenario=S.scenarios(flags))
    def draw(scenario):
        stats["cases"] += 1
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            prog_dir, _, batch_files = _write(d, scenario)
            try:
                got = run_engine(prog_dir, batch_files, d / "ledger.duckdb", row_path=False)
            except CatalogError as e:
                stats["program load error"] += 1
                stats[f"no entries: program load error ({_load_error_kind(str(e))})"] += 1
                return
        stats["with entries"] += bool(got.entries)
        if not got.entries:
            stats[f"no entries: {_why_none(scenario, got)}"] += 1
        stats["entries"] += len(got.entries)
        codes = Counter(code for status, code in got.events.values() if status == "FAILED")
        stats["with a FAILED event"] += bool(codes)
        for code in codes:
            stats[f"with FAILED {code}"] += 1
        outcomes = {o for *_, o in got.evaluations}
        matched_rules = {(p, k) for p, k, _r, o in got.evaluations if o == "MATCHED"}
        stats["with an event no rule matched"] += any(
            (p, k) not in matched_rules for (p, k), (status, _) in got.events.items() if status == "COMPLETED")
        for o in outcomes:
            stats[f"with evaluation {o}"] += 1
        reasons = {reason for _key, reason in got.rejected}
        for r in reasons:
            stats[f"with rejected {r}"] += 1
        stats["with duplicates"] += bool(got.duplicates)

    draw()
    return stats


def _load_error_kind(message: str) -> str:
    for word in ("amount", "condition", "order", "budget", "tag", "target", "value", "key"):
        if word in message.lower():
            return word
    return message[:40]


def _why_none(scenario: S.Scenario, got) -> str:
    """Why a case that loaded wrote no entry (the first reason that applies)."""
    moves = any(a["type"] in ("CREDIT", "DEBIT") for spec in scenario.programs for r in spec["rules"]
                if r.get("status", "ACTIVE") == "ACTIVE" for a in r["actions"])
    if not moves:
        return "no active rule credits or debits"
    completed = {k for k, (status, _) in got.events.items() if status == "COMPLETED"}
    matched = {(p, k) for p, k, _r, o in got.evaluations if o == "MATCHED"}
    if not matched:
        return "no rule matched any event"
    if not matched & completed:
        return "every event a rule matched failed"
    return "matched events completed, but their actions moved nothing"


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    flags = INVARIANCE_FLAGS if len(sys.argv) > 2 and sys.argv[2] == "invariance" else MAIN_FLAGS
    stats = measure(n, flags)
    cases = stats.pop("cases")
    print(f"{cases} cases")
    for k, v in sorted(stats.items(), key=lambda kv: (kv[0] != "with entries", kv[0])):
        print(f"  {k}: {v}" + ("" if k == "entries" else f" ({100 * v / cases:.0f}%)"))


if __name__ == "__main__":
    main()
