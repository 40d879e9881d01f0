"""The running-state path (engine/running.py) against the oracle.

The main property test draws from every construct, and most of its programs (targets,
recipients, program state) take the sequential kernel. Here programs are drawn from what the
running path covers -- conditions on event, time and participant state (tags, counters with
reset_after, attributes, balances), TAG/UNTAG/COUNTER/SET_ATTRIBUTE/CREDIT/DEBIT, budgets, a
PREFUNDED asset whose wallet a first run funds (credits failing insufficient_wallet),
windows, stop_after_match, failing debits, ties, duplicates, late events across batches -- so
that the set-wise fixed point is held to one-event-at-a-time semantics on hundreds of cases.
A guard makes sure the cases really take that path (a silent fallback to the kernel would make
the comparison vacuous)."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
from hypothesis import given, settings

import engine.running as running
from tests.differential import strategies as S
from tests.differential.test_engine_vs_oracle import MAIN_FLAGS, SETTINGS, check
from tests.helpers.examples import examples

EXAMPLES = examples("PERKFLOW_DIFF_EXAMPLES", 250) // 2
RUNNING_FLAGS = dataclasses.replace(MAIN_FLAGS, recipients=False, targets=False, program_state_in_conditions=False,
                                    prefunded=True)
PATHS: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def count_paths():
    """Count which batches the running path decided, and check most did."""
    original = running.run

    def counted(*args, **kwargs):
        out = original(*args, **kwargs)
        PATHS["running" if out is not None else "fell back"] += 1
        return out

    running.run = counted
    yield
    running.run = original
    took = PATHS["running"]
    assert took >= 0.5 * sum(PATHS.values()), f"the running path decided too few batches: {dict(PATHS)}"


@settings(max_examples=EXAMPLES, **SETTINGS)
@given(scenario=S.scenarios(RUNNING_FLAGS))
def test_running_path_equals_oracle(scenario):
    check(scenario, row_path=False)


def test_a_number_as_a_tag_is_its_text():
    """Found by the main property test: a static TAG value that is a number (`"5"`) crashed the
    running path. It is the tag "5" as written (docs/decisions.md "Value fields"; it failed the
    matching events, expression_error, until session 18): the running path must agree."""
    from tests.differential.test_engine_vs_oracle import _row, _spec
    check(S.Scenario(
        [_spec([{"name": "Counted", "key": "c", "condition": 'event.type == "visit"',
                 "actions": [{"type": "COUNTER", "key": "visits", "value": "1"}]},
                {"name": "Tagged", "key": "t", "condition": 'participant.counters.visits >= 2.0',
                 "actions": [{"type": "TAG", "tag": "5"}]}])],
        [[_row("k0", "u1", "2025-03-01T09:00:00Z", '{"type": "visit"}'),
          _row("k1", "u1", "2025-03-01T10:00:00Z", '{"type": "visit"}'),
          _row("k2", "u2", "2025-03-01T10:00:00Z", '{"type": "visit"}')]]), row_path=False)


def _decided_by_running_path(scenario) -> None:
    """`check`, and the last batch must have been decided by the running path (not the kernel)."""
    before = PATHS["running"]
    check(scenario, row_path=False)
    assert PATHS["running"] > before, "the running path declined the batch: the case tests nothing"


def test_written_tags_go_in_among_the_opening_tags_in_order():
    """participant.tags is sorted. The running path merges the tags no rule of the batch writes
    (from an earlier batch, here of another program) with the ones it writes by position, not by
    sorting every row: `mid` must land between `alpha` and `zeta`, for the list and its order."""
    from tests.differential.test_engine_vs_oracle import _row, _spec
    other = _spec([{"name": "Mark", "key": "mark", "condition": 'event.type == "join"',
                    "actions": [{"type": "TAG", "tag": "zeta"}, {"type": "TAG", "tag": "alpha"}]}])
    other["program"] = {"key": "club", "name": "Club"}
    shop = _spec([{"name": "Mid", "key": "mid", "condition": 'event.type == "visit"', "actions": [{"type": "TAG", "tag": "mid"}]},
                  {"name": "Ordered", "key": "ordered",
                   "condition": 'participant.tags == ["alpha", "mid", "zeta"] && participant.tags[1] == "mid"',
                   "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}])
    _decided_by_running_path(S.Scenario(
        [shop, other],
        [[S.Row("club", "j1", "u1", "2025-03-01T09:00:00Z", '{"type": "join"}'),
          S.Row("club", "j2", "u2", "2025-03-01T09:00:00Z", '{"type": "join"}')],
         [_row("v1", "u1", "2025-03-02T09:00:00Z", '{"type": "buy"}'),
          _row("v2", "u1", "2025-03-02T10:00:00Z", '{"type": "visit"}'),
          _row("v3", "u1", "2025-03-02T11:00:00Z", '{"type": "buy"}'),
          _row("v4", "u3", "2025-03-02T11:00:00Z", '{"type": "visit"}')]]))
