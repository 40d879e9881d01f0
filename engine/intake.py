"""From read rows to the batch's new events: program resolution, idempotency, participants.

Every row ends in exactly one place (semantics.md 1.7): rejected (with a reason), a duplicate of
an event already seen, or a new event to process. Participants are resolved with the sequential
meaning of semantics.md 5.1: an unknown external id is created by its first event (in stream
order) in a program that creates participants; earlier events that needed it fail with
`participant_not_found`. An action target can also create a participant (docs/decisions.md), but
only while the stream runs: where one could, a row's `participant_not_found` is `deferred` to the
sequential kernel, which decides it at the row's turn (engine/kernel.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import duckdb
import polars as pl

from engine import amounts, emit, ids
from engine.catalog import Catalog
from engine.operations import NO_PARTICIPANT, OPERATIONS, OPTIONAL_PARTICIPANT, truth, upsert_problem
from engine.io.events import UUID_PATTERN, json_doubles, raw_as_read, raw_of, strip_nulls
from engine.ledger import db
from engine.ledger.sqlfiles import statement

#: Events and operations each have their own idempotency keys per program (semantics.md 4).
KEY = ["kind", "program_uuid", "idempotency_key"]
#: What must match for a repeated idempotency key to be a duplicate rather than a conflict.
PAYLOAD = ["operation", "external_id", "participant_id", "recipient_external_id", "recipient_id", "event_timestamp"]
#: The step 1 failure of a row whose participant_id and external_id name different participants.
MISMATCH = "participant_mismatch"
#: The participant references of a row, (participant_id-like, external_id-like): the same
#: participant named either way is the same payload (`_same_payload`).
REFERENCES = [("participant_id", "external_id", "participant_uuid"),
              ("recipient_id", "recipient_external_id", "recipient_uuid")]


@dataclass
class Intake:
    events: pl.DataFrame    # new events in stream order, with `pos`, ids and pre-failures
    rejected: pl.DataFrame  # source, row_number, reason, message, raw
    duplicates: int
    participants: pl.DataFrame  # new participants: id, external_id, created_at, created_pos
    enrollments: pl.DataFrame   # participant_id, program_id, enrolled_at


def screen(rows: pl.DataFrame, catalog: Catalog, *, system: bool = False) -> pl.DataFrame:
    """The read rows with their program (`program_key`, `program_uuid`) and every reason to
    quarantine them that needs no ledger: the row contract's (engine/io/events.py), an unknown
    program or operation, a reserved key. A row left without `reject_reason` is taken in
    (idempotency decides the rest); engine/io/reorder.py relies on exactly that."""
    refs = {p.key: p for p in catalog.programs.values()} | {str(p.id): p for p in catalog.programs.values()}
    rows = rows.with_columns(
        program_key=pl.col("program_id").replace_strict({k: p.key for k, p in refs.items()}, default=None),
        program_uuid=pl.col("program_id").replace_strict({k: str(p.id) for k, p in refs.items()}, default=None),
    )
    unknown_program = pl.col("reject_reason").is_null() & pl.col("program_key").is_null()
    unknown_operation = (pl.col("reject_reason").is_null() & (pl.col("kind") == "operation")
                         & ~pl.col("operation").is_in(sorted(OPERATIONS)))
    # an operation on a participant must name one, as an event must (it crashed the run before)
    nobody = (pl.col("reject_reason").is_null() & (pl.col("kind") == "operation")
              & ~pl.col("operation").is_in(sorted(NO_PARTICIPANT | OPTIONAL_PARTICIPANT))
              & pl.coalesce(pl.col("external_id"), pl.col("participant_id")).is_null())
    # keys starting with system: name SYSTEM events (engine/emit.py); an input row cannot take one
    reserved = (pl.col("reject_reason").is_null() & pl.col("idempotency_key").str.starts_with(emit.RESERVED_PREFIX)
                & pl.lit(not system))
    rows = rows.with_columns(
        reject_reason=pl.when(reserved).then(pl.lit(emit.RESERVED_REASON))
        .when(unknown_program).then(pl.lit("unknown_program"))
        .when(unknown_operation).then(pl.lit("unknown_operation"))
        .when(nobody).then(pl.lit("missing_required_field")).otherwise(pl.col("reject_reason")),
        reject_message=pl.when(reserved)
        .then(pl.concat_str(pl.lit("idempotency_key "), pl.col("idempotency_key"),
                            pl.lit(f" starts with {emit.RESERVED_PREFIX!r}, which is reserved for the SYSTEM events "
                                   "the engine emits (SCHEDULE_EVENT, BROADCAST, automations)")))
        .when(unknown_program)
        .then(pl.concat_str(pl.lit("program "), pl.col("program_id"), pl.lit(" is not defined in the program files")))
        .when(unknown_operation)
        .then(pl.concat_str(pl.lit("unknown operation "), pl.col("operation"),
                            pl.lit(f"; one of: {', '.join(sorted(OPERATIONS))}")))
        .when(nobody)
        .then(pl.concat_str(pl.lit("required field external_id is empty (operation "), pl.col("operation"),
                            pl.lit(" names a participant: external_id or participant_id)")))
        .otherwise(pl.col("reject_message")),
    )
    return rows


def intake(rows: pl.DataFrame, catalog: Catalog, con: duckdb.DuckDBPyConnection, *, system: bool = False) -> Intake:
    """`system`: the rows are SYSTEM events the engine made (automation firings), whose keys
    start with system: by design; input rows may not take such keys."""
    rows = screen(rows, catalog, system=system)
    bad = rows.filter(pl.col("reject_reason").is_not_null())
    valid = rows.filter(pl.col("reject_reason").is_null())

    # Idempotency against the ledger: a key stored before is compared with what was stored,
    # for every row of the batch that repeats it (the first row ever wins, semantics.md 4) ...
    known = db.frame(con, statement("lookups.sql", "known_events"), stage_keys=valid.select(
        "kind", program_id="program_uuid", idempotency_key="idempotency_key").unique())
    known = known.rename({"program_id": "program_uuid", "participant_ref": "participant_id", "recipient_ref": "recipient_id"})
    seen = valid.join(
        known.rename({c: f"{c}_orig" for c in [*PAYLOAD, "event_json", "participant_uuid", "recipient_uuid"]}).with_columns(
            pl.col("program_uuid").cast(pl.String), pl.col("event_timestamp_orig").cast(valid.schema["event_timestamp"])),
        on=KEY, how="inner")
    same_db = _same_payload(seen)
    dup_db, conflict_db = seen.filter(same_db), seen.filter(~same_db)
    fresh = valid.join(seen.select(KEY).unique(), on=KEY, how="anti")

    # ... and a key new to the ledger: the batch's first row wins, later ones are compared with it.
    fresh = fresh.with_columns(_first=pl.col("arrival").min().over(KEY))
    new = fresh.filter(pl.col("arrival") == pl.col("_first"))
    later = fresh.filter(pl.col("arrival") != pl.col("_first")).join(
        new.select(*KEY, *PAYLOAD, "event_json"), on=KEY, suffix="_orig")
    same = _same_payload(later)
    dup_batch, conflict_batch = later.filter(same), later.filter(~same)

    conflicts = pl.concat([conflict_batch.select(bad.columns), conflict_db.select(bad.columns)]).with_columns(
        reject_reason=pl.lit("idempotency_conflict"),
        reject_message=pl.concat_str(pl.lit("idempotency_key "), pl.col("idempotency_key"),
                                     pl.lit(" was already used with a different payload")))
    rejected = pl.concat([bad, conflicts]).sort("arrival")
    rejected = rejected.with_columns(raw=raw_as_read(rejected)).with_columns(
        raw=pl.coalesce("raw", raw_of(bad))).select(
        "source", "row_number", reason="reject_reason", message="reject_message", raw="raw")

    new = new.sort("event_timestamp", "arrival").with_columns(pos=pl.int_range(pl.len(), dtype=pl.Int64))
    events, participants, enrollments = _resolve_participants(new, catalog, con, system)
    return Intake(events=events, rejected=rejected, duplicates=len(dup_batch) + len(dup_db),
                  participants=participants, enrollments=enrollments)


def _same_payload(df: pl.DataFrame) -> pl.Series:
    """Row-wise: is the payload the same as the `_orig` one? Scalars exactly; the participant
    (and the recipient) as written or as resolved, so that one named by `external_id` once and
    by its `participant_id` once is the same participant (semantics.md 4 compares the
    participant); event data canonically (key order and whitespace ignored, numbers by value,
    null = absent)."""
    if len(df) == 0:
        return pl.Series([], dtype=pl.Boolean)
    # only rows that repeat a key get here: few, so their external ids' ids are cheap to derive
    ext_ids = pl.concat([df[c] for _, ext, _ in REFERENCES for c in (ext, f"{ext}_orig")]).drop_nulls().unique()
    derived = {e: ids.participant_id_text(e) for e in ext_ids.to_list()}

    def who(ref: str, ext: str) -> pl.Expr:
        return pl.coalesce(pl.col(ref).str.to_lowercase(), pl.col(ext).replace_strict(derived, default=None))

    scalars = pl.col("operation").eq_missing(pl.col("operation_orig")) & pl.col("event_timestamp").eq_missing(
        pl.col("event_timestamp_orig"))
    for ref, ext, stored in REFERENCES:
        # a stored row carries the id its reference resolved to when it was processed
        then = who(f"{ref}_orig", f"{ext}_orig")
        if f"{stored}_orig" in df.columns:
            then = pl.coalesce(pl.col(f"{stored}_orig"), then)
        as_written = pl.col(ref).eq_missing(pl.col(f"{ref}_orig")) & pl.col(ext).eq_missing(pl.col(f"{ext}_orig"))
        scalars = scalars & (as_written | who(ref, ext).eq(then).fill_null(False))
    flags = df.select(s=scalars, raw=pl.col("event_json") == pl.col("event_json_orig"))
    out = []
    for s, raw, op, a, b in zip(flags["s"], flags["raw"], df["operation"], df["event_json"], df["event_json_orig"]):
        out.append(bool(s) and (bool(raw) or canonical(a, op) == canonical(b, op)))
    return pl.Series(out, dtype=pl.Boolean)


#: Operation params that are numbers, whether written as decimal text or as JSON numbers
#: (docs/decisions.md "Numbers in operation params"): compared by value, as semantics.md 4 says
#: numbers are. (`value` is a number only for set_counter: set_attribute stores its text.)
NUMERIC_PARAMS = {"amount", "quantity"}
#: Operation params that are true/false (engine.operations.truth): `true`, `"true"`, `"TRUE"`
#: are one value, as the operation reads them.
FLAG_PARAMS = {"allow_negative"}
#: Operation params (and a transfer recipient's fields) that hold perkflow's UUIDs, read in any
#: letter case (docs/decisions.md "Input"), or a key beside one: a dashed UUID is compared in
#: lowercase. Exact, as keys and symbols are never a dashed UUID in capitals (keys are
#: lowercase, symbols have no dashes), so no key is merged with another.
UUID_PARAMS = {"participant_id", "on_behalf_of_participant_id", "source_participant_id", "redemption_id",
               "program_id", "asset_id", "group_id", "source_group_id"}
_UUID = re.compile(UUID_PATTERN)


def canonical(text: str | None, operation: str | None = None):
    """A JSON payload as a comparable value: nulls dropped, numbers by exact value. For an
    operation's params (`operation`), also its numeric params written as text (`"10"`, `"10.0"`
    and `10` are one amount), its true/false params written as text (`"true"` is `true`) and
    its UUIDs in any letter case, at the top and in a transfer's recipients."""
    numeric = NUMERIC_PARAMS | ({"value"} if operation == "set_counter" else set())

    def field(name: str, v):
        if name in FLAG_PARAMS and truth(v) is not None:
            return ("bool", truth(v))
        if name in UUID_PARAMS and isinstance(v, str) and _UUID.fullmatch(v):
            return ("str", v.lower())
        return walk(v, name in numeric)

    def walk(v, number: bool = False):
        if isinstance(v, dict):
            return tuple(sorted((k, walk(x)) for k, x in v.items() if x is not None))
        if isinstance(v, list):
            return ("list", tuple(walk(x) for x in v))
        if isinstance(v, bool):
            return ("bool", v)
        if isinstance(v, (int, float)):
            return ("num", Decimal(repr(v)) if isinstance(v, float) else Decimal(v))
        if number and isinstance(v, str):
            try:
                return ("num", amounts.decimal_text(v))
            except InvalidOperation:
                pass  # not a number: the operation fails on it; compared as text
        return ("str", v)

    def params(v):
        if not isinstance(v, dict):
            return walk(v)
        top = {k: field(k, x) for k, x in v.items() if x is not None}
        if isinstance(v.get("recipients"), list):
            top["recipients"] = ("list", tuple(
                tuple(sorted((k, field(k, x)) for k, x in r.items() if x is not None))
                if isinstance(r, dict) else walk(r) for r in v["recipients"]))
        return tuple(sorted(top.items()))

    if text is None:
        return None
    return walk(json.loads(text)) if operation is None else params(json.loads(text))


def _resolve_participants(new: pl.DataFrame, catalog: Catalog, con: duckdb.DuckDBPyConnection, system: bool):
    creates = {p.key: p.model.on_unknown_participant == "CREATE" and p.model.status == "ACTIVE"
               for p in catalog.programs.values()}
    is_op = pl.col("kind") == "operation"
    active = {p.key: p.model.status == "ACTIVE" for p in catalog.programs.values()}
    rejects = {p.key: p.model.on_unknown_participant == "REJECT" for p in catalog.programs.values()}
    people = pl.concat([
        new.select(external_id="external_id", id="participant_id"),
        new.select(external_id="recipient_external_id", id="recipient_id"),
    ]).unique()
    known = db.frame(con, statement("lookups.sql", "known_participants"), stage_people=people)
    known_ext = dict(zip(known["external_id"].to_list(), known["id"].to_list()))
    known_ids = set(known["id"].to_list())

    # Operations name existing participants (unknown: participant_not_found), except
    # upsert_participant, which creates; program-level operations (fund, burn) name none.
    upsert = is_op & (pl.col("operation") == "upsert_participant")
    named_none = pl.col("external_id").is_null() & pl.col("participant_id").is_null()
    active_program = pl.col("program_key").replace_strict(active, return_dtype=pl.Boolean)
    # An upsert that fails on its params creates nobody (Scrip: a 400, nothing created); it
    # created the participant (enrolled and ACTIVE) and then failed
    new = new.with_columns(upsert_problem=pl.when(upsert).then(
        pl.col("event_json").map_elements(_upsert_problem, return_dtype=pl.String, skip_nulls=False)))
    df = new.with_columns(
        creates=pl.when(is_op).then(upsert & active_program & pl.col("upsert_problem").is_null())
        .otherwise(pl.col("program_key").replace_strict(creates, return_dtype=pl.Boolean)),
        program_active=active_program,
        rejects=pl.when(is_op).then(~upsert)
        .otherwise(pl.col("program_key").replace_strict(rejects, return_dtype=pl.Boolean)),
        # fund and burn name no participant (a reversal may name none); nor does a SYSTEM event of a
        # scope program automation (`system`: made by the engine; an input event without one was
        # rejected when read)
        needs_participant=~(is_op & pl.col("operation").is_in(sorted(NO_PARTICIPANT)))
        & ~(is_op & pl.col("operation").is_in(sorted(OPTIONAL_PARTICIPANT)) & named_none)
        & ~(pl.lit(system) & ~is_op & named_none),
        subject_ext=pl.col("external_id"), recipient_ext=pl.col("recipient_external_id"),
    )
    # Deterministic ids for every external id; an explicit participant id wins. One that is not a
    # UUID at all (`123`, `u1`) is no perkflow id: it names nobody, like an unknown one
    # (participant_not_found, never created by a target later), and stays only in the *_ref
    # columns (it stopped the run at the ledger's UUID cast: exit 1, nothing committed).
    def not_an_id(col: str) -> pl.Expr:
        return pl.col(col).is_not_null() & ~pl.col(col).str.contains(UUID_PATTERN)

    def given_id(col: str, ext: str) -> pl.Expr:
        return (pl.when(pl.col(col).is_null()).then(pl.col(ext).replace_strict(id_of, default=None))
                .when(~not_an_id(col)).then(pl.col(col)))

    ext_ids = pl.concat([df["external_id"], df["recipient_external_id"]]).drop_nulls().unique().to_list()
    id_of = {e: known_ext.get(e) or ids.participant_id_text(e) for e in ext_ids}
    df = df.with_columns(
        subject_id=given_id("participant_id", "external_id"),
        recipient_uuid=given_id("recipient_id", "recipient_external_id"),
        not_an_id=not_an_id("participant_id") | not_an_id("recipient_id"),
    )
    # First creating event per unknown id: participants exist from that position on. Only an
    # external id creates: a participant_id is perkflow's own id, so an unknown one names nobody
    # (with an external id beside it, it made a second participant of that external id).
    refs = pl.concat([
        df.select("pos", "creates", "program_active", "event_timestamp", id="subject_id",
                  ext=pl.when(pl.col("participant_id").is_null()).then(pl.col("external_id"))),
        df.select("pos", "creates", "program_active", "event_timestamp", id="recipient_uuid",
                  ext=pl.when(pl.col("recipient_id").is_null()).then(pl.col("recipient_external_id"))),
    ]).filter(pl.col("id").is_not_null())
    unknown = refs.filter(~pl.col("id").is_in(list(known_ids)))
    created = (unknown.filter(pl.col("creates") & pl.col("ext").is_not_null())
               .sort("pos").unique("id", keep="first", maintain_order=True)
               .select("id", external_id="ext", created_pos="pos", created_at="event_timestamp"))
    df = df.join(created.select("id", subj_from="created_pos"), left_on="subject_id", right_on="id", how="left") \
           .join(created.select("id", rec_from="created_pos"), left_on="recipient_uuid", right_on="id", how="left")
    known_list = list(known_ids)

    def exists(id_col: str, from_col: str) -> pl.Expr:
        # no id at all is no participant (not null: a row that needs one and names none fails)
        return (pl.col(id_col).is_in(known_list)
                | (pl.col(from_col).is_not_null() & (pl.col(from_col) <= pl.col("pos")))).fill_null(False)

    missing = (pl.col("needs_participant") & ~exists("subject_id", "subj_from")) | (
        pl.col("recipient_uuid").is_not_null() & ~exists("recipient_uuid", "rec_from")) | pl.col("not_an_id")

    # A row names its participant exactly once (scrip-reference 6: `external_id` or
    # `participant_id`, "exactly one"); both of one participant are accepted, but an existing id
    # beside an external id of someone else (or of nobody) fails the row: taking either would
    # move value for a participant the sender did not mean (the id silently won until session 21).
    def mismatch(ref: str, ext: str, resolved: str, since: str) -> pl.Expr:
        return (pl.col(ref).is_not_null() & pl.col(ext).is_not_null() & exists(resolved, since)
                & pl.col(resolved).ne(pl.col(ext).replace_strict(id_of, default=None))).fill_null(False)

    # (only when some row names one both ways: the lookup of every external id costs ~0.1 s per
    # chunk of W1, whose rows never do)
    named_twice = df.select(pl.any_horizontal(
        (pl.col("participant_id").is_not_null() & pl.col("external_id").is_not_null()).any(),
        (pl.col("recipient_id").is_not_null() & pl.col("recipient_external_id").is_not_null()).any())).item()
    df = df.with_columns(
        mismatch=pl.when(mismatch("participant_id", "external_id", "subject_id", "subj_from"))
        .then(pl.concat_str(pl.lit("participant_id "), pl.col("participant_id"), pl.lit(" and external_id "),
                            pl.col("external_id")))
        .when(mismatch("recipient_id", "recipient_external_id", "recipient_uuid", "rec_from"))
        .then(pl.concat_str(pl.lit("recipient_id "), pl.col("recipient_id"), pl.lit(" and recipient_external_id "),
                            pl.col("recipient_external_id")))
        if named_twice else pl.lit(None, pl.String))
    df = df.with_columns(pre_code=pl.when(pl.col("mismatch").is_not_null()).then(pl.lit(MISMATCH))
                         .otherwise(_step_one(missing))).with_columns(
        pre_message=pl.when(pl.col("mismatch").is_not_null())
        .then(pl.concat_str(pl.col("mismatch"), pl.lit(" name different participants; name it by one of them "
                                                       "(or both of the same participant)")))
        .otherwise(_message("pre_code")),
        entity_id=pl.coalesce(pl.col("recipient_uuid"), pl.col("subject_id"))).drop("mismatch")
    # the upsert that would have created its participant fails for what is wrong with it
    invalid = (pl.col("pre_code") == "participant_not_found") & pl.col("upsert_problem").is_not_null()
    df = df.with_columns(pre_code=pl.when(invalid).then(pl.lit("invalid_operation")).otherwise(pl.col("pre_code")),
                         pre_message=pl.when(invalid).then(pl.col("upsert_problem")).otherwise(pl.col("pre_message")))
    # A participant missing here may still be created by an action target earlier in the stream
    # (docs/decisions.md), which only the sequential kernel sees: where a program's targets can
    # create, such a row's participant_not_found is deferred to its turn in the kernel, with the
    # outcome of step 1 should its participants exist by then (`found_code`).
    if _targets_create(catalog):
        df = df.with_columns(deferred=(pl.col("pre_code") == "participant_not_found") & ~pl.col("not_an_id"),
                             found_code=_step_one(pl.lit(False))).with_columns(found_message=_message("found_code"))
    else:
        df = df.with_columns(deferred=pl.lit(False), found_code=pl.lit(None, dtype=pl.String),
                             found_message=pl.lit(None, dtype=pl.String))
    df = df.sort("pos")
    participants = created.select("id", "external_id", "created_at", "created_pos")
    return df, participants, enrollments(df.filter(pl.col("pre_code").is_null()))


def _upsert_problem(params: str | None) -> str | None:
    """An upsert_participant row's failure on its params alone (engine.operations.upsert_problem)."""
    try:
        # read as the kernel reads params (null fields absent, JSON numbers as doubles), so the
        # outcome and the message are the same
        return upsert_problem(json_doubles(strip_nulls(json.loads(params)))) if params is not None else None
    except (ValueError, OverflowError):  # not usable JSON: quarantined before this (invalid_params)
        return None


def _step_one(missing: pl.Expr) -> pl.Expr:
    """The failure code of semantics.md 5 step 1 for each row (null: it passes), given whether a
    participant it names (subject or recipient) is `missing`: the participant first, then the
    program's status."""
    return (pl.when(missing & pl.col("rejects")).then(pl.lit("participant_not_found"))
            .when(~pl.col("program_active")).then(pl.lit("program_inactive"))
            .when(missing).then(pl.lit("participant_not_found"))
            .otherwise(pl.lit(None, dtype=pl.String)))


def _message(code: str) -> pl.Expr:
    """The message of the step 1 failure in column `code`."""
    return (pl.when(pl.col(code) == "program_inactive")
            .then(pl.concat_str(pl.lit("program "), pl.col("program_key"), pl.lit(" is not ACTIVE")))
            .when((pl.col(code) == "participant_not_found") & (pl.col("kind") == "operation"))
            .then(pl.lit("participant not found: an operation names an existing participant "
                         "(only upsert_participant creates one)"))
            .when((pl.col(code) == "participant_not_found") & pl.col("rejects"))
            .then(pl.lit("participant not found, and the program does not create participants "
                         "(on_unknown_participant: REJECT)"))
            .when(pl.col(code) == "participant_not_found")
            .then(pl.lit("participant not found: no participant has this participant_id "
                         "(a participant is created from an external_id)"))
            .otherwise(pl.lit(None, dtype=pl.String)))


def _targets_create(catalog: Catalog) -> bool:
    """Can an action target create a participant while the stream runs? A PARTICIPANT target by
    external id, in an ACTIVE program with on_unknown_participant: CREATE (docs/decisions.md)."""
    return any(p.model.status == "ACTIVE" and p.model.on_unknown_participant == "CREATE"
               and any(a.target is not None and a.target.type == "PARTICIPANT" and a.target.external_id is not None
                       for r in p.active_rules for a in r.actions)
               for p in catalog.programs.values())


def enrollments(resolved: pl.DataFrame) -> pl.DataFrame:
    """(participant_id, program_id, enrolled_at): each participant is enrolled in a program by its
    first row there (in stream order) that passed step 1, as subject or recipient."""
    return pl.concat([
        resolved.select("pos", "program_uuid", "event_timestamp", pid="subject_id"),
        resolved.filter(pl.col("recipient_uuid").is_not_null()).select(
            "pos", "program_uuid", "event_timestamp", pid="recipient_uuid"),
    ]).filter(pl.col("pid").is_not_null()).sort("pos").unique(["pid", "program_uuid"], keep="first", maintain_order=True).select(
        participant_id="pid", program_id="program_uuid", enrolled_at="event_timestamp")
