"""Which fields each action takes, and what the engine builds today. A field an action can never
take is rejected with what that action does take (`misplaced`); a declared feature whose
behaviour is not built yet with "not supported yet: <field>" (`unsupported`). Neither is ever
silently ignored."""

from __future__ import annotations

from collections.abc import Iterator

from .models import ProgramFile

#: The fields each action type takes (type itself is always fine): every field semantics.md 7 and
#: Scrip's rule actions (scrip-reference.md 9) document for it is built.
SUPPORTED_ACTION_FIELDS = {
    "CREDIT": {"asset", "amount", "description", "bucket", "target", "expires_at", "matures_at", "reference_id"},
    "DEBIT": {"asset", "amount", "description", "allow_negative", "target"},
    "HOLD": {"asset", "amount", "description", "target", "reference_id"},
    "RELEASE": {"asset", "amount", "description", "target", "reference_id"},
    "FORFEIT": {"asset", "amount", "description", "bucket", "target", "reference_id"},
    "VOID_HOLD": {"asset", "description", "target", "reference_id"},
    "TAG": {"tag", "target", "description"},
    "UNTAG": {"tag", "target", "description"},
    "COUNTER": {"key", "value", "reset_after", "target", "description"},
    "SET_ATTRIBUTE": {"key", "value", "target", "description"},
    "SET_TIER": {"tier", "level", "target", "description"},
    # delay and target on BROADCAST are refused by load.py with their own message
    "SCHEDULE_EVENT": {"event_name", "delay", "payload", "target", "description"},
    "BROADCAST": {"event_name", "payload", "description", "delay", "target"},
}
#: Actions whose buckets the contract fixes (semantics.md 7): a `bucket` on them is not a feature
#: to come but a choice they do not have; the bucket each accepts (stating what it does), and why.
FIXED_BUCKETS = {
    "DEBIT": ("AVAILABLE", "DEBIT takes value from AVAILABLE only (semantics.md 7); to take HELD value, RELEASE it "
                           "first or FORFEIT it with bucket: HELD"),
    "HOLD": (None, "HOLD always moves AVAILABLE to HELD (semantics.md 7); it takes no bucket: remove the field"),
    "RELEASE": (None, "RELEASE always moves HELD to AVAILABLE (semantics.md 7); it takes no bucket: remove the field"),
}
VALUE_ACTIONS = {"CREDIT", "DEBIT", "HOLD", "RELEASE", "FORFEIT", "VOID_HOLD"}
#: Value actions whose `amount` is optional: without one they take all their bucket holds (of
#: their reference), as the hold, release and forfeit operations do (scrip-reference.md 12).
WHOLE_BUCKET_ACTIONS = frozenset({"HOLD", "RELEASE", "FORFEIT"})
#: Why a field (or a field on one action type) belongs to other actions only, where the list of
#: fields says too little.
OTHER_ACTIONS_FIELD = {
    "allow_negative": "allow_negative applies to DEBIT only (semantics.md 7: only a DEBIT may overdraw)",
    "expires_at": "expires_at applies to CREDIT only (a lot's expiry is set when it is credited)",
    "matures_at": "matures_at applies to CREDIT only (a lot's maturity is set when it is credited)",
    # Scrip's tier PUT takes an expires_at: say where perkflow has it rather than speak of lots
    ("SET_TIER", "expires_at"): "SET_TIER sets a level without an expiry (its fields are description, level, target, "
                                "tier); a level that expires is set by the set_tier operation's params.expires_at",
}


def misplaced(pf: ProgramFile) -> Iterator[tuple[str, str]]:
    """Yield (location of the field, why it cannot be so) for a field an action can never take:
    a `bucket` the contract fixes, or a field of other actions (`amount` on a TAG)."""
    for r_i, rule in enumerate(pf.rules):
        for a_i, action in enumerate(rule.actions):
            at = f"rules[{r_i}] ({rule.name}).actions[{a_i}]"
            fixed = FIXED_BUCKETS.get(action.type)
            if fixed is not None and action.bucket is not None and action.bucket != fixed[0]:
                yield f"{at}.bucket", fixed[1]
            takes = SUPPORTED_ACTION_FIELDS[action.type]
            for field in sorted(action.model_fields_set - takes - {"type"} - ({"bucket"} if fixed else set())):
                if getattr(action, field) not in (None, False):
                    yield f"{at}.{field}", OTHER_ACTIONS_FIELD.get((action.type, field)) or OTHER_ACTIONS_FIELD.get(field) or (
                        f"{action.type} takes no {field}; its fields are {', '.join(sorted(takes))}")


def unsupported(pf: ProgramFile) -> Iterator[tuple[str, str]]:
    """Yield (location, field) for every field set to something not built yet."""
    for r_i, rule in enumerate(pf.rules):
        where = f"rules[{r_i}] ({rule.name})"
        for a_i, action in enumerate(rule.actions):
            at = f"{where}.actions[{a_i}]"
            if action.target is not None and action.target.type == "GROUP" and action.type == "SET_TIER":
                yield at, "target.type: GROUP for SET_TIER (tiers are held by participants)"
            if action.target is not None and action.target.type == "PROGRAM" and action.type == "SET_TIER":
                yield at, "target.type: PROGRAM for SET_TIER (tiers are held by participants)"
