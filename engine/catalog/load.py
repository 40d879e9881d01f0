"""Reading and validating program files."""

from __future__ import annotations

import math
import re
import uuid
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import ValidationError

from engine import amounts, ids
from engine.cel import CelError, CelLimitError, CelProgram, compile_cel
from engine.cel.library import ROW as FUNCTIONS
from engine.cel.static import constant_failures, never_bool
from engine.cel.values import TYPE_NAMES
from engine.cron import Cron, CronError, parse as parse_cron
from engine.io.events import MAX_KEY_LENGTH, json_doubles
from engine.io.files import not_found
from engine.durations import parse_duration, parse_when
from engine.errors import CatalogError

from .compiled import (Catalog, CompiledAction, CompiledAutomation, CompiledBudget, CompiledGroup, CompiledLevel,
                       CompiledProgram, CompiledReward, CompiledRule, CompiledTarget, CompiledTier, GroupMember,
                       rule_version)
from .documents import read_json, read_yaml
from .models import (EVENT_NAME_MAX, INT32_MAX, KEY, Action, Asset, Automation, Budget, Criterion, Group, ProgramFile,
                     Rule, Tier, beyond_scale, fields_at, scrip_name_at, slug)
from .support import VALUE_ACTIONS, WHOLE_BUCKET_ACTIONS, misplaced, unsupported

PROGRAM_SUFFIXES = {".yaml", ".yml", ".json"}
_PLAIN_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$", re.ASCII)  # "١٢" is text, not 12
KNOWN_VARIABLES = frozenset({"event", "now", "participant", "program"})
#: Text that begins with a path into a CEL variable (`event.x`, `participant.tags[0]`): meant as
#: an expression, so one that does not parse is an error (semantics.md 2.1), never literal text.
_MEANT_AS_CEL = re.compile(r"\s*(event|participant|program)\s*[.\[]")


def program_files(path: str | Path) -> list[Path]:
    """One file, or every program file under a directory, in sorted (deterministic) order."""
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        # any case: `shop.YAML` from a Windows tool is a program file, not something to skip unsaid
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in PROGRAM_SUFFIXES and f.is_file())
        if files:
            return files
        raise CatalogError(f"{p}: no program files (*.yaml, *.yml, *.json) found in this directory")
    raise CatalogError(not_found(p, "pass --programs a program file or a folder of them"))


#: The catalog last loaded, by the names and bytes of its files: a process that runs many
#: batches with the same programs (a backfill of daily batches) compiles them once.
_last: tuple[tuple, Catalog] | None = None


def load_catalog(path: str | Path) -> Catalog:
    global _last
    files = program_files(path)
    key = tuple((str(f), f.read_bytes()) for f in files)
    if _last is None or _last[0] != key:
        _last = (key, _compile_catalog(files))
    return _last[1]


def _compile_catalog(files: list[Path]) -> Catalog:
    return compile_documents([(str(file), _read(file)) for file in files])


def compile_documents(documents: list[tuple[str, object]]) -> Catalog:
    """A catalog from program documents (name, parsed YAML/JSON): the files of a run, or the
    documents a run stored, which `perkflow maintain` compiles again (engine/automations.py)."""
    programs: dict[str, CompiledProgram] = {}
    assets: dict[str, tuple[Asset, str]] = {}
    groups: dict[str, tuple[Group, str]] = {}
    parsed = [(file, _validate(file, data)) for file, data in documents]
    for file, pf in parsed:  # groups first: any program's rules may target any group of the project
        for g_i, group in enumerate(pf.groups):
            seen = groups.get(group.key)
            if seen and seen[0] != group:
                raise CatalogError(
                    f"{file}: groups[{g_i}] ({group.key}) conflicts with its definition in {seen[1]}; "
                    "a group named by several program files must be defined identically in each")
            groups.setdefault(group.key, (group, file))
    compiled_groups = {k: _compile_group(f, g) for k, (g, f) in groups.items()}
    for file, pf in parsed:
        for asset in pf.assets:
            seen = assets.get(asset.symbol)
            if seen and seen[0] != asset:
                raise CatalogError(
                    f"{file}: asset {asset.symbol} conflicts with its definition in {seen[1]}; "
                    "an asset shared by several programs must be defined identically in each"
                )
            assets.setdefault(asset.symbol, (asset, file))
        if pf.program.key in programs:
            raise CatalogError(
                f"{file}: program key {pf.program.key!r} is also defined in {programs[pf.program.key].source}"
            )
        # A program's rules use the assets its own file defines (Scrip links assets to programs;
        # semantics.md 2.1: a shared asset is defined identically in each file that uses it). They
        # could use any asset of the files read before theirs, so whether a file loaded depended
        # on the files' order, and `participant.balances.X` of an asset defined elsewhere loaded
        # yet never had an entry (the map holds the program's assets): a SKIPPED_ERROR each event.
        programs[pf.program.key] = _compile_program(file, pf, {a.symbol: a for a in pf.assets}, compiled_groups)
    _check_rollover_counters([(file, pf, programs[pf.program.key].tiers) for file, pf in parsed])
    asset_map = {s: a for s, (a, _) in assets.items()}
    return Catalog(programs=programs, assets=asset_map, asset_ids={s: ids.asset_id(s) for s in asset_map},
                   groups=compiled_groups)


def _compile_group(file: Path, group: Group) -> CompiledGroup:
    """A declared group: its founding members, each participant once."""
    where = f"{file}: group {group.key}"
    members: dict[str, GroupMember] = {}
    for m in group.members:
        # one spelling per id (a UUID in capitals is the same participant), so a member listed
        # twice is found here rather than by the database's key when the group is written
        pid = str(uuid.UUID(m.participant_id)) if m.participant_id else ids.participant_id_text(m.external_id)
        if pid in members:
            raise CatalogError(f"{where}: members: participant {m.external_id or m.participant_id!r} is listed twice")
        members[pid] = GroupMember(pid, m.external_id, m.role)
    return CompiledGroup(id=ids.group_id(group.key), key=group.key, name=group.name, status=group.status,
                         members=tuple(members.values()), definition=group.model_dump(mode="json", exclude_none=True),
                         source=str(file))


def _read(file: Path) -> object:
    try:
        text = file.read_text(encoding="utf-8-sig")  # a byte order mark (Windows editors) is not content
        return read_json(text) if file.suffix.lower() == ".json" else read_yaml(text)
    except (yaml.YAMLError, ValueError, UnicodeDecodeError) as e:  # ValueError: JSON's, a key twice
        raise CatalogError(f"{file}: not valid {'JSON' if file.suffix.lower() == '.json' else 'YAML'}: {e}") from None


def _validate(file: str, data: object) -> ProgramFile:
    if not isinstance(data, dict):
        raise CatalogError(f"{file}: a program file must be a mapping with `program`, `assets` and `rules`")
    data = _own_program_ids(file, data)
    _no_asset_links(file, data)
    data = _asset_ids_as_symbols(data)
    try:
        pf = ProgramFile.model_validate(data)
    except ValidationError as e:
        raise CatalogError(f"{file}: invalid program file:\n{_describe(e, data)}") from None
    _check_unique(file, pf)
    problems = [f"  {where}: {why}" for where, why in misplaced(pf)]
    problems += [f"  {where}: not supported yet: {field}" for where, field in unsupported(pf)]
    if problems:
        raise CatalogError(f"{file}:\n" + "\n".join(problems))
    return pf


def _own_program_ids(file: str, data: dict) -> dict:
    """Scrip's create-an-asset and create-a-rule bodies carry `program_id` (scrip-reference.md 3, 7):
    pasted into a program file it may restate the file's own program (key or id, any case) and is
    dropped, so rule versions and ids are as without it; naming another program is an error."""
    program = data.get("program")
    key = program.get("key") or slug(program.get("name") or "") if isinstance(program, dict) else None
    if not isinstance(key, str) or not key:
        return data  # the program's own validation says what is wrong with it
    own = {key, str(ids.program_id(key))}
    problems, out = [], dict(data)
    for section in ("assets", "rules"):
        items = data.get(section)
        if not isinstance(items, list):
            continue
        out[section] = []
        for i, item in enumerate(items):
            if isinstance(item, dict) and "program_id" in item:
                ref = item["program_id"]
                if not (isinstance(ref, str) and (ref in own or ref.lower() in own)):
                    name = item.get(_LABELS[section])
                    problems.append(f"  {section}[{i}]{f' ({name})' if name else ''}.program_id: {ref!r} is not this "
                                    f"file's program {key!r}: an entry belongs to the program of its file; leave "
                                    f"`program_id` out, or move the entry to that program's file")
                item = {k: v for k, v in item.items() if k != "program_id"}
            out[section].append(item)
    if problems:
        raise CatalogError(f"{file}: invalid program file:\n" + "\n".join(problems))
    return out


def _no_asset_links(file: str, data: dict) -> None:
    """Scrip links an existing asset to another program with `{"asset_id": ...}` (POST
    /v1/programs/{id}/assets). A program file defines each asset it uses instead (semantics.md
    2.1: the same definition in two files is one shared asset), so a link alone is refused with
    that said, rather than as an unknown field and missing ones."""
    assets = data.get("assets")
    for i, item in enumerate(assets if isinstance(assets, list) else []):
        if isinstance(item, dict) and "asset_id" in item and "symbol" not in item:
            raise CatalogError(f"{file}: assets[{i}]: {{asset_id: {item['asset_id']!r}}} links an asset as Scrip's "
                               "POST /v1/programs/{id}/assets does; that is not supported: define the asset here "
                               "(symbol, name, scale, ...) exactly as the program file that defines it does, and "
                               "the two programs share it (semantics.md 2.1)")


def _asset_ids_as_symbols(data: dict) -> dict:
    """Scrip names an asset by its id (`"asset_id": "YOUR_ASSET_ID"`, the quickstart's rule): in a
    rule action, a budget or a reward, `asset_id` (or `asset`) may give the id of an asset of this
    file (the `assets` table's UUIDv5 of its symbol, any case), as operations already take it. It
    is read as that symbol, so ids and rule versions are as when the symbol is written."""
    assets = data.get("assets") if isinstance(data.get("assets"), list) else []
    by_id = {str(ids.asset_id(a["symbol"])): a["symbol"] for a in assets
             if isinstance(a, dict) and isinstance(a.get("symbol"), str)}

    def named(item):
        if not isinstance(item, dict):
            return item
        return {k: by_id.get(v.strip().lower(), v) if k in ("asset", "asset_id") and isinstance(v, str) else v
                for k, v in item.items()}

    if not by_id:
        return data
    out = dict(data)
    if isinstance(data.get("rewards"), list):
        out["rewards"] = [named(w) for w in data["rewards"]]
    if isinstance(data.get("rules"), list):
        out["rules"] = [
            {**r, **{f: [named(x) for x in r[f]] for f in ("actions", "budgets") if isinstance(r.get(f), list)}}
            if isinstance(r, dict) else r for r in data["rules"]]
    return out


#: What names an item of a top-level list in error messages.
_LABELS = {"rules": "name", "tiers": "key", "groups": "key", "automations": "name", "assets": "symbol",
           "rewards": "name"}


#: The formats of models.py's patterns in words, for load errors (a regular expression says it to few).
_FORMS = {
    KEY: "a key: lowercase letters, digits, '_' and '-', starting with a letter or digit, up to 128 characters",
    r"^[a-z0-9][a-z0-9_\-]{0,99}$": "a key: lowercase letters, digits, '_' and '-', starting with a letter or "
                                    "digit, up to 100 characters",
    r"^[a-z][a-z0-9_]{0,99}$": "a key: a lowercase letter, then lowercase letters, digits and '_', up to 100 characters",
    r"^#([0-9A-Fa-f]{3,4}|[0-9A-Fa-f]{6}|[0-9A-Fa-f]{8})$": "a hex color: #RGB, #RGBA, #RRGGBB or #RRGGBBAA",
}


def _describe(e: ValidationError, data: dict) -> str:
    """Pydantic errors as `rules[2] (Rule name).actions[0].amount: message` lines."""
    lines = []
    for err in e.errors():
        loc = err["loc"]
        parts: list[str] = []
        for i, part in enumerate(loc):
            if isinstance(part, int):
                parts[-1] += f"[{part}]"
                if i == 1 and loc[0] in _LABELS:  # rules[2] (its name), tiers[0] (its key)
                    items = data.get(loc[0]) or []
                    item = items[part] if isinstance(items, list) and part < len(items) else None
                    name = item.get(_LABELS[loc[0]]) if isinstance(item, dict) else None
                    if name:
                        parts[-1] += f" ({name})"
            else:
                parts.append(str(part))
        if parts and isinstance(loc[-1], str):
            parts[-1] = _as_written(data, loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden" and loc[-1] in _NOT_SCRIPS_API:
            msg = _NOT_SCRIPS_API[loc[-1]]
        elif err["type"] == "extra_forbidden":
            msg = "unknown field (check its spelling against semantics.md 2.1)"
            if known := fields_at(loc):
                msg += f"; the fields here are {', '.join(known)}"
        elif err["type"] == "string_pattern_mismatch":
            pattern = err.get("ctx", {}).get("pattern", "")
            msg = f"{err['input']!r} is not {_FORMS.get(pattern, 'of the form ' + pattern)}"
        lines.append(f"  {'.'.join(parts)}: {msg}")
    return "\n".join(lines)


#: Fields seen in Scrip's pages that its API does not have, and what perkflow has instead.
_NOT_SCRIPS_API = {
    "hold_until": "not supported: `hold_until` appears only in Scrip's marketing example, not in its API's action "
                  "schema (scrip-reference.md 0, 9); to keep credited value unspendable until an instant, credit a "
                  "LOT asset with `matures_at` (DEFERRED until then), or into `bucket: HELD` with a `reference_id` "
                  "and settle or release it later",
}


def _as_written(data: object, loc: tuple) -> str:
    """The last field of `loc` as the file spells it: `display_name` where a tier's model says
    `name` (models.py `_alias`: Scrip's names accepted for ours)."""
    holder = data
    for part in loc[:-1]:
        try:
            holder = holder[part]
        except (KeyError, IndexError, TypeError):
            return str(loc[-1])
    alias = scrip_name_at(loc)
    written = alias is not None and isinstance(holder, dict) and alias in holder and loc[-1] not in holder
    return alias if written else str(loc[-1])


#: What is unique in a program file (Scrip: reward and automation names "unique per program";
#: keys and symbols, from which ids are derived, name one thing each): section -> [(field, its value)].
_UNIQUE = {
    "assets": [("symbol", lambda a: a.symbol)],
    "groups": [("key", lambda g: g.key)],
    "tiers": [("key", lambda t: t.key)],
    "rules": [("key", lambda r: r.key or _slug(r.name))],
    "rewards": [("name", lambda w: w.name), ("key", lambda w: w.key or _slug(w.name))],
    "automations": [("name", lambda a: a.name), ("key", lambda a: a.key or _slug(a.name))],
}


def _check_unique(file: str, pf: ProgramFile) -> None:
    """Two entries of a section with one name or key: a load error naming the file and both."""
    for section, fields in _UNIQUE.items():
        items = getattr(pf, section)
        label = lambda i: f"{section}[{i}] ({getattr(items[i], _LABELS[section])})"  # noqa: E731
        for field, value_of in fields:
            seen: dict[str, int] = {}
            for i, item in enumerate(items):
                value = value_of(item)
                if value in seen:
                    raise CatalogError(f"{file}: {label(i)}: {field} {value!r} is also the {field} of "
                                       f"{label(seen[value])}; the {field}s of a program's {section} must be "
                                       f"unique: give it a distinct `{field}`")
                seen[value] = i


def _compile_program(file: str, pf: ProgramFile, assets: dict[str, Asset],
                     groups: dict[str, CompiledGroup]) -> CompiledProgram:
    key = pf.program.key
    _check_redemption_entity(file, pf, groups)
    tiers: dict[str, CompiledTier] = {}
    for t_i, tier in enumerate(pf.tiers):
        tiers[tier.key] = compile_tier(f"{file}: tiers[{t_i}] ({tier.key})", key, tier)
    rules: list[CompiledRule] = []
    orders: dict[int, str] = {}
    highest = 0
    for r_i, rule in enumerate(pf.rules):
        where = f"{file}: rules[{r_i}] ({rule.name})"
        order = rule.order if rule.order is not None else highest + 10
        if order > INT32_MAX:  # the default after a rule at the top of the range
            raise CatalogError(f"{where}: order: the default order, {order} (the highest before + 10), is past "
                               f"{INT32_MAX}; give this rule an `order`")
        highest = max(highest, order)
        rule_key = rule.key or _slug(rule.name)
        if rule.status == "ACTIVE":
            if order in orders:
                raise CatalogError(
                    f"{where}: order {order} is also used by active rule {orders[order]!r}; "
                    "no two active rules of a program may share an `order`"
                )
            orders[order] = rule.name
        if rule.active_from and rule.active_to and rule.active_from >= rule.active_to:
            raise CatalogError(f"{where}: active_from must be before active_to")
        rules.append(_compile_rule(where, key, rule_key, order, rule, assets, tiers, groups))
    rules.sort(key=lambda r: r.order)
    rewards = {}
    for w_i, reward in enumerate(pf.rewards):
        where = f"{file}: rewards[{w_i}] ({reward.name})"
        reward_key = reward.key or _slug(reward.name)
        if reward.asset not in {a.symbol for a in pf.assets}:
            raise CatalogError(f"{where}: asset {reward.asset!r} is not an asset of this program")
        if reward.redemption_type == "AMOUNT_BASED" and (reward.max_total or reward.max_per_participant):
            raise CatalogError(f"{where}: max_total and max_per_participant apply to UNIT_BASED rewards only")
        rewards[reward_key] = CompiledReward(ids.name_id("reward", key, reward_key), reward_key, reward,
                                             ids.asset_id(reward.asset))
    automations: dict[str, CompiledAutomation] = {}
    for a_i, automation in enumerate(pf.automations):
        compiled = _compile_automation(f"{file}: automations[{a_i}] ({automation.name})", key, automation, assets)
        automations[compiled.key] = compiled
    return CompiledProgram(id=ids.program_id(key), key=key, model=pf.program, source=str(file), rules=tuple(rules),
                           assets=tuple(a.symbol for a in pf.assets), rewards=rewards, tiers=tiers,
                           lot_assets=tuple(a.symbol for a in pf.assets if a.inventory_mode == "LOT"),
                           automations=automations, document=pf.model_dump(mode="json", exclude_unset=True))


def _compile_automation(where: str, program_key: str, a: Automation, assets: dict[str, Asset]) -> CompiledAutomation:
    """Scrip's valid combinations (scrip-reference 18): cron and one_time with either scope,
    immediate (and participant_state) with scope participants only; each trigger's own fields."""
    t = a.trigger
    at = f"{where}.trigger"
    try:
        tz = ZoneInfo(t.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise CatalogError(f"{at}.timezone: {t.timezone!r} is not an IANA time zone (e.g. UTC, America/Chicago)") from None
    if t.type in ("immediate", "participant_state") and a.scope != "participants":
        raise CatalogError(f"{where}.scope: a {t.type} automation takes scope participants only (got {a.scope})")
    cron = None
    if t.type == "cron":
        if not t.cron_expression:
            raise CatalogError(f"{at}.cron_expression: required for a cron trigger")
        cron = _cron(f"{at}.cron_expression", t.cron_expression)
    elif t.cron_expression is not None:
        where_else = ("; a participant_state CRON takes it in schedule_config.cron_expression"
                      if t.type == "participant_state" else "")
        raise CatalogError(f"{at}.cron_expression: applies to cron triggers only (this one is {t.type}){where_else}")
    if t.type == "one_time" and t.trigger_at is None:
        raise CatalogError(f"{at}.trigger_at: required for a one_time trigger (an RFC 3339 instant)")
    if t.type != "one_time" and t.trigger_at is not None:
        raise CatalogError(f"{at}.trigger_at: applies to one_time triggers only (this one is {t.type})")
    if t.type != "participant_state" and (t.schedule_type is not None or t.schedule_config is not None):
        raise CatalogError(f"{at}: schedule_type and schedule_config apply to participant_state triggers only")
    date_attribute, date_time, every = None, (0, 0), None
    if t.type == "participant_state" and t.schedule_type is None:
        raise CatalogError(f"{at}.schedule_type: required for a participant_state trigger (ATTRIBUTE_DATE, "
                           "THRESHOLD, INTERVAL or CRON)")
    if t.type == "participant_state" and t.schedule_type == "ATTRIBUTE_DATE":
        config = _config(at, t.schedule_config, {"attribute", "time"}, "attribute (required) and time (HH:MM, default 00:00)")
        date_attribute = config.get("attribute")
        if not isinstance(date_attribute, str) or not date_attribute:
            raise CatalogError(f"{at}.schedule_config.attribute: required for ATTRIBUTE_DATE (the participant "
                               "attribute holding the date, e.g. birthday)")
        m = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)", str(config.get("time", "00:00")))
        if m is None:
            raise CatalogError(f"{at}.schedule_config.time: {config.get('time')!r} is not a wall-clock time HH:MM")
        date_time = (int(m.group(1)), int(m.group(2)))
    if t.type == "participant_state" and t.schedule_type == "INTERVAL":
        config = _config(at, t.schedule_config, {"interval"}, "interval (a Go duration, required)")
        try:
            every = parse_duration(str(config.get("interval", "")))
        except ValueError as e:
            raise CatalogError(f"{at}.schedule_config.interval: required for INTERVAL, a Go duration such as "
                               f"720h ({e})") from None
        if every < timedelta(minutes=1):
            raise CatalogError(f"{at}.schedule_config.interval: must be at least 1m")
    if t.type == "participant_state" and t.schedule_type == "CRON":
        config = _config(at, t.schedule_config, {"cron_expression"}, "cron_expression (required)")
        if not isinstance(config.get("cron_expression"), str) or not config["cron_expression"].strip():
            raise CatalogError(f"{at}.schedule_config.cron_expression: required for CRON (a 5-field cron "
                               "expression such as \"0 9 * * 1\", read in trigger.timezone)")
        cron = _cron(f"{at}.schedule_config.cron_expression", config["cron_expression"])
    threshold = None
    if t.type == "participant_state" and t.schedule_type == "THRESHOLD":
        threshold = _threshold(at, t.schedule_config)
    if a.participant_id is not None and not (t.type == "one_time" and a.scope == "program"):
        raise CatalogError(f"{where}.participant_id: only for a one_time automation with scope program")
    if a.participant_filter is not None and a.scope != "participants":
        raise CatalogError(f"{where}.participant_filter: applies to scope participants only")
    if "type" in a.payload:
        raise CatalogError(f"{where}.payload: `type` is set by event_name ({a.event_name!r}); leave it out of payload")
    conditions = {f: getattr(a, f) and _condition(f"{where}.{f}", getattr(a, f), assets)
                  for f in ("participant_filter", "guard_condition")}
    for f, prog in conditions.items():
        other = prog and prog.variables - {"participant", "program", "now"}
        if other:  # there is no event yet: the filter and the guard decide whether there will be one
            raise CatalogError(f"{where}.{f}: reads {', '.join(sorted(other))}; an automation's {f} sees only "
                               "participant, program and now")
    auto_key = a.key or _slug(a.name)
    definition = a.model_dump(mode="json", exclude_none=True) | {"key": auto_key}
    return CompiledAutomation(
        id=ids.name_id("automation", program_key, auto_key), key=auto_key, name=a.name, program_key=program_key,
        event_name=a.event_name, scope=a.scope, trigger=t.type, cron=cron, timezone=tz, trigger_at=t.trigger_at,
        payload=a.payload, participant_filter=conditions["participant_filter"] or None,
        guard_condition=conditions["guard_condition"] or None, participant_id=a.participant_id, status=a.status,
        definition=definition, date_attribute=date_attribute, date_time=date_time, every=every,
        threshold=threshold)


def _cron(at: str, text: str) -> Cron:
    """A cron expression read in trigger.timezone (no inline zone), or a CatalogError at `at`."""
    if re.match(r"^\s*(CRON_TZ|TZ)=", text):
        raise CatalogError(f"{at}: an inline CRON_TZ= or TZ= is not allowed; use trigger.timezone")
    try:
        return parse_cron(text)
    except CronError as e:
        raise CatalogError(f"{at}: {e}") from None


def _threshold(at: str, config: dict | None) -> Criterion:
    """A THRESHOLD schedule_config: the shape of a tier qualification criterion (counter,
    operator, threshold; all required), validated by the same model."""
    config = _config(at, config, {"counter", "operator", "threshold"},
                     "counter, operator (>=, >, ==, <=, <) and threshold, all required")
    try:
        return Criterion.model_validate(config)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise CatalogError(f"{at}.schedule_config.{field}: {err['msg']} (THRESHOLD takes counter, operator "
                           ">=, >, ==, <= or <, and threshold, a number; all required)") from None


def _config(at: str, config: dict | None, fields: set[str], takes: str) -> dict:
    """A participant_state schedule_config with only the fields its schedule_type takes."""
    config = dict(config or {})
    unknown = sorted(set(config) - fields)
    if unknown:
        raise CatalogError(f"{at}.schedule_config: unknown field(s) {', '.join(unknown)}; this schedule_type takes "
                           f"{takes}")
    return config


def compile_tier(where: str, program_key: str, tier: Tier) -> CompiledTier:
    """A validated tier type (also rebuilt from its stored definition by `perkflow maintain`)."""
    levels: dict[str, CompiledLevel] = {}
    ranks: dict[int, str] = {}
    for l_i, lv in enumerate(tier.levels):
        at = f"{where}.levels[{l_i}] ({lv.key})"
        if lv.key in levels:
            raise CatalogError(f"{at}: key {lv.key!r} is used by another level of this tier")
        if lv.rank in ranks:
            raise CatalogError(f"{at}: rank {lv.rank} is also the rank of level {ranks[lv.rank]!r}; "
                               "ranks must be unique within a tier (a higher rank is a higher level)")
        ranks[lv.rank] = lv.key
        levels[lv.key] = CompiledLevel(lv.key, lv.name or lv.key, lv.rank, lv.qualification, lv.benefits,
                                       json_doubles(lv.benefits))
    policy = tier.lifecycle and tier.lifecycle.downgrade_policy
    if policy and policy.min_level is not None and policy.min_level not in levels:
        raise CatalogError(f"{where}.lifecycle.downgrade_policy.min_level: {policy.min_level!r} is not a level of "
                           f"this tier (levels: {', '.join(levels)})")
    if tier.lifecycle is not None and policy is None:
        raise CatalogError(f"{where}.lifecycle.downgrade_policy: required with a lifecycle (mode DROP_TO_QUALIFYING, "
                           "DROP_ONE or HOLD)")
    period = tier.lifecycle and tier.lifecycle.qualification_period
    duration, rollover_keys = _lifecycle_checks(f"{where}.lifecycle", tier) if tier.lifecycle else (None, ())
    if period and period.type == "FIXED_YEAR":
        if period.start_month is None or period.start_day is None:
            raise CatalogError(f"{where}.lifecycle.qualification_period: FIXED_YEAR needs start_month and start_day")
        try:  # 2023: not a leap year, so 29 February (not in every year) is refused
            date(2023, period.start_month, period.start_day)
        except ValueError:
            raise CatalogError(f"{where}.lifecycle.qualification_period: {period.start_month}-{period.start_day} is "
                               "not a day of every year; pick a start_month and start_day that exist") from None
    elif period and (period.start_month is not None or period.start_day is not None):
        # else silently ignored: a CALENDAR_YEAR period ends on 1 January whatever they say
        ends = "ends on 1 January" if period.type == "CALENDAR_YEAR" else "has no period end"
        raise CatalogError(f"{where}.lifecycle.qualification_period: start_month and start_day apply to FIXED_YEAR "
                           f"only ({period.type} {ends}); use type FIXED_YEAR for a year that starts on another day")
    return CompiledTier(id=ids.name_id("tier", program_key, tier.key), program_id=ids.program_id(program_key),
                        key=tier.key, name=tier.name or tier.key,
                        levels=tuple(sorted(levels.values(), key=lambda lv: lv.rank)), lifecycle=tier.lifecycle,
                        definition=tier.model_dump(mode="json", exclude_none=True), duration=duration,
                        rollover_keys=rollover_keys)


def _check_rollover_counters(programs: list[tuple[str, ProgramFile, dict[str, CompiledTier]]]) -> None:
    """A counter rolls over with one tier only, and is not also reset by a COUNTER `reset_after`
    (two clocks on one counter would make its value depend on which ran first). Across the
    project: counters belong to the participant, whichever program's rule or tier counts them
    (it was checked per file, so two programs could put two clocks on one counter)."""
    rolled: dict[str, str] = {}
    for file, pf, tiers in programs:
        for tier in tiers.values():
            for k in tier.rollover_keys:
                if k in rolled:
                    raise CatalogError(f"{file}: tiers ({tier.key}).lifecycle.counters: counter {k!r} already rolls "
                                       f"over with {rolled[k]}; a counter can roll over with one tier only")
                rolled[k] = f"tier {tier.key!r} of program {pf.program.key!r}"
    for file, pf, _ in programs:
        for r_i, rule in enumerate(pf.rules):
            for a_i, action in enumerate(rule.actions):
                if action.type == "COUNTER" and action.reset_after is not None and action.key in rolled:
                    raise CatalogError(f"{file}: rules[{r_i}] ({rule.name}): actions[{a_i}].reset_after: counter "
                                       f"{action.key!r} rolls over with {rolled[action.key]} at its period ends; "
                                       "it cannot also reset on its own clock")


def _lifecycle_checks(where: str, tier: Tier) -> tuple[timedelta | None, tuple[str, ...]]:
    """The combinations of lifecycle parts that have a meaning (docs/decisions.md "Tiers"), and
    the parsed retention duration and rolled-over counter keys."""
    life = tier.lifecycle
    calendar = life.qualification_period is not None and life.qualification_period.type != "NONE"
    duration = None
    if life.retention.duration is not None:
        try:
            duration = parse_duration(life.retention.duration)
        except ValueError as err:
            raise CatalogError(f"{where}.retention.duration: {err}") from None
        if duration <= timedelta(0):
            raise CatalogError(f"{where}.retention.duration: must be positive, got {life.retention.duration!r}")
    if life.retention.mode == "ACTIVITY_REFRESH":
        if duration is None:
            raise CatalogError(f"{where}.retention.duration: required with mode ACTIVITY_REFRESH (how long a level "
                               "is kept without activity, e.g. 8760h)")
        if calendar:
            raise CatalogError(f"{where}.qualification_period: ACTIVITY_REFRESH keeps a level for `duration` after the "
                               "participant's last event; a calendar period does not apply (use type NONE or leave it out)")
    elif duration is not None and calendar:
        raise CatalogError(f"{where}.retention.duration: a PERIOD_BASED level is reviewed either at calendar period "
                           "ends or `duration` after it was reached, not both; drop one (qualification_period NONE "
                           "for a rolling period)")
    if life.counters is None:
        return duration, ()
    if not calendar:
        raise CatalogError(f"{where}.counters: rollover happens at qualification-period ends; it needs "
                           "qualification_period CALENDAR_YEAR or FIXED_YEAR")
    keys = life.counters.qualifying
    if keys is None:  # every counter the tier's criteria read, in first-use order
        keys = [c.counter for lv in tier.levels if lv.qualification for c in lv.qualification.criteria]
    if not keys or any(not k for k in keys):
        raise CatalogError(f"{where}.counters.qualifying: name the counters to roll over (none found in the "
                           "levels' criteria either)")
    return duration, tuple(dict.fromkeys(keys))


def _compile_rule(where: str, program_key: str, rule_key: str, order: int, rule: Rule, assets: dict[str, Asset],
                  tiers: dict[str, CompiledTier], groups: dict[str, CompiledGroup]) -> CompiledRule:
    condition = _condition(f"{where}: condition", rule.condition, assets)
    actions = tuple(_compile_action(f"{where}: actions[{a_i}]", a_i, action, assets, tiers, groups)
                    for a_i, action in enumerate(rule.actions))
    credited = {a.asset for a in rule.actions if a.type == "CREDIT"}
    budgets = tuple(_compile_budget(f"{where}: budgets[{b_i}]", b, assets, b_i, credited)
                    for b_i, b in enumerate(rule.budgets))
    definition = rule.model_dump(mode="json", exclude_none=True) | {"key": rule_key, "order": order}
    return CompiledRule(
        id=ids.rule_id(program_key, rule_key),
        key=rule_key,
        version=rule_version(program_key, definition),
        name=rule.name,
        order=order,
        status=rule.status,
        stop_after_match=rule.stop_after_match,
        active_from=rule.active_from,
        active_to=rule.active_to,
        condition=condition,
        actions=actions,
        budgets=budgets,
        definition=definition,
    )


def _compile_action(at: str, index: int, action: Action, assets: dict[str, Asset],
                    tiers: dict[str, CompiledTier], groups: dict[str, CompiledGroup]) -> CompiledAction:
    def need(field: str):
        value = getattr(action, field)
        if value is None:
            raise CatalogError(f"{at}: `{field}` is required for {action.type}")
        return value

    target = None
    if action.target is not None:
        t = action.target
        if t.type == "PARTICIPANT":
            # `id` is Scrip's name for the participant's id (scrip-reference.md 9, "id"?):
            # participant_id by another name (docs/decisions.md, "Participants and state")
            named = [name for name in ("external_id", "participant_id", "id") if getattr(t, name) is not None]
            if len(named) != 1:
                raise CatalogError(f"{at}.target: give exactly one of external_id, participant_id or id (Scrip's "
                                   f"name for participant_id), a CEL expression or a literal; got "
                                   f"{' and '.join(named) or 'none'}")
            pid_field = "participant_id" if t.id is None else "id"
            pid = t.participant_id if t.id is None else t.id
            # value fields: an expression, or the literal id ("u5" names participant u5)
            external_id = t.external_id and _name(f"{at}.target.external_id", t.external_id, assets)
            if isinstance(external_id, str) and len(external_id) > MAX_KEY_LENGTH:
                # no participant Scrip could hold (1-255): it failed every event that reached it
                # (external_id_too_long, as an expression giving one still does when it runs)
                raise CatalogError(f"{at}.target.external_id: an external_id is at most {MAX_KEY_LENGTH} characters "
                                   f"(Scrip's limit for a participant's), this one has {len(external_id)}: "
                                   f"{external_id[:40]!r}...")
            participant = pid and _name(f"{at}.target.{pid_field}", pid, assets)
            for field, ref in (("external_id", external_id), (pid_field, participant)):
                if isinstance(ref, str) and not ref.strip():
                    # white space alone names nobody: every event reaching it failed (kernel._target_ref)
                    raise CatalogError(f"{at}.target.{field}: must name a participant (non-empty text, or a CEL "
                                       f"expression giving one), got {ref!r}")
            target = CompiledTarget(type="PARTICIPANT", external_id=external_id, participant_id=participant)
        else:
            if t.external_id is not None or t.participant_id is not None:
                raise CatalogError(f"{at}.target: external_id and participant_id name participants; a {t.type} "
                                   "target " + ("names its group by `id`" if t.type == "GROUP" else "takes no id"))
            group = None
            if t.type == "GROUP":
                group = _group_ref(f"{at}.target.id", t.id, assets, groups)
            elif t.id is not None:
                raise CatalogError(f"{at}.target.id: a PROGRAM target is the event's program; it takes no id")
            target = CompiledTarget(type=t.type, group=group)
    common = {"index": index, "type": action.type, "description": action.description, "target": target}
    if action.type in VALUE_ACTIONS:
        symbol = need("asset")
        if symbol not in assets:
            raise CatalogError(f"{at}: unknown asset symbol {symbol!r}; define it under this program's `assets` "
                               "(an asset other programs use too: defined identically in each), and name it by "
                               "its symbol or its id")
        asset = assets[symbol]
        # HOLD / RELEASE / FORFEIT without an amount take everything in their bucket (of their
        # reference), as the hold, release and forfeit operations do (scrip-reference.md 12:
        # "omitting it processes the whole SIMPLE balance, or every matching lot"); VOID_HOLD takes none
        amount = (None if action.type == "VOID_HOLD" or (action.type in WHOLE_BUCKET_ACTIONS and action.amount is None)
                  else need("amount"))
        if asset.inventory_mode == "LOT":
            for field in ("expires_at", "matures_at"):
                if getattr(action, field) is not None and action.type != "CREDIT":
                    raise CatalogError(f"{at}: `{field}` applies to CREDIT only")
            if action.matures_at is not None and (action.bucket == "HELD" or action.reference_id is not None):
                # a future matures_at lands in DEFERRED (semantics.md 7), which silently dropped the
                # hold (the credit was no longer pending, and its settle credited it a second time)
                # or the settle (the held value stayed held and the credit came on top of it)
                what = ("a CREDIT into HELD is pending until it is settled, released or voided"
                        if action.bucket == "HELD" else "a CREDIT with reference_id settles what that reference holds")
                raise CatalogError(f"{at}.matures_at: {what}; it cannot also be DEFERRED until it matures: drop "
                                   f"`matures_at`")
        elif action.expires_at is not None or action.matures_at is not None:
            raise CatalogError(f"{at}: expires_at/matures_at apply to LOT assets; {symbol} is SIMPLE")
        elif action.reference_id is not None or action.type == "VOID_HOLD":
            what = "VOID_HOLD" if action.type == "VOID_HOLD" else "reference_id"
            raise CatalogError(f"{at}: {what} applies to LOT assets (lots carry the reference); {symbol} is SIMPLE: "
                               "use HOLD/RELEASE by amount, or make the asset inventory_mode: LOT")
        if action.type == "VOID_HOLD":
            need("reference_id")
        if target is not None and target.type == "PROGRAM":
            _program_value_target(at, action, asset)
        return CompiledAction(**common, asset=asset, asset_id=ids.asset_id(symbol),
                              amount=None if amount is None else _amount(f"{at}.amount", amount, asset, assets),
                              reference_id=(None if action.reference_id is None
                                            else _name(f"{at}.reference_id", action.reference_id, assets)),
                              allow_negative=action.allow_negative, bucket=action.bucket,
                              expires_at=_when(f"{at}.expires_at", action.expires_at, assets),
                              matures_at=_when(f"{at}.matures_at", action.matures_at, assets))
    if action.type in ("SCHEDULE_EVENT", "BROADCAST"):
        return _compile_emission(at, action, common, need, assets)
    if action.type in ("TAG", "UNTAG"):
        tag = _name(f"{at}.tag", need("tag"), assets)
        if isinstance(tag, str) and not tag.strip():  # every event reaching it would fail
            raise CatalogError(f"{at}.tag: a tag must be non-empty text, got {tag!r}")
        return CompiledAction(**common, tag=tag)
    if action.type == "COUNTER":
        value = _number(f"{at}.value", need("value"), assets)
        reset_after = None
        if action.reset_after:
            try:
                reset_after = parse_duration(action.reset_after)
            except ValueError as e:
                raise CatalogError(f"{at}.reset_after: {e}") from None
            if reset_after <= timedelta(0):
                raise CatalogError(f"{at}.reset_after: must be a positive duration")
        return CompiledAction(**common, key=_state_key(at, need("key")), value=value, reset_after=reset_after)
    if action.type == "SET_TIER":
        tier = tiers.get(need("tier"))
        if tier is None:
            raise CatalogError(f"{at}.tier: {action.tier!r} is not a tier of this program; define it under `tiers`"
                               + (f" (tiers: {', '.join(tiers)})" if tiers else ""))
        level = _name(f"{at}.level", need("level"), assets)
        if not isinstance(level, CelProgram) and level not in tier.by_key:
            raise CatalogError(f"{at}.level: {level!r} is not a level of tier {tier.key} "
                               f"(levels: {', '.join(tier.by_key)})")
        return CompiledAction(**common, tier=tier.key, level=level)
    # SET_ATTRIBUTE
    return CompiledAction(**common, key=_state_key(at, need("key")), value=_value(f"{at}.value", need("value"), assets))


def _state_key(at: str, key: str) -> str:
    """A COUNTER's or SET_ATTRIBUTE's `key`: non-empty, as the set_counter and set_attribute
    operations require (Scrip names it in the path, /state/counters/{key}); `""` loaded and
    wrote a counter or attribute named by nothing."""
    if not key:
        raise CatalogError(f"{at}.key: must be non-empty text (the counter's or attribute's name)")
    return key


def _check_redemption_entity(file: str, pf: ProgramFile, groups: dict[str, CompiledGroup]) -> None:
    """LEDGER_ENTITY posts redemptions into a group's wallet: its entity id must name (by key or
    id, in any case as perkflow's ids are) a group declared in the project (docs/decisions.md
    "Redemption target")."""
    ref = pf.program.redemption_target_entity_id
    if pf.program.redemption_target_type != "LEDGER_ENTITY" or _names_group(ref, groups):
        return
    raise CatalogError(f"{file}: program.redemption_target_entity_id: {ref!r} is not a group of this project; "
                       "a LEDGER_ENTITY target is a group declared under `groups` (its key or id)"
                       + (f" (groups: {', '.join(groups)})" if groups else " (no groups are declared)"))


def _names_group(ref: str, groups: dict[str, CompiledGroup]) -> bool:
    """Whether `ref` names a declared group as Catalog.resolve_group finds it: by its key (the
    customer's, exactly) or its id (perkflow's UUID, in any case)."""
    return ref in groups or ref.lower() in {g.sid for g in groups.values()}


def _group_ref(where: str, ref: str | None, assets: dict[str, Asset], groups: dict[str, CompiledGroup]):
    """A GROUP target's id: a CEL expression (checked when the action runs), or the literal key
    (or id) of a group declared under `groups` in a program file of the project."""
    if not ref:
        raise CatalogError(f"{where}: required for a GROUP target: the key of a group (or a CEL expression giving one)")
    value = _value(where, ref, assets)
    if isinstance(value, CelProgram):
        return value
    text = ref.strip()
    if not _names_group(text, groups):
        raise CatalogError(f"{where}: {text!r} is not a group of this project; declare it under `groups`"
                           + (f" (groups: {', '.join(groups)})" if groups else ""))
    return text


#: Value actions that may target the program (its wallet, docs/decisions.md "PROGRAM targets").
PROGRAM_VALUE_ACTIONS = {"CREDIT": "funds the wallet from SYSTEM_ISSUANCE, like `fund`",
                         "DEBIT": "returns wallet value to SYSTEM_ISSUANCE",
                         "FORFEIT": "sends wallet value to SYSTEM_BREAKAGE, like `burn`"}


def _program_value_target(at: str, action: Action, asset: Asset) -> None:
    """A value action with `target: {type: PROGRAM}` moves the program's wallet of a PREFUNDED
    asset, its one AVAILABLE account (Scrip: UNLIMITED assets bypass the wallet)."""
    if action.type not in PROGRAM_VALUE_ACTIONS:
        raise CatalogError(f"{at}.target: a PROGRAM target takes CREDIT, DEBIT or FORFEIT of a PREFUNDED asset "
                           f"(its wallet has one AVAILABLE account: nothing to {action.type})")
    if asset.issuance_policy != "PREFUNDED":
        raise CatalogError(f"{at}.target: {asset.symbol} is UNLIMITED: it has no program wallet (credits mint from "
                           f"SYSTEM_ISSUANCE); a PROGRAM target moves the wallet of a PREFUNDED asset")
    for name in ("bucket", "expires_at", "matures_at", "reference_id"):
        if getattr(action, name) not in (None, "AVAILABLE"):
            raise CatalogError(f"{at}.{name}: does not apply with a PROGRAM target (the wallet is one AVAILABLE "
                               "account, without lots that expire, mature or carry references)")
    if action.allow_negative:
        raise CatalogError(f"{at}.allow_negative: a program wallet may not go below zero")
    if action.amount is None:  # (a FORFEIT elsewhere may leave it out: all of its bucket)
        raise CatalogError(f"{at}: `amount` is required for {action.type} with a PROGRAM target")


def _compile_emission(at: str, action: Action, common: dict, need, assets: dict[str, Asset]) -> CompiledAction:
    """SCHEDULE_EVENT (event_name, delay, payload, target) and BROADCAST (event_name, payload):
    docs/decisions.md, "SYSTEM events"."""
    name = need("event_name")
    if not name.strip() or len(name) > EVENT_NAME_MAX:
        # Scrip's event_name is 1-255 characters (an automation's; SCHEDULE_EVENT creates one,
        # scrip-reference.md 9, 18), as perkflow's automations already required
        raise CatalogError(f"{at}.event_name: must be non-empty text of at most {EVENT_NAME_MAX} characters "
                           f"(got {len(name)})")
    if action.type == "BROADCAST":
        if action.delay is not None:
            raise CatalogError(f"{at}.delay: BROADCAST emits at the event's `now`; use SCHEDULE_EVENT for a delay "
                               "(a scheduled event whose rule broadcasts)")
        if action.target is not None:
            raise CatalogError(f"{at}.target: BROADCAST reaches every ACTIVE participant of the program; it takes no "
                               "target")
        delay = None
    else:
        if action.target is not None and action.target.type == "GROUP":
            raise CatalogError(f"{at}.target: a SYSTEM event is for a participant or for the program (target "
                               "PARTICIPANT or PROGRAM); a group has no events of its own: schedule the event for "
                               "a member, or for the program, and let its rule target the group")
        delay = _delay(f"{at}.delay", need("delay"), assets)
    payload = _payload(f"{at}.payload", action.payload or {}, assets)
    return CompiledAction(**common, event_name=name, delay=delay, payload=payload)


def _delay(where: str, text: str, assets: dict[str, Asset]):
    """A Go duration (>= 0), or a CEL expression giving a duration."""
    try:
        delay = parse_duration(text)
    except ValueError:
        value = _value(where, text, assets)
        if not isinstance(value, CelProgram):
            raise CatalogError(f"{where}: {text!r} is neither a Go duration (24h, 90m, 1h30m) nor a CEL expression "
                               "giving a duration") from None
        return value
    if delay < timedelta(0):
        raise CatalogError(f"{where}: must not be negative")
    return delay


def _payload(where: str, value, assets: dict[str, Asset]):
    """A payload as written: JSON values stay as they are; a string is a CEL expression when it
    parses as one that reads a known variable or calls a function, else literal text (a JSON
    string stays a string: "10" is not turned into a number, as a payload is typed JSON)."""
    if isinstance(value, dict):
        return {str(k): _payload(f"{where}.{k}", v, assets) for k, v in value.items()}
    if isinstance(value, list):
        return [_payload(f"{where}[{i}]", v, assets) for i, v in enumerate(value)]
    if isinstance(value, str):
        return _expression_or_text(where, value, assets)
    if value is None or isinstance(value, (bool, int)) or (isinstance(value, float) and math.isfinite(value)):
        return value
    raise CatalogError(f"{where}: {value!r} is not a JSON value (write dates and instants as quoted text)")


def _compile_budget(at: str, budget: Budget, assets: dict[str, Asset], index: int, credited: set[str]) -> CompiledBudget:
    if budget.asset not in assets:
        raise CatalogError(f"{at}: unknown asset symbol {budget.asset!r}; define it under this program's `assets`")
    # A budget counts the rule's CREDITs of its asset (docs/decisions.md "Budgets"): on an asset
    # the rule never credits it could never be reached, and a cap that silently caps nothing is
    # a mistake in the file (a DEBIT cap, or the wrong symbol)
    if budget.asset not in credited:
        fix = f"budget one it credits: {', '.join(sorted(credited))}" if credited else "leave the budget out"
        raise CatalogError(f"{at}.asset: this rule has no CREDIT of {budget.asset}, and a budget counts only the "
                           f"rule's CREDITs of its asset, so it could never be reached; {fix}")
    try:
        limit = amounts.decimal_text(budget.limit)
    except InvalidOperation:
        raise CatalogError(f"{at}.limit: {budget.limit!r} is not a decimal number (ASCII digits with an optional "
                           "sign, point and exponent)") from None
    if not limit.is_finite() or limit <= 0:
        raise CatalogError(f"{at}.limit: must be a positive number")
    # the budget counts CREDIT amounts, each within the asset's scale: 10.005 caps at 10.00
    if why := beyond_scale(limit, assets[budget.asset].scale):
        raise CatalogError(f"{at}.limit: {why}")
    # Each schedule_type resets by one field (none: a lifetime budget). The other would be
    # ignored: a `cron_expression` on a lifetime budget meant a monthly cap and got a lifetime one.
    uses = {None: None, "INTERVAL": "interval", "CRON": "cron_expression"}[budget.schedule_type]
    for other in ("interval", "cron_expression"):
        if other != uses and getattr(budget, other) is not None:
            kind = f"schedule_type {budget.schedule_type}" if budget.schedule_type else "a lifetime budget (no schedule_type)"
            wanted = "INTERVAL" if other == "interval" else "CRON"
            raise CatalogError(f"{at}.{other}: does not apply to {kind}; leave it out, or set schedule_type {wanted}")
    interval = None
    if budget.schedule_type == "INTERVAL":
        if not budget.interval:
            raise CatalogError(f"{at}: `interval` is required when schedule_type is INTERVAL")
        try:
            interval = parse_duration(budget.interval)
        except ValueError as e:
            raise CatalogError(f"{at}.interval: {e}") from None
        if interval <= timedelta(0):
            raise CatalogError(f"{at}.interval: must be a positive duration")
    cron = None
    if budget.schedule_type == "CRON":
        if not budget.cron_expression:
            raise CatalogError(f"{at}: `cron_expression` is required when schedule_type is CRON")
        try:
            cron = parse_cron(budget.cron_expression)
        except CronError as e:
            raise CatalogError(f"{at}.cron_expression: {e}") from None
    return CompiledBudget(asset_id=ids.asset_id(budget.asset), asset=budget.asset, limit=limit, interval=interval,
                          cron=cron, index=index)


def _amount(where: str, text: str, asset: Asset, assets: dict[str, Asset]):
    """A number (checked when the action runs, like any amount: semantics.md 7 makes an invalid
    amount a failure of the action, not of the program file) or a CEL expression; by the
    value-field rule, anything else is literal text, which an amount cannot be."""
    return _number(where, text, assets, "(an expression must read event, now, participant or program, "
                                        "or call a function)")


#: Beyond this power of ten a written number can be no ledger amount or counter step (at most 20
#: integer digits and 18 decimals): refused at load rather than spelled out in full ("1e999999999").
_EXPONENT_BOUND = 60


def _number(where: str, text: str, assets: dict[str, Asset], hint: str = ""):
    """A field that must give a number (an amount, a COUNTER value): the value-field rule, where
    text that is a decimal with an exponent (`"1e3"`, YAML's unquoted `1e3` or `1.0e3`) is that
    number, as a JSON `1e3` is and as `max_transaction_amount` or a budget `limit` read it
    (docs/decisions.md "Numbers written as text"); it was a load error in YAML and JSON text."""
    value = _value(where, text, assets)
    if not isinstance(value, str):
        return value
    try:
        number = amounts.decimal_text(value)
    except InvalidOperation:
        raise CatalogError(f"{where}: {text!r} is neither a number nor a CEL expression"
                           + (f" {hint}" if hint else "")) from None
    if number and abs(number.adjusted()) > _EXPONENT_BOUND:
        raise CatalogError(f"{where}: {text!r} is beyond any amount (at most 20 integer digits and 18 decimals)")
    return Decimal(format(number, "f"))


def _when(where: str, text: str | None, assets: dict[str, Asset]):
    """A Go duration (from the event's `now`), an RFC 3339 instant, or a CEL expression."""
    if text is None:
        return None
    try:
        return parse_when(text)
    except ValueError:
        pass
    # the value-field rule (semantics.md 7): only text that reads a variable or calls a function
    # is an expression; `2025-03-10` (CEL arithmetic, 2012) or an instant without a zone is neither
    # form, and used to load and then fail every event (or stop with a CEL syntax error)
    value = _value(where, text, assets)
    if not isinstance(value, CelProgram):
        raise CatalogError(f"{where}: {text!r} is neither a Go duration (720h) from now, an RFC 3339 instant with "
                           "a time zone (2025-12-31T23:59:59Z) nor a CEL expression (an expression must read event, "
                           "now, participant or program, or call a function)")
    return value


def _value(where: str, text: str, assets: dict[str, Asset]):
    """The value-field rule (semantics.md 7): a plain number is a number; text that parses as CEL
    and references a known variable or calls a function is an expression; else literal text."""
    if isinstance(text, bool):
        return "true" if text else "false"
    if _PLAIN_NUMBER.match(text.strip()):
        return Decimal(text.strip())
    return _expression_or_text(where, text, assets)


def _name(where: str, text: str, assets: dict[str, Asset]):
    """A value field that names something (a tag, a target participant, a hold reference, a tier
    level): an expression, else the text as written, a number included. `"5"` is the tag "5"
    (the number the value-field rule made of it failed every event that reached it), customer id
    `"00123"` is participant 00123 (read as the number 123 it credited and created participant
    "123"), and level `"01"` is the level 01 (a load error, "'1' is not a level")."""
    value = _value(where, text, assets)
    return text if isinstance(value, Decimal) else value


def _expression_or_text(where: str, text: str, assets: dict[str, Asset]):
    """The rest of the value-field rule, for text that is no number (and for every string of a
    payload, which stays a string: "10" is JSON text there): a CEL expression, else literal text.
    Text over a limit of semantics.md 6, or meant as CEL and not parsing, is a load error; a
    payload took it as literal text (a 4 KiB expression or an unbounded comprehension was stored
    as its own text in the SYSTEM event, silently)."""
    try:
        prog = compile_cel(text)
    except CelLimitError as e:
        # over a limit of semantics.md 6, say so: taken as literal text, it was a misleading
        # "neither a number nor a CEL expression" for amounts and a 4 KiB string elsewhere
        raise CatalogError(f"{where}: {e}") from None
    except CelError as e:
        if _MEANT_AS_CEL.match(text):  # `event.referrer +`: a typo in an expression, not a name
            raise CatalogError(f"{where}: {e}") from None
        return text
    if prog.variables & KNOWN_VARIABLES or prog.functions:
        return _cel(where, text, assets)
    return text


def _cel(where: str, text: str, assets: dict[str, Asset]):
    try:
        prog = compile_cel(text)
    except CelError as e:
        raise CatalogError(f"{where}: {e}") from None
    # CEL checks names before anything runs; unchecked, a typo (`evnt.type`) failed every event
    undeclared = sorted(prog.variables - KNOWN_VARIABLES - set(TYPE_NAMES))
    if undeclared:
        raise CatalogError(f"{where}: undeclared reference to {undeclared[0]!r}; an expression reads "
                           "event, now, participant and program (semantics.md 6)")
    unknown = sorted(prog.functions - set(FUNCTIONS))
    if unknown:
        raise CatalogError(f"{where}: unknown function {unknown[0]!r}; docs/cel.md lists the functions")
    failures = constant_failures(prog.ir)
    if failures:
        raise CatalogError(f"{where}: {failures[0]} (a timestamp is RFC 3339 with a time zone, e.g. "
                           "\"2026-09-01T00:00:00Z\"; a duration Go's form, e.g. \"24h\")")
    for path in prog.paths:
        parts = path.split(".")
        if parts[:2] == ["participant", "balances"] and len(parts) > 2 and parts[2] not in assets:
            raise CatalogError(f"{where}: unknown asset symbol {parts[2]!r} in {path}; `participant.balances` "
                               "holds the assets under this program's `assets`")
    return prog


def _condition(where: str, text: str, assets: dict[str, Asset]):
    """A condition (a rule's, an automation's filter or guard): CEL that gives a bool. One that
    certainly never does is refused; one whose type shows only per event is judged then
    (semantics.md 5: a type error is false, SKIPPED_ERROR)."""
    prog = _cel(where, text, assets)
    other = never_bool(prog.ir)
    if other is not None:
        raise CatalogError(f"{where}: must give a bool, and {text!r} can only give {other}; compare it "
                           "(for example `... > 0`)")
    return prog


def _slug(name: str) -> str:
    return slug(name) or "rule"
