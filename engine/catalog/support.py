"""What the engine builds today. A declared field whose behaviour is not built yet is rejected
here with "not supported yet: <field>", never silently ignored. Later work deletes lines here."""

from __future__ import annotations

from collections.abc import Iterator

from .models import ProgramFile

#: Action fields with behaviour, per action type (type itself is always fine).
SUPPORTED_ACTION_FIELDS = {
    "CREDIT": {"asset", "amount", "description", "bucket", "target", "expires_at", "matures_at", "reference_id"},
    "DEBIT": {"asset", "amount", "description", "allow_negative", "target"},
    "HOLD": {"asset", "amount", "description", "target", "reference_id"},
    "RELEASE": {"asset", "amount", "description", "target", "reference_id"},
    "FORFEIT": {"asset", "amount", "description", "bucket", "target"},
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
SUPPORTED_ACTIONS = set(SUPPORTED_ACTION_FIELDS)
#: Actions whose buckets the contract fixes (semantics.md 7): a `bucket` on them is not a feature
#: to come but a choice they do not have; the bucket each accepts (stating what it does), and why.
FIXED_BUCKETS = {
    "DEBIT": ("AVAILABLE", "DEBIT takes value from AVAILABLE only (semantics.md 7); to take HELD value, RELEASE it "
                           "first or FORFEIT it with bucket: HELD"),
    "HOLD": (None, "HOLD always moves AVAILABLE to HELD (semantics.md 7); it takes no bucket: remove the field"),
    "RELEASE": (None, "RELEASE always moves HELD to AVAILABLE (semantics.md 7); it takes no bucket: remove the field"),
}
VALUE_ACTIONS = {"CREDIT", "DEBIT", "HOLD", "RELEASE", "FORFEIT", "VOID_HOLD"}


def misplaced(pf: ProgramFile) -> Iterator[tuple[str, str]]:
    """Yield (location of the field, why it cannot be so) for a `bucket` an action does not take."""
    for r_i, rule in enumerate(pf.rules):
        for a_i, action in enumerate(rule.actions):
            fixed = FIXED_BUCKETS.get(action.type)
            if fixed is not None and action.bucket is not None and action.bucket != fixed[0]:
                yield f"rules[{r_i}] ({rule.name}).actions[{a_i}].bucket", fixed[1]


def unsupported(pf: ProgramFile) -> Iterator[tuple[str, str]]:
    """Yield (location, field) for every field set to something not built yet."""
    if pf.program.redemption_target_type == "LEDGER_ENTITY":
        yield "program", "redemption_target_type: LEDGER_ENTITY (use SYSTEM_REDEMPTION or SYSTEM_BREAKAGE)"
    for r_i, rule in enumerate(pf.rules):
        where = f"rules[{r_i}] ({rule.name})"
        for a_i, action in enumerate(rule.actions):
            at = f"{where}.actions[{a_i}]"
            if action.type not in SUPPORTED_ACTIONS:
                yield at, f"type: {action.type}"
                continue
            allowed = SUPPORTED_ACTION_FIELDS[action.type] | ({"bucket"} if action.type in FIXED_BUCKETS else set())
            for field in sorted(action.model_fields_set - allowed - {"type"}):
                if getattr(action, field) not in (None, False):
                    yield at, field
            if action.target is not None and action.target.type == "GROUP" and action.type == "SET_TIER":
                yield at, "target.type: GROUP for SET_TIER (tiers are held by participants)"
            if action.target is not None and action.target.type == "PROGRAM" and action.type == "SET_TIER":
                yield at, "target.type: PROGRAM for SET_TIER (tiers are held by participants)"
