"""Groups (semantics.md 11, 2.3): shared wallets with members, and the operations that change
their membership (Scrip's POST/DELETE /v1/groups/{id}/members).

A group is declared in a program file with its founding members; after that, membership changes
only through the operations here, applied by the kernel in stream order like any operation:

- `add_group_member` (params: `group`, `role` ADMIN | MEMBER, default MEMBER): the operation's
  participant joins. Fails `already_member` for an active member; a former (LEFT) member rejoins.
- `remove_group_member` (params: `group`): the participant leaves (status LEFT, a soft delete
  that leaves the group's balance alone). Fails `not_a_member`, or `last_admin` for the last ADMIN.
- `set_group_member_role` (params: `group`, `role`): fails `not_a_member`, or `last_admin` when it
  would demote the last ADMIN.

A `transfer` recipient may be a group (`{group_id, amount}`, Scrip's recipient field), and
`group_adjust` / `group_hold` / `group_release` / `group_forfeit` (engine/operations.py) move a
group's balance like their participant versions.
Every group keeps at least one active ADMIN (Scrip: "The last ADMIN cannot be demoted or
removed"); an ARCHIVED group takes no membership change (`group_inactive`).
"""

from __future__ import annotations

import json

from engine.catalog import Catalog
from engine.errors import CatalogError
from engine.ledger.sqlfiles import statement
from engine.moves import ActionFailed
from engine.state import Membership

GROUP_NOT_FOUND = "group_not_found"
GROUP_INACTIVE = "group_inactive"
ROLES = ("ADMIN", "MEMBER")


def founders(catalog: Catalog) -> dict[str, dict[str, Membership]]:
    """Each declared group's founding members, as memberships (for a group the ledger has none of)."""
    return {g.sid: {m.participant_id: Membership(m.external_id, m.role, "ACTIVE", None) for m in g.members}
            for g in catalog.groups.values()}


def check_founders(con, catalog: Catalog) -> None:
    """A group's `members` in its program file are its founding members, written once; after that
    membership changes only by operations. A file whose founding members differ from the ones
    the ledger was given is refused (nothing written) rather than silently not applied."""
    stored = dict(con.execute(statement("lookups.sql", "stored_group_definitions")).fetchall())
    for key, group in catalog.groups.items():
        if key in stored and json.loads(stored[key]).get("members") != group.definition.get("members"):
            raise CatalogError(
                f"{group.source}: group {key}: `members` differs from the founding members this ledger was given; "
                "they are written once, when the group first appears: change membership with the "
                "add_group_member / remove_group_member / set_group_member_role operations, and keep "
                "`members` as it was")


def active_group(catalog: Catalog, ref, operation: str, tx):
    """The ACTIVE group `ref` (a key or an id) names, or the operation fails. What is due for
    the group (its lots' maturities and expiries) happens first, even if it is ARCHIVED: an
    operation that names a group touches it (docs/decisions.md "Groups")."""
    group = catalog.resolve_group(ref) if isinstance(ref, str) else None
    if group is None:
        raise ActionFailed(GROUP_NOT_FOUND, f"{operation}: no group {ref!r} (declare it under `groups`)")
    tx.touch(group.sid, "GROUP")
    if group.status != "ACTIVE":
        raise ActionFailed(GROUP_INACTIVE, f"{operation}: group {group.key} is {group.status}")
    return group


def _group(o):
    """The group an operation names (params.group, or Scrip's group_id: a key or an id)."""
    group = active_group(o.catalog, o.group_ref(), o.op.operation, o.tx)
    return group, o.tx.group_members(group.sid)


def _role(o, default: str | None) -> str:
    role = o.field("role", default)
    if role not in ROLES:
        raise ActionFailed("invalid_operation", f"{o.op.operation}: params.role must be ADMIN or MEMBER, got {role!r}")
    return role


def _active(o, members: dict[str, Membership], group) -> Membership:
    m = members.get(o.op.subject)
    if m is None or m.status != "ACTIVE":
        raise ActionFailed("not_a_member", f"{o.op.operation}: the participant is not a member of group {group.key}")
    return m


def _keeps_an_admin(o, members: dict[str, Membership], group) -> None:
    """Fail if the operation's participant is the group's only active ADMIN."""
    admins = [pid for pid, m in members.items() if m.status == "ACTIVE" and m.role == "ADMIN"]
    if admins == [o.op.subject]:
        raise ActionFailed("last_admin", f"{o.op.operation}: the participant is the last ADMIN of group {group.key}; "
                                         "make another member ADMIN first")


def add_member(o) -> None:
    if "members" in o.params:
        # Scrip's POST /v1/groups/{id}/members also takes a batch; an operation row names one
        # participant, so one row per member (each its own idempotent operation): said, not ignored
        raise ActionFailed("operation_not_supported", "add_group_member: params.members (Scrip's batch form) is not "
                           "supported; send one add_group_member row per member, the row naming the participant "
                           "and params.role its role")
    group, members = _group(o)
    role = _role(o, "MEMBER")
    m = members.get(o.op.subject)
    if m is not None and m.status == "ACTIVE":
        raise ActionFailed("already_member", f"add_group_member: the participant is already a member of group {group.key}")
    person = o.tx.store.people[o.op.subject]
    members[o.op.subject] = Membership(person.external_id, role, "ACTIVE", o.op.now)


def remove_member(o) -> None:
    group, members = _group(o)
    m = _active(o, members, group)
    _keeps_an_admin(o, members, group)
    m.status, m.left_at = "LEFT", o.op.now


def set_role(o) -> None:
    group, members = _group(o)
    role = _role(o, None)
    m = _active(o, members, group)
    if role != "ADMIN":
        _keeps_an_admin(o, members, group)
    m.role = role


HANDLERS = {"add_group_member": add_member, "remove_group_member": remove_member, "set_group_member_role": set_role}
