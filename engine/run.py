"""One batch end to end: programs + event files -> one committed DuckDB transaction.

Order of work, chosen so that a failed run leaves the database as it was (semantics.md 13):
everything that can be rejected (program files, unreadable event files) is checked before the
database is opened; then one transaction reads what it needs, writes everything, and commits.
"""

from __future__ import annotations

import hashlib
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import polars as pl

from engine import cuts, groups, ids, tiers
from engine.catalog import Catalog, load_catalog
from engine.catalog.ledger_checks import check_assets
from engine.execute import execute
from engine.kernel import Emitting
from engine.intake import enrollments, intake, screen
from engine.balance_range import OutOfRange
from engine.errors import BalanceRangeError, InputError
from engine.io import payload_types, reorder
from engine.io.events import in_stream_order, no_rows, read_chunks, read_inputs, row_bytes, streamable, time_span
from engine.io.files import expand, hive_values
from engine.ledger import db
from engine.ledger.sqlfiles import statement
from engine.ledger.writer import BatchWriter
from engine.lots import TIMED_ACTION_INDEX
from engine.plan import needs_kernel
from engine.state import Store

ARRIVAL_BITS = 32  # arrival_seq = batch_id << 32 | row: global, in ingestion order
LAST_INSTANT = datetime.max.replace(tzinfo=timezone.utc)  # the last instant the ledger holds


@dataclass
class RunReport:
    batch_id: int | None
    already_committed: bool
    read: int
    completed: int
    failed: int
    duplicates: int
    rejected: int
    entries: int
    seconds: float
    vectorised: int = 0
    row_evaluated: int = 0
    sequential_events: int = 0
    conditions_precomputed: int = 0
    conditions_sequential: int = 0
    running_rounds: int = 0  # rounds the running-state path took to settle (0: it did not run)
    system_events: int = 0   # SYSTEM events processed (SCHEDULE_EVENT, BROADCAST), not counted in `read`
    scheduled: int = 0       # SYSTEM events waiting in scheduled_events after this batch

    @property
    def events_per_second(self) -> float:
        return self.read / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return asdict(self) | {"events_per_second": round(self.events_per_second, 1)}


def fingerprint(specs: list[str | Path]) -> tuple[str, list[str]]:
    """SHA-256 over the bytes of every input file, in arrival order, and the hive partition values
    of a file that has some: they are part of its rows (`program_id=cafe/`), so the same bytes
    under another partition are other rows, not a re-run. A file without any hashes as before."""
    h = hashlib.sha256()
    files = [(f, root) for spec in specs for f, root in expand(spec)]
    for f, root in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
        if f.stat().st_size == 0:
            # no bytes say what an empty file holds, its format does: an empty NDJSON or CSV file
            # is no rows, an empty Parquet file unreadable (it was "already committed" after one)
            h.update(f.suffix.lower().encode() + b"\0")
        if partitions := hive_values(f, root):
            h.update(repr(sorted(partitions.items())).encode() + b"\0")
    return h.hexdigest(), [str(f) for f, _ in files]


def catalog_version(catalog: Catalog) -> str:
    return ids.content_hash(sorted((p.key, [r.version for r in p.rules]) for p in catalog.programs.values()))


#: Events per chunk of a large batch (`streamable` inputs): memory follows the chunk, not the batch.
#: W1 at 10M events (1M participants, one file; session 19, `perkflow run`): 250k chunks peaked at
#: 1.89-1.97 GiB (2.03-2.12 GB, past performance.md's 2 GB; load ~5), 125k at 1.54 GiB (load ~5),
#: 160k at 1.66 GiB (1.79 GB; idle, 194 s). At 1M (idle): 250k 14.5 s wall, 1.53 GiB; 166k 15.0 s,
#: 1.28 GiB; 125k 17.7 s, 1.20 GiB (smaller DuckDB statements keep fewer threads busy).
CHUNK_ROWS = 160_000
#: ... when a program of the batch reads or writes state: the running path's per-event state
#: frames are several times wider than the set-based path's. W2 1M (700 MB DuckDB cap), peak RSS
#: and CPU: 250k chunks 2.46 GiB; 125k 1.83 GiB, 108 s; 62.5k 1.43 GiB, 106 s (11% more wall:
#: smaller frames keep fewer threads busy); 31.25k 1.21 GiB, 126 s.
STATEFUL_CHUNK_ROWS = 62_500
#: ... and at most this many uncompressed Parquet bytes of rows per chunk, when neither
#: --chunk-rows nor PERKFLOW_CHUNK_ROWS sets the rows: a chunk of wide rows (50 event_data fields
#: of ~200 characters, ~10 KB a row) is decoded into JSON, Python values and frames several
#: times its size, and 62,500 of them peaked at 5.4 GB (session 21: 100k such events, 4.4 GB
#: while reading the first chunk). W1 and W2 rows are ~65 bytes: their chunks stay as above.
CHUNK_BYTES = 64 << 20


def _default_chunk_rows(stateful: bool, inputs: list[tuple[str | Path, str]]) -> int:
    """CHUNK_ROWS or STATEFUL_CHUNK_ROWS, fewer when the rows are wide (CHUNK_BYTES)."""
    rows = STATEFUL_CHUNK_ROWS if stateful else CHUNK_ROWS
    width = row_bytes(inputs)
    return rows if not width else min(rows, max(1_000, int(CHUNK_BYTES // width)))


def run_batch(programs: str | Path | Catalog, events: str | Path | list[str | Path] | None, db_file: str | Path | None = None, *,
              operations: str | Path | list[str | Path] | None = None, parts: list[dict] = (),
              row_path: bool = False, wait: float = 30.0, chunk_rows: int | None = None,
              progress: Callable[[str], None] | None = None,
              ledger: duckdb.DuckDBPyConnection | None = None,
              source_names: dict[str, str] | None = None) -> RunReport:
    """A large batch of Parquet files is processed chunk by chunk in stream order (files out of
    it are put in it first: engine/io/reorder.py), each chunk against the state the earlier ones left, all in the batch's one transaction: by batch
    invariance (semantics.md 1.5) the ledger is the one the whole batch at once would give.
    `ledger`: a writing connection to `db_file` that the caller keeps open (`Backfill`).
    `programs`: program files, or a catalog already compiled (`perkflow op` from the documents
    the ledger stored).
    `source_names`: what to record as the source of an input file instead of its path (`perkflow
    op` runs a temporary file, gone once it ran: "perkflow op adjust" is what a reader can use).
    `events` as a list: several inputs booked as this one batch, in that order (`Backfill.run_days`,
    which passes in `parts` the fingerprint, sources and row count of each, recorded in
    batch_inputs so that each is committed on its own); an item `(path, "operation")` is an
    operation input at that place of the arrival order (`perkflow replay`)."""
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    trace = _Trace(t0)

    def step(msg: str) -> None:
        trace.mark(msg)
        say(msg)
    step("loading programs")
    catalog = programs if isinstance(programs, Catalog) else load_catalog(programs)
    stateful = any(needs_kernel(p) for p in catalog.programs.values())
    if chunk_rows is not None and chunk_rows < 1:  # the flag's mistake, not the files' (the reader said so)
        raise InputError(f"--chunk-rows must be 1 or more, got {chunk_rows}")
    env_rows = os.environ.get("PERKFLOW_CHUNK_ROWS")
    chunk_rows = (chunk_rows or (db.positive_int("PERKFLOW_CHUNK_ROWS", env_rows, "rows") if env_rows else 0)
                  or None)  # (None: the default, chosen once the inputs are known: _default_chunk_rows)
    step("reading events")
    # arrival order: the event files, then the operation files (an item `(path, "operation")` of
    # an `events` list is an operation input in its place: replay's interleaved stream)
    inputs = [spec if isinstance(spec, tuple) else (spec, "event")
              for spec in (events if isinstance(events, list) else [events]) if spec is not None]
    inputs += [(spec, "operation") for spec in (operations if isinstance(operations, list) else [operations])
               if spec is not None]
    if not inputs:
        raise InputError("nothing to run: give --events, --operations, or both")
    fp, sources = fingerprint([spec for spec, _ in inputs])
    names = source_names or {}
    sources = list(dict.fromkeys(names.get(s, s) for s in sources)) if names else sources  # (a name once)
    # An existing ledger is opened first, without touching its schema, so that a re-run of
    # committed input bytes reads none of them; a new one is created only once the first chunk
    # (or the whole batch) has been read: an unreadable file stops the run before it exists.
    con = ledger or (db.connect(db_file, wait=wait, schema=False) if db.db_path(db_file).exists() else None)

    def release() -> None:
        if con is not None and con is not ledger:
            con.close()
    try:
        done = con is not None and _committed(con, fp)
        if not done:
            chunk_rows = chunk_rows or _default_chunk_rows(stateful, inputs)
            chunked = streamable(inputs, chunk_rows)
            ordered = chunked and in_stream_order(inputs)
            if not chunked:
                chunks = iter([read_inputs(inputs)])
            elif ordered:
                chunks = read_chunks(inputs, chunk_rows)
            else:  # put in stream order through a spill folder first (engine/io/reorder.py)
                step("putting the events in stream order")
                chunks = reorder.read_chunks(inputs, chunk_rows, lambda rows: screen(rows, catalog))
            rows = next(chunks)
    except BaseException:
        release()
        raise
    if done:  # the same input bytes were committed before: nothing to read, nothing to do
        release()
        return _no_op(done, t0)
    step("opening the ledger")
    con = con or db.connect(db_file, wait=wait, schema=False)
    try:
        con.begin()
        db.ensure_schema(con)
        done = _committed(con, fp)
        if done:  # committed by a concurrent run while this one read its first rows
            con.rollback()
            return _no_op(done, t0)
        groups.check_founders(con, catalog)
        check_assets(con, catalog)
        # the tiers of programs whose files this run lacks still review, roll over and expire
        # for the participants it touches (semantics.md 3), from the definitions stored; a
        # program whose file it has has the tiers its file says (one taken out acts no more)
        own = {p.id for p in catalog.programs.values()}
        catalog.stored_tiers[:] = [t for t in tiers.stored(con, LAST_INSTANT) if t.program_id not in own]
        batch_id = con.execute(statement("lookups.sql", "next_batch_id")).fetchall()[0][0]
        writer = BatchWriter(con, batch_id)
        totals = new_totals()
        clock = con.execute(statement("lookups.sql", "ledger_clock")).fetchall()[0][0]
        first = True
        chunk = 0
        while rows is not None:
            cut = cuts.parts(rows, catalog)  # operations apart from long runs of events
            for part in cut:
                chunk += 1
                where = (f" (rows {part['arrival'].min() + 1:,} to {part['arrival'].max() + 1:,})" if ordered
                         else f" (chunk {chunk}: {len(part):,} rows)" if chunked or len(cut) > 1 else "")
                process_chunk(con, part, catalog, writer, totals, first=first, row_path=row_path,
                              step=lambda m: step(m + where), source_names=names)
                first = False
            rows = next(chunks, None)
        if clock is not None and totals["completed"] + totals["failed"]:
            # Rows older than the ledger's clock (a participant shard run after another, a late
            # file) may have scheduled SYSTEM events due before rows already processed: one batch
            # of the whole stream would have processed them, and so does this run, after all its
            # rows (which are older), rather than leaving them for whichever later batch reaches
            # them (semantics.md 1.5; docs/decisions.md "SYSTEM events", "Where it waits").
            step("processing the SYSTEM events due by the ledger's clock")
            drain(con, catalog, clock, writer, totals)
        totals["scheduled"] = con.execute(statement("lookups.sql", "waiting_scheduled_events")).fetchall()[0][0]
        trace.mark("writing the batch row")
        writer.close(totals | {"fingerprint": fp, "sources": sources, "catalog_version": catalog_version(catalog)}, parts)
        trace.mark("committing")
        con.commit()
        trace.mark("done")
    except BaseException:
        con.rollback()
        raise
    finally:
        release()
    return RunReport(batch_id=batch_id, already_committed=False, read=totals["rows_read"],
                     completed=totals["completed"], failed=totals["failed"], duplicates=totals["duplicates"],
                     rejected=totals["rejected"], seconds=time.perf_counter() - t0, entries=writer.entries,
                     system_events=totals["system_events"], scheduled=totals["scheduled"],
                     **{k: totals[k] for k in _OUTCOME_COUNTS})


#: Rows a backfill books as one batch at most (`Backfill.run_days`). Within it the rows are
#: processed chunk by chunk as in any batch (memory follows the chunk); the bound is what a
#: failure makes the range book again, day by day. W3 at 1M events (2,740 a day), on this machine:
#: 365 daily batches 238 s; the same days as 4 batches of ~250k rows 56 s, W2's one batch 55 s.
RANGE_ROWS = 250_000


class Backfill:
    """Batches booked one after another on one DuckDB connection: a backfill of daily folders
    (the Dagster `ledger` asset, the W3 benchmark). Each `run` is `run_batch`, its own
    transaction, committed before the next; only the file is kept open between them. Opening
    and closing it per batch (DuckDB checkpoints on close) took ~55 ms of a ~300 ms daily batch
    of W3 at 100k events. The first batch of a new ledger opens it as `run_batch` does (only
    once its input was read). Its connection also checkpoints less often (`db.defer_checkpoints`):
    every batch is still durable at its commit (the WAL), and closing checkpoints the rest."""

    def __init__(self, db_file: str | Path | None = None, *, wait: float = 30.0):
        self.db_file, self.wait, self.con = db_file, wait, None

    def __enter__(self) -> Backfill:
        return self

    def run(self, programs: str | Path, events: str | Path | list[str | Path] | None, **kw) -> RunReport:
        report = run_batch(programs, events, self.db_file, wait=self.wait, ledger=self.con, **kw)
        self._open()
        return report

    def run_days(self, programs: str | Path, days: list[str | Path], **kw) -> list[tuple[list, RunReport]]:
        """Book event folders (days) in order: [(the days of a batch, its report)].

        Consecutive days are booked as one batch (up to RANGE_ROWS rows) when their rows follow
        one another in time (each day's first timestamp at or after the latest before it): that
        stream cut into one batch or a batch per day gives the same ledger (semantics.md 1.5), and
        a batch's fixed cost (~0.4 s at day 180 of W3) is paid once per range instead of per day.
        Days whose rows go back in time (late rows, processed after the rows before them: section
        3) are booked alone, as are days of other files than Parquet. Each day's input is recorded
        (batch_inputs): a day booked before, alone or in a range, is a no-op. If a range fails, it
        is booked again day by day, so that the days before the failing one are committed and the
        error is that day's, as with a batch per day."""
        out: list[tuple[list, RunReport]] = []
        pending: list[tuple[str | Path, dict]] = []
        latest = None
        say = kw.pop("progress", None)

        def run(group: list[tuple[str | Path, dict | None]]) -> None:
            """One batch of these days; its `progress` messages name them."""
            folders = [day for day, _ in group]
            name = Path(folders[0]).name + (f" .. {Path(folders[-1]).name}" if len(folders) > 1 else "")
            progress = (lambda msg: say(f"{name}: {msg}")) if say else None
            ranged = {"parts": [part for _, part in group]} if len(group) > 1 else {}
            events = folders if len(group) > 1 else folders[0]
            out.append((folders, self.run(programs, events, progress=progress, **ranged, **kw)))

        def book() -> None:
            nonlocal pending, latest
            group, pending, latest = pending, [], None
            if len(group) > 1:
                try:
                    return run(group)
                except Exception:  # noqa: BLE001 - re-raised by the day that fails, booked alone below
                    pass
            for day in group:
                run([day])
        for day in days:
            fp, sources = fingerprint([day])
            span = None if self._committed(fp) else time_span(day)
            if span is None:  # a day booked before (a no-op), or one that cannot join a range
                book()
                run([(day, None)])
                continue
            rows, first, last = span
            if pending and ((first is not None and latest is not None and first < latest)
                            or sum(part["rows_read"] for _, part in pending) + rows > RANGE_ROWS
                            or any(part["fingerprint"] == fp for _, part in pending)):  # the same day twice
                book()
            pending.append((day, {"fingerprint": fp, "sources": sources, "rows_read": rows}))
            latest = max((t for t in (latest, last) if t is not None), default=None)
        book()
        return out

    def _open(self) -> duckdb.DuckDBPyConnection | None:
        """The open ledger (None until a first batch made the file)."""
        if self.con is None and db.db_path(self.db_file).exists():
            self.con = db.connect(self.db_file, wait=self.wait, schema=False)
            db.defer_checkpoints(self.con)
        return self.con

    def _committed(self, fp: str) -> bool:
        return self._open() is not None and _committed(self.con, fp) is not None

    def __exit__(self, *exc) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None


def new_totals() -> dict:
    """A batch's counts before its first chunk (what `process_chunk` adds to)."""
    return dict.fromkeys(("rows_read", "completed", "failed", "duplicates", "rejected", "system_events",
                          "scheduled", "_emitted", *_OUTCOME_COUNTS), 0)


def process_chunk(con, rows: pl.DataFrame, catalog: Catalog, writer: BatchWriter, totals: dict, *, first: bool,
                  row_path: bool = False, step: Callable[[str], None] = lambda _msg: None,
                  system: bool = False, reach: datetime | None = None,
                  source_names: dict[str, str] | None = None) -> None:
    """Intake, evaluation and the ledger write of one chunk of the batch (the whole batch when
    it is not chunked; a firing instant's SYSTEM events in `perkflow maintain`, `system`); adds
    its counts to `totals`. The SYSTEM events due by `reach` (default: the chunk's last instant)
    are processed in it, merged with its rows at their instants (engine/emit.py)."""
    tiers.attach_since(con, catalog)  # before anything reads a lifecycle (and before the catalog is written)
    step("checking idempotency and participants")
    taken = intake(rows, catalog, con, system=system)
    if source_names:  # (after intake, which reads a quarantined row's raw again from its file)
        taken.events, taken.rejected = (f.with_columns(pl.col("source").replace(source_names))
                                        for f in (taken.events, taken.rejected))
    # Hold only what the rest needs: the read rows and intake's copy of the events are about
    # a third of a large batch's memory by the time the ledger is written.
    totals["rows_read"] += len(rows)
    del rows
    ev, taken.events = taken.events, None
    step("evaluating rules")
    if reach is None and len(ev):
        reach = ev["event_timestamp"].max()
    try:
        store, emitting = _opened(con, catalog, taken, reach, writer.batch_id, totals)
        try:
            outcome = execute(ev, catalog, store, row_path=row_path, emitting=emitting)
        except OutOfRange:
            # A set-wise path met a balance past DECIMAL(38, 18): the kernel fails the events that
            # would take it there (docs/decisions.md), on a fresh store (those paths staged state).
            step("a balance would pass DECIMAL(38, 18): evaluating the chunk one event at a time")
            store, emitting = _opened(con, catalog, taken, reach, writer.batch_id, totals)
            outcome = execute(ev, catalog, store, row_path=row_path, emitting=emitting, sequential=True)
    except pl.exceptions.ComputeError as e:
        if "overflow in decimal" not in str(e):
            raise
        # a sum past DECIMAL(38, 18) that no event's failure prevents (the writer's own sum
        # names the account when evaluation did not get there first)
        raise BalanceRangeError("a balance") from None
    totals["_emitted"] = emitting.emitted
    ev = ev.drop("event", "params").join(outcome.status, on="pos")  # the parsed payloads are done with
    if outcome.resolved:  # rows whose participant an action target created before their turn
        taken.enrollments = enrollments(ev.filter(pl.col("pre_code").is_null() | pl.col("pos").is_in(outcome.resolved)))
    completed = int((ev["status"] == "COMPLETED").sum())
    totals["completed"] += completed
    totals["failed"] += len(ev) - completed
    if outcome.system is not None:
        ev, taken.enrollments = _with_system(ev, outcome, taken.enrollments)
        totals["system_events"] += len(outcome.system)
    step("building the ledger stages")
    stages = _stages(ev, outcome, taken, writer.batch_id, store, writer.next_seq)
    stages |= (writer.catalog_stages(catalog) if first else {}) | store.state_frames(writer.batch_id, writer.tier_changes)
    stages["stage_payload_types"] = payload_types.stage(stages["stage_events"]["event_data_type"])
    totals["duplicates"] += taken.duplicates
    totals["rejected"] += len(taken.rejected)
    for k in _OUTCOME_COUNTS:
        totals[k] = max(totals[k], outcome.running_rounds) if k == "running_rounds" else totals[k] + getattr(outcome, k)
    del ev, outcome  # the stages hold what is written: free these before DuckDB takes its share
    step("writing the ledger")
    writer.write(stages)


def _opened(con, catalog: Catalog, taken, reach: datetime | None, batch_id: int, totals: dict) -> tuple[Store, Emitting]:
    """The store and SYSTEM-event queue a chunk's evaluation starts from."""
    store = Store.open(con)
    store.founders = groups.founders(catalog)
    store.add_new_participants(taken.participants)
    return store, Emitting(reach, batch_id, totals["_emitted"])


def drain(con, catalog: Catalog, as_of, writer: BatchWriter, totals: dict) -> None:
    """`perkflow maintain --as-of T` (and a run, up to the ledger's clock): the SYSTEM events
    waiting in `scheduled_events` that are due by T (and what they emit, if due by T too),
    processed as a chunk of the caller's batch that has no input rows; adds their count to
    `totals`."""
    if con.execute(statement("lookups.sql", "due_scheduled_count"), {"reach": as_of}).fetchall()[0][0]:
        process_chunk(con, no_rows(), catalog, writer, totals, first=False, system=True, reach=as_of)


def _with_system(ev: pl.DataFrame, outcome, enrolled: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The chunk's rows with the SYSTEM events it processed, and the enrolments with theirs (a
    SYSTEM event enrols its participant like any event: its target may not have been enrolled).
    A pair enrolled by both keeps the earlier instant, the one the kernel saw first (a BROADCAST
    reaches who was enrolled by its instant: docs/decisions.md)."""
    system = outcome.system
    rows = pl.concat([ev, system], how="diagonal_relaxed")
    passed = system.filter(pl.col("error_code").is_null() | (pl.col("error_code") != "program_inactive")).filter(
        pl.col("error_code").fill_null("") != "unknown_program")
    mine = (passed.filter(pl.col("subject_id").is_not_null())  # a program event enrols no one
            .select(participant_id="subject_id", program_id="program_uuid", enrolled_at="event_timestamp"))
    return rows, (pl.concat([enrolled, mine.cast(enrolled.schema)]).sort("enrolled_at", maintain_order=True)
                  .unique(["participant_id", "program_id"], keep="first", maintain_order=True))


_OUTCOME_COUNTS = ("vectorised", "row_evaluated", "sequential_events", "conditions_precomputed",
                   "conditions_sequential", "running_rounds")


class _Trace:
    """With PERKFLOW_TRACE set, each stage's wall seconds and the process's peak RSS so far on
    stderr (`[stage] <name> <wall>s cpu <all threads>s peak <MB> MB`: no leading spaces, so that the crash harness,
    which counts the writer's indented statement lines, does not count these)."""

    def __init__(self, t0: float):
        self.on = bool(os.environ.get("PERKFLOW_TRACE"))
        self.name, self.t, self.cpu = "start-up", t0, time.process_time()

    def mark(self, name: str) -> None:
        if not self.on:
            return
        now, cpu = time.perf_counter(), time.process_time()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"[stage] {self.name} {now - self.t:.2f}s cpu {cpu - self.cpu:.2f}s peak {peak:.0f} MB", file=sys.stderr)
        self.name, self.t, self.cpu = name, now, cpu


def _committed(con, fp: str) -> tuple | None:
    """The committed batch with these input bytes (None: none, or not a ledger yet)."""
    try:
        return next(iter(con.execute(statement("lookups.sql", "committed_batch"), {"fingerprint": fp}).fetchall()), None)
    except duckdb.CatalogException:  # no batches table yet: the schema is made inside the batch's transaction
        return None


def _no_op(done: tuple, t0: float) -> RunReport:
    batch_id, read, _duplicates, rejected = done
    return RunReport(batch_id=batch_id, already_committed=True, read=read, completed=0, failed=0,
                     duplicates=read - rejected, rejected=rejected, entries=0, seconds=time.perf_counter() - t0)


def _stages(ev: pl.DataFrame, outcome, taken, batch_id: int, store: Store, seq_from: int) -> dict[str, pl.DataFrame]:
    base = batch_id << ARRIVAL_BITS
    operations = ev.filter(pl.col("kind") == "operation").select(
        program_id="program_uuid", operation="operation", participant_id="subject_id", external_id="external_id",
        participant_ref="participant_id", idempotency_key="idempotency_key", timestamp="event_timestamp",
        arrival_seq=pl.col("arrival") + base, params="event_json", status="status", error_code="error_code",
        error_message="error_message", source="source", row_number="row_number",
    )
    ev_ops = ev
    ev = ev.filter(pl.col("kind") == "event")
    events = ev.select(
        program_id="program_uuid", idempotency_key="idempotency_key", participant_id="subject_id",
        external_id="external_id", participant_ref="participant_id", recipient_id="recipient_uuid",
        recipient_external_id="recipient_external_id", recipient_ref="recipient_id",
        event_timestamp="event_timestamp", arrival_seq=pl.col("arrival") + base, event_json="event_json",
        status="status", error_code="error_code", error_message="error_message", source="source",
        row_number="row_number", event_data_type="event_type",
    )
    keys = ev_ops.select("pos", "kind", "program_uuid", "idempotency_key", "event_timestamp")
    # stable and order-keeping: effects with equal keys (two LOT assets' due changes at one
    # event) keep the order the engine made them in, so their seqs are the same on every run
    # the kernel ranks its effects in processing order when SYSTEM events are interleaved
    first = "rank" if "rank" in outcome.effects.columns else "pos"
    leg = pl.col("leg").fill_null(0) if "leg" in outcome.effects.columns else pl.lit(0, pl.Int64)
    effects = (outcome.effects.join(keys, on="pos", maintain_order="left")
               .sort(first, "rule_order", "action_index", maintain_order=True)
               .with_columns(leg=leg).with_columns(_n=(pl.col("leg") == 0).cum_sum() - 1))  # entries, not moves
    timed = pl.col("source_name").is_not_null()  # lot expiry/maturity: not the event's own entries
    effects = effects.select(
        kind=pl.when(timed).then(pl.lit("lot")).otherwise(pl.col("kind")),
        source_name=pl.coalesce("source_name", pl.concat_str("kind", "program_uuid", "idempotency_key", separator=":")),
        program_id=pl.coalesce("program_id", "program_uuid"), rule_id="rule_id",
        rule_version="rule_version",
        action_index=pl.when(timed).then(pl.lit(TIMED_ACTION_INDEX, pl.Int64)).otherwise("action_index"),
        action_type="action_type", asset_id="asset_id", amount="amount",
        allow_negative="allow_negative", description="description",
        effective_at=pl.coalesce("effective_at", "event_timestamp"),
        seq=pl.col("_n").cast(pl.Int64) + seq_from, from_type="from_type", from_id="from_id",
        from_bucket="from_bucket", to_type="to_type", to_id="to_id", to_bucket="to_bucket",
        reference_id="reference_id", leg="leg",
    )
    evaluations = outcome.evaluations.join(keys, on="pos").select(
        program_id="program_uuid", idempotency_key="idempotency_key", rule_id="rule_id",
        rule_version="rule_version", outcome="outcome", message="message")
    # participants created by action targets during the kernel run join those of intake, and
    # replace those intake would have created at a later row
    participants = taken.participants.select("id", "external_id", "created_at")
    if store.created:
        by_target = pl.DataFrame([(p.id, p.external_id, p.created_at) for p in store.created],
                                 schema=participants.schema, orient="row")
        participants = pl.concat([participants.join(by_target, on="id", how="anti"), by_target])
    scheduled = {}
    if outcome.system is not None:
        scheduled = {"stage_scheduled": outcome.scheduled,
                     "stage_scheduled_done": outcome.system.select(program_id="program_uuid",
                                                                   idempotency_key="idempotency_key")}
    return scheduled | {
        "stage_events": events, "stage_effects": effects, "stage_evaluations": evaluations,
        "stage_rejected": taken.rejected, "stage_participants": participants,
        "stage_enrollments": _with_created(taken.enrollments, store), "stage_operations": operations,
    }


def _with_created(enrolled: pl.DataFrame, store: Store) -> pl.DataFrame:
    """The chunk's enrolments and those of the participants its action targets created, each in
    the program of the event that created it, at its creation (semantics.md 5.1: "create and
    enrol"); an enrolment by a row at an earlier instant comes first."""
    if not store.created:
        return enrolled
    created = pl.DataFrame([(p.id, store.created_in[p.id], p.created_at) for p in store.created],
                           schema=enrolled.schema, orient="row")
    return (pl.concat([enrolled, created]).sort("enrolled_at", maintain_order=True)
            .unique(["participant_id", "program_id"], keep="first", maintain_order=True))
