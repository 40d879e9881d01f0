"""Every conformance case, on both backends, must have the outcome `expectations.json` says.

A case absent from the file must pass; a listed case must keep its listed outcome, so a
fix shows up too (regenerate with `python -m tests.conformance.run --write-expectations`).
"""

from __future__ import annotations

import pytest

from .run import BACKENDS, RUNNERS, conformance_dir, load_cases, load_expectations

if conformance_dir().is_dir():
    CASES = load_cases()
else:
    CASES = []

EXPECTED = load_expectations()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "/".join(c.key))
def test_case(case, backend):
    expected = EXPECTED.get(case.key + (backend,), {"outcome": "pass", "reason": ""})
    if case.scope_reason:
        outcome, reason = "skip", case.scope_reason
    else:
        outcome, reason = RUNNERS[backend](case)
    assert outcome == expected["outcome"], f"{reason} (expected {expected['outcome']}: " \
                                           f"{expected['reason']})"


def test_conformance_cases_present():
    if not conformance_dir().is_dir():
        pytest.skip(f"CEL conformance cases not found at {conformance_dir()}; "
                    "set PERKFLOW_CEL_CONFORMANCE to run them")
    keys = {c.key for c in CASES}
    stale = [k for k in EXPECTED if k[:3] not in keys]
    assert not stale, f"expectations.json lists cases that no longer exist: {stale[:5]}"
