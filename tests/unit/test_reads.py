"""engine.reads: which parts of `participant` an expression reads. Missing a read would make the
running path build a struct without the part (wrong values) or skip an event whose input changed."""

import pytest

from engine.cel import compile_cel
from engine.reads import keys, merge, reads


@pytest.mark.parametrize("text, want", [
    ('event.type == "visit"', {}),
    ('"vip" in participant.tags', {"tags": None}),
    ("participant.counters.visits >= 2.0", {"counters": frozenset({"visits"})}),
    ('participant["counters"]["visits"] > 1.0 && has(participant.counters.buys)', {"counters": frozenset({"visits", "buys"})}),
    # a map used as a whole: every key
    ('"visits" in participant.counters && participant.counters.visits > 1.0', {"counters": None}),
    ('get(participant.counters, "visits", 0.0) > 1.0', {"counters": None}),
    ("size(participant.attributes) > 0", {"attributes": None}),
    ("participant.counters.exists(k, k == 'x')", {"counters": None}),
    ('participant.tiers.status.level == "gold" && participant.balances.PTS.available > 0.0',
     {"tiers": frozenset({"status"}), "balances": frozenset({"PTS"})}),
    ('participant.external_id + "x" == "y"', {"external_id": None}),
    # the whole participant, or a non-literal key: everything below
    ("participant == participant", None),
    ('participant[event.field] == 1', None),
    # a macro variable named like the variable is not the variable
    ("[1, 2].exists(participant, participant > 1) && participant.counters.a > 0.0", {"counters": frozenset({"a"})}),
])
def test_reads(text, want):
    assert reads(compile_cel(text)) == want


def test_merge_and_keys():
    assert merge({"counters": frozenset({"a"})}, {"counters": frozenset({"b"}), "tags": None}) == \
        {"counters": frozenset({"a", "b"}), "tags": None}
    assert merge({"counters": frozenset({"a"})}, {"counters": None}) == {"counters": None}
    assert merge({"tags": None}, None) is None
    assert keys({"counters": frozenset({"b", "z"})}, "counters", ["a", "b"]) == ["b"]
    assert keys({"counters": None}, "counters", ["a", "b"]) == ["a", "b"]
    assert keys(None, "counters", ["a", "b"]) == ["a", "b"]
    assert keys({"tags": None}, "counters", ["a", "b"]) == []
