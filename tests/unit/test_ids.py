"""engine.ids: the fast text form of a name id is the standard UUIDv5, for any name."""

from __future__ import annotations

import uuid

from hypothesis import given, strategies as st

from engine import ids


@given(kind=st.text(max_size=8), parts=st.lists(st.text(max_size=40), max_size=6))
def test_name_id_text_is_the_uuid5_text(kind, parts):
    want = uuid.uuid5(ids.NAMESPACE, ":".join((kind, *parts)))
    got = ids.name_id_text(kind, *parts)
    assert got == str(want) == str(ids.name_id(kind, *parts))
    assert uuid.UUID(got).version == 5


@given(external_id=st.text(max_size=300))
def test_participant_id_text_is_the_participant_uuid(external_id):
    assert ids.participant_id_text(external_id) == str(ids.participant_id(external_id)) == str(
        uuid.uuid5(ids.NAMESPACE, "participant:" + external_id))
