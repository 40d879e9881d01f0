"""The `perkflow` command line.

Exit codes (semantics.md 13): 0 success, even when some events FAILED by business rules;
2 invalid input or configuration, nothing written; 1 unexpected internal error, nothing
committed; 3 the database is in use by another run; 141 the reader of the output closed it
early (as SIGPIPE would).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import re
import sys
import traceback
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

from engine.errors import DatabaseBusyError, InputError, LedgerBrokenError


class _Console:
    """A rich Console made on first use. Importing rich costs ~50 ms CPU, a tenth of a small
    `perkflow run`'s start-up, and a run whose output is piped or that prints `--json` needs none.

    markup=False: what the consoles print is the user's text (file paths, rule names, keys,
    external ids, messages that quote them), and rich markup would read `[promo]` in a rule name
    as a style (dropping it from the message) or `[/x]` as a closing tag (a MarkupError: exit 1
    with a trace instead of the exit-2 message). Styled words go in as `Text` (`_styled`)."""

    def __init__(self, stderr: bool):
        self._stderr, self._console = stderr, None

    def __getattr__(self, name: str):
        if self._console is None:
            from rich.console import Console

            if self._stderr:  # as wide as stdout's console
                self._console = Console(stderr=True, width=None if console.is_terminal else 200, markup=False)
            else:
                self._console = Console(markup=False)
                if not self._console.is_terminal:  # piped output: wide enough for the counts table, no wrapping
                    self._console = Console(width=200, markup=False)
        return getattr(self._console, name)


console = _Console(stderr=False)
err_console = _Console(stderr=True)


def _styled(word: str, style: str, rest: str):
    """`word` in `style`, then `rest` as plain text (never read as markup)."""
    from rich.text import Text

    return Text.assemble((word, style), " " + rest if rest else "")


def _table(title: str | None = None):
    from rich.table import Table

    return Table(title=title)


def _status(message: str):
    """A spinner saying `message` (and its `update`s) while the command works, on an
    interactive terminal only: rich draws nothing of a status on a pipe or a file either (it is
    transient), and this way a piped run does not import rich for it."""
    if not sys.stdout.isatty():
        return contextlib.nullcontext(SimpleNamespace(update=lambda _msg: None))
    return console.status(message)


#: Has this process frozen its imported modules' objects (`_imports`)?
_frozen = False


@contextlib.contextmanager
def _imports():
    """Around a command's imports of the engine (Polars, DuckDB, Arrow, pydantic, lark: some
    120,000 tracked objects that live as long as the process): no garbage collection while
    they are made, then `gc.freeze()` them into the permanent generation, once per process.
    The collector still sees every object the command makes; it no longer walks the modules'
    objects again in each older-generation collection and at exit, which took ~0.2 s CPU of a
    small run's ~1.6 s. (Freezing later, in a process that runs many commands, would also hide
    their garbage from it: hence once.)"""
    global _frozen
    if _frozen or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        _frozen = True
        gc.enable()


BUCKETS = ("AVAILABLE", "HELD", "DEFERRED")
REPORTS = ("ledger_summary", "balances", "program_activity", "participant_statement", "expiration_schedule",
           "transfers", "reward_status")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except InputError as e:
        err_console.print(_styled("error:", "bold red", str(e)), highlight=False)
        return 2
    except DatabaseBusyError as e:
        err_console.print(_styled("error:", "bold red", str(e)), highlight=False)
        return 3
    except LedgerBrokenError as e:
        err_console.print(_styled("error:", "bold red", str(e)), highlight=False)
        return 4
    except FileNotFoundError as e:
        err_console.print(_styled("error:", "bold red", str(e)), highlight=False)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted; nothing was committed")
        return 130
    except BrokenPipeError:
        # The reader went away (`perkflow report ... --json | head`): not an internal error. Point
        # stdout at /dev/null so the interpreter's last flush does not raise again, and exit as a
        # process ended by SIGPIPE does (128 + 13), without a trace to report.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except BaseException as e:  # noqa: BLE001 - the last line of defence (pyo3 panics are BaseException)
        if isinstance(e, (SystemExit, GeneratorExit)):
            raise
        if _out_of_memory(e, args.command):
            return 1
        if (code := _storage_error(e, args.command)) is not None:
            return code
        err_console.print(_styled("internal error", "bold red", "(nothing was committed); please report this trace:"))
        err_console.print(traceback.format_exc(), highlight=False)
        return 1


#: Commands that only read the ledger: running out of memory in them changed nothing.
READ_ONLY = ("verify", "report", "sql", "balances", "statement", "explain")
#: What else a writing command can do about it, besides a higher cap.
SMALLER = {"run": " or run the input as several smaller batches",
           "maintain": " or maintain in steps (an earlier --as-of first: what it does is not done again)"}


def _out_of_memory(e: BaseException, command: str) -> bool:
    """DuckDB ran out of its cap (engine/ledger/db.py): not a bug to report but work whose
    unevictable memory (in a batch, a ledger made before its large tables lost their unique
    indexes, or a very large transaction's undo data; in a read, an operator DuckDB cannot spill)
    outgrew it. Says what to do, in the terms of the command; True if it was that."""
    duckdb = sys.modules.get("duckdb")  # (not imported: not a DuckDB error)
    if duckdb is None or not isinstance(e, duckdb.OutOfMemoryException):
        return False
    from engine.ledger.db import MEMORY_LIMIT
    said = str(e).splitlines()[0]  # it names the cap it ran into ("95.2 MiB/95.3 MiB used")
    if command in READ_ONLY:
        err_console.print(_styled("error:", "bold red",
                                  f"DuckDB ran out of its memory cap; nothing was changed (`perkflow "
                                  f"{command}` only reads the ledger). Raise the cap and run it again, e.g. with "
                                  f"PERKFLOW_DUCKDB_MEMORY=4GB. DuckDB said: {said}"), highlight=False)
    else:
        err_console.print(_styled("error:", "bold red",
                                  f"DuckDB ran out of its memory cap; nothing was committed. Raise the cap "
                                  f"(PERKFLOW_DUCKDB_MEMORY, default {MEMORY_LIMIT}; e.g. PERKFLOW_DUCKDB_MEMORY=4GB)"
                                  f"{SMALLER.get(command, '')}. DuckDB said: {said}"), highlight=False)
    return True


#: What the OS says (through DuckDB) when the database's disk or the file's size limit is full, and
#: when the file cannot be opened for writing.
STORAGE_FULL = ("No space left on device", "Disk quota exceeded", "File too large")
STORAGE_DENIED = ("Permission denied", "Operation not permitted", "Read-only file system")


def _storage_error(e: BaseException, command: str) -> int | None:
    """The database file could not be written: a disk (or quota, or file size limit) full while a
    batch was written, or a file this process may not write. Not a bug to report (it was reported
    as an internal error with a trace): says what happened and what to do. DuckDB gives up the
    transaction, so the ledger is as before the command (tests/e2e/test_outsider_integrity4.py);
    running it again once there is room is safe either way, a committed batch being a no-op.
    Returns the exit code (1: the run stopped, as for running out of memory; 2: a --db that
    cannot be opened for writing, a configuration error), or None if it was not that."""
    duckdb = sys.modules.get("duckdb")
    if duckdb is None or not isinstance(e, duckdb.Error):
        return None
    # the error and those it was raised in handling of: a commit that failed to write its WAL
    # leaves no transaction, and the rollback after it fails with "no transaction is active"
    chain: list[BaseException] = []
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    text = "\n".join(str(x) for x in chain)
    said = text.strip().splitlines()
    if full := next((s for s in STORAGE_FULL if s in text), None):
        written = "nothing was changed" if command in READ_ONLY else "nothing was committed"
        line = next(s for s in said if full in s).strip()
        err_console.print(_styled("error:", "bold red",
                                  f"no room to write ({full}: the disk, a quota or a file size limit is full): DuckDB "
                                  f"could not write the database or its temp folder; {written}. Free space (or raise "
                                  f"the limit) and run it again. DuckDB said: {line}"), highlight=False)
        return 1
    if "Cannot open file" in text and (denied := next((s for s in STORAGE_DENIED if s in text), None)):
        err_console.print(_styled("error:", "bold red",
                                  f"the database cannot be opened for writing ({denied}); nothing was written. "
                                  f"Check the file's and its folder's permissions, or pass --db another file. "
                                  f"DuckDB said: {said[0]}"), highlight=False)
        return 2
    return None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="perkflow",
        description="Loyalty and rewards programs as a batch pipeline: CEL rules over an exact, "
                    "idempotent double-entry ledger in DuckDB.",
        epilog="Database: --db, else $PERKFLOW_DB, else data/warehouse.duckdb. "
               "Exit codes: 0 ok, 1 internal error, 2 invalid input, 3 database busy, 4 verification failed.")
    sub = p.add_subparsers(title="commands", metavar="COMMAND", dest="command")

    def db_arg(sp):
        sp.add_argument("--db", help="DuckDB file (default: $PERKFLOW_DB or data/warehouse.duckdb)")

    r = sub.add_parser("run", help="process a batch of events into the ledger",
                       description="Process event files (Parquet file, folder or glob) against program files, "
                                   "in one transaction. Re-running the same input changes nothing.")
    r.add_argument("--programs", required=True, help="program file or folder of YAML/JSON program files")
    # each may be given more than once (read in that order): the last one alone was read, the
    # others dropped without a word
    r.add_argument("--events", action="append",
                   help="event file, folder (recursive, hive partitions) or glob; may be repeated")
    r.add_argument("--operations", action="append",
                   help="operation file(s) (semantics.md 2.3), merged into the same ordered stream; may be repeated")
    db_arg(r)
    r.add_argument("--row-path", action="store_true", help="evaluate every rule per row (slow; for checking)")
    r.add_argument("--chunk-rows", type=int, metavar="N",
                   help="process a large batch of event and operation Parquet N rows at a time in time order (files out of "
                        "time order are first sorted through TMPDIR), in its one transaction, so memory follows N, "
                        "not the batch (default 160000, 62500 when a program "
                        "reads or writes state; PERKFLOW_CHUNK_ROWS)")
    r.add_argument("--wait", type=float, default=30.0, help="seconds to wait for another run to finish (default 30)")
    r.add_argument("--json", action="store_true", help="print the counts as JSON")
    r.set_defaults(func=_cmd_run)

    bf = sub.add_parser("backfill", help="book a folder of daily folders in order, as the Dagster ledger asset does",
                        description="Book each folder of --days (e.g. date=2025-01-01/, date=2025-01-02/, ...) in name "
                                    "order, as the Dagster `ledger` asset books a range: consecutive days whose rows "
                                    "follow one another in time are one batch (up to 250,000 rows), which gives the "
                                    "ledger a batch per day gives; a day booked before, alone or in a range, is a "
                                    "no-op; if a day fails, the days before it stay committed. Folders without event "
                                    "files are skipped.")
    bf.add_argument("--programs", required=True, help="program file or folder of YAML/JSON program files")
    bf.add_argument("--days", required=True, help="folder whose subfolders are the days, booked in name order")
    db_arg(bf)
    bf.add_argument("--wait", type=float, default=30.0, help="seconds to wait for another run to finish (default 30)")
    bf.add_argument("--json", action="store_true",
                    help="print one JSON line per batch (per day for days booked before)")
    bf.set_defaults(func=_cmd_backfill)

    o = sub.add_parser("op", help="apply one operation (adjust, hold, fund, transfer, ...) through the ledger",
                       description="One direct operation (semantics.md 2.3), idempotent by --key, processed exactly "
                                   "like a row of an --operations file. Example: perkflow op adjust --program shop "
                                   "--key fix-1 --external-id a --param type=CREDIT --param asset=PTS --param amount=5")
    o.add_argument("operation", help="operation name, e.g. adjust, hold, release, forfeit, void_hold, fund, burn, redeem, "
                                     "transfer, add_group_member")
    o.add_argument("--programs", help="program files (default: the programs the ledger's runs stored; for a ledger "
                                      "that stores none, data/programs)")
    o.add_argument("--program", required=True, help="program key")
    o.add_argument("--key", required=True, help="idempotency key")
    o.add_argument("--external-id", help="the participant (omit for fund, burn and the group_* balance operations; "
                                         "optional for reverse_redemption)")
    o.add_argument("--participant-id", help="the participant by perkflow's id, as an operations file's participant_id "
                                            "(Scrip's endpoints name it by id)")
    o.add_argument("--timestamp", help="RFC 3339 instant (default: now)")
    o.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a params field (repeatable)")
    o.add_argument("--params", help="params as a JSON object (merged under --param)")
    db_arg(o)
    o.add_argument("--json", action="store_true")
    o.set_defaults(func=_cmd_op)

    m = sub.add_parser("maintain", help="fire automations and write lot maturities and expiries, tier lifecycle "
                                        "reviews, tier expiries and counter resets due up to --as-of, for everyone",
                       description="Time-driven changes due at or before --as-of, at the instants they were due: "
                                   "automation firings and waiting SCHEDULE_EVENT events (SYSTEM events through the "
                                   "rules of the programs the runs stored), then lot maturities and expiries, tier "
                                   "reviews, tier expiries and counter resets. "
                                   "Idempotent: a second run with the same or an earlier --as-of finds nothing due.")
    m.add_argument("--as-of", required=True, help="RFC 3339 instant, e.g. 2026-01-01T00:00:00Z")
    m.add_argument("--programs", help="program files for the SYSTEM events due (automations, SCHEDULE_EVENT), which "
                                      "go through the rules; default: the ones the last runs stored")
    db_arg(m)
    m.add_argument("--wait", type=float, default=30.0)
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=_cmd_maintain)

    rp = sub.add_parser("replay", help="rebuild a ledger from the inputs another one stored, in pure timestamp order",
                        description="A full rebuild into a fresh ledger (--db, which must not exist) of every event and "
                                    "operation the ledger --from stored, as one batch ordered by timestamp alone "
                                    "(semantics.md 3): for backfills and simulations, e.g. with changed --programs. "
                                    "The source is only read. SYSTEM events are emitted again by the rules; "
                                    "rejected rows and maintenance runs are not replayed.")
    rp.add_argument("--from", dest="source", required=True, metavar="LEDGER", help="the DuckDB file to replay")
    rp.add_argument("--programs", help="program files to replay under (default: the latest the source stored)")
    db_arg(rp)
    rp.add_argument("--json", action="store_true", help="print the counts as JSON")
    rp.add_argument("--unverified", action="store_true",
                    help="rebuild even from a source that fails `perkflow verify` (by default: exit 4, nothing written)")
    rp.set_defaults(func=_cmd_replay)

    v = sub.add_parser("validate", help="check program files without running anything")
    v.add_argument("--programs", required=True)
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=_cmd_validate)

    b = sub.add_parser("balances", help="show balances per participant and asset")
    db_arg(b)
    b.add_argument("--external-id", help="only this participant")
    b.add_argument("--asset", help="only this asset symbol")
    b.add_argument("--limit", type=int, default=None,
                   help=f"rows to show (0 for all; default: {BALANCES_TABLE_ROWS} in the table, all with --json)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=_cmd_balances)

    st = sub.add_parser("statement", help="one participant's postings of one asset, with opening, running and closing balances",
                        description="Like Scrip's participant statement: the postings of the entries effective in "
                                    "[--from, --to) in ledger order, each with the running balance after its entry; the "
                                    "opening balance is the balance from every entry effective before --from, the closing "
                                    "one from every entry effective before --to (balances reflect the whole history).")
    db_arg(st)
    st.add_argument("--external-id", required=True, help="the participant")
    st.add_argument("--asset", required=True, help="asset symbol")
    st.add_argument("--bucket", choices=BUCKETS, help="only this bucket (default: all three, summed)")
    st.add_argument("--from", dest="start", metavar="INSTANT", help="RFC 3339, inclusive (default: the first entry)")
    st.add_argument("--to", dest="end", metavar="INSTANT", help="RFC 3339, exclusive (default: after the last entry)")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_cmd_statement)

    ep = sub.add_parser("explain-plan", help="show, per rule, the path it takes (vectorised, row, sequential) and why")
    ep.add_argument("--programs", required=True)
    ep.add_argument("--json", action="store_true")
    ep.set_defaults(func=_cmd_explain_plan)

    ex = sub.add_parser("explain", help="show every rule's outcome for one stored event")
    ex.add_argument("event", help="event id or idempotency key")
    ex.add_argument("--programs", help="program files (default: the programs the ledger's runs stored)")
    db_arg(ex)
    ex.add_argument("--json", action="store_true")
    ex.set_defaults(func=_cmd_explain)

    vf = sub.add_parser("verify", help="recompute the hash chain and check every ledger invariant",
                        description="Exit 0 when everything holds, 4 at the first violation (reported with its location).")
    db_arg(vf)
    vf.add_argument("--json", action="store_true")
    vf.add_argument("--expect-root", metavar="HASH",
                    help="a batch root_hash kept outside the ledger (verify prints the head's): exit 4 unless the "
                         "verified chain still reaches it (the last batches removed or rewritten)")
    vf.set_defaults(func=_cmd_verify)

    q = sub.add_parser("sql", help="run an ad-hoc read-only SQL query on the ledger")
    q.add_argument("query")
    db_arg(q)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_cmd_sql)

    rep = sub.add_parser("report", help="print a report view: " + ", ".join(REPORTS))
    rep.add_argument("name", choices=REPORTS)
    db_arg(rep)
    fmt = rep.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")
    rep.set_defaults(func=_cmd_report)
    g = sub.add_parser("generate", help="write a reference workload (W1, W2, W3): seeded Parquet events and its programs",
                       description="Deterministic events and program files for the workloads of design/performance.md: "
                                   "DIR/programs/*.yaml and DIR/events/ (W3: DIR/events/date=YYYY-MM-DD/part.parquet). "
                                   "The same arguments give byte-identical files.")
    g.add_argument("--workload", required=True, type=str.upper, choices=("W1", "W2", "W3"))
    g.add_argument("--events", type=int, default=100_000, help="number of events (default 100000)")
    g.add_argument("--participants", type=int, help="number of participants (default events / 10)")
    g.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--json", action="store_true", help="print the manifest as JSON")
    g.set_defaults(func=_cmd_generate)

    bn = sub.add_parser("bench", help="benchmark the reference workloads against the baselines, in one run",
                        description="Times W1, W2, W3 end to end (fresh temporary databases, one child process each, "
                                    "peak RSS per child), the W1 no-op re-run, the hand-written DuckDB SQL of W1 (whose "
                                    "balances must equal W1's), the per-row cel-python baseline and the start-up of "
                                    "`perkflow run`. Prints one table of figures and ratios.")
    bn.add_argument("--events", type=int, default=200_000, help="W1 events (default 200000)")
    bn.add_argument("--stateful-events", type=int,
                    help="W2/W3 events (default: min(--events, 20000), which keeps W3's 365 daily files short)")
    bn.add_argument("--participants", type=int, help="participants (default events / 10)")
    bn.add_argument("--workloads", default="W1,W2,W3", help="comma-separated subset of W1,W2,W3 (default all)")
    bn.add_argument("--baseline-sample", type=int, default=2_000,
                    help="events the per-row cel-python baseline evaluates (default 2000)")
    bn.add_argument("--seed", type=int, default=42)
    bn.add_argument("--workdir", help="keep inputs and databases here (default: a temporary folder, removed)")
    bn.add_argument("--json", nargs="?", const="-", metavar="FILE",
                    help="print the results as JSON instead of the table; with FILE, write them there and "
                         "print the table too")
    bn.set_defaults(func=_cmd_bench)
    return p


def _cmd_run(args) -> int:
    with _imports():
        from engine.run import run_batch

    with _status("starting ...") as status:
        report = run_batch(args.programs, args.events, args.db, operations=args.operations,
                           row_path=args.row_path, wait=args.wait, chunk_rows=args.chunk_rows,
                           progress=lambda msg: status.update(msg + " ..."))
    return _show_report(report, args.json)


def _cmd_backfill(args) -> int:
    with _imports():
        from engine.io.files import expand
        from engine.run import Backfill

    def holds_events(folder: Path) -> bool:  # what `run` would read from it (engine/io/files.py)
        try:
            return bool(expand(folder))
        except InputError:
            return False

    root = Path(args.days)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder; --days names a folder whose subfolders are the days")
    days = sorted(d for d in root.iterdir() if d.is_dir() and holds_events(d))
    if not days:
        raise InputError(f"{root}: no subfolder holds event files (*.parquet, *.ndjson, *.csv)")
    with _status(f"booking {len(days)} days ...") as status, Backfill(args.db, wait=args.wait) as backfill:
        booked = backfill.run_days(args.programs, days, progress=lambda msg: status.update(msg + " ..."))
    rows = [{"days": [d.name for d in folders]} | report.as_dict() for folders, report in booked]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    batches = len({r["batch_id"] for r in rows})
    t = _table(title=f"{len(days)} days in {batches} batch{'es' if batches != 1 else ''}")
    for col in ("days", "batch", "read", "completed", "failed", "duplicates", "rejected", "entries", "seconds"):
        t.add_column(col, justify="left" if col == "days" else "right")
    for r in _runs_of_no_ops(rows):
        names = r["days"][0] + (f" .. {r['days'][-1]} ({len(r['days'])})" if len(r["days"]) > 1 else "")
        t.add_row(names, f"{r['batch_id']}" + (" (no-op)" if r["already_committed"] else ""),
                  *(str(r[k]) for k in ("read", "completed", "failed", "duplicates", "rejected", "entries")),
                  f"{r['seconds']:.2f}")
    console.print(t)
    return 0


def _runs_of_no_ops(rows: list[dict]) -> list[dict]:
    """Consecutive days found booked in one batch as one row (a backfill run again lists each)."""
    out: list[dict] = []
    for r in rows:
        last = out[-1] if out else None
        if last and r["already_committed"] and last["already_committed"] and r["batch_id"] == last["batch_id"]:
            last = out[-1] = last | {"days": last["days"] + r["days"], "seconds": last["seconds"] + r["seconds"]}
            for k in ("read", "completed", "failed", "duplicates", "rejected", "entries"):
                last[k] += r[k]
        else:
            out.append(dict(r))
    return out


def _show_report(report, as_json: bool) -> int:
    """A batch's counts (`run`, `replay`): one JSON line, or a table."""
    if as_json:
        print(json.dumps(report.as_dict()))
        return 0
    if report.already_committed:
        console.print(f"already committed as batch {report.batch_id}: nothing to do "
                      f"({report.duplicates} duplicates, {report.rejected} rejected)")
    t = _table(title=f"batch {report.batch_id}" + (" (no-op)" if report.already_committed else ""))
    for col in ("read", "completed", "failed", "duplicates", "rejected", "entries", "seconds", "events/s"):
        t.add_column(col, justify="right")
    t.add_row(*(str(x) for x in (report.read, report.completed, report.failed, report.duplicates,
                                 report.rejected, report.entries)),
              f"{report.seconds:.2f}", f"{report.events_per_second:,.0f}")
    console.print(t)
    if report.system_events or report.scheduled:
        console.print(f"SYSTEM events (SCHEDULE_EVENT, BROADCAST): {report.system_events} processed, "
                      f"{report.scheduled} waiting in scheduled_events")
    return 0


def _cmd_replay(args) -> int:
    with _imports():
        from engine.replay import replay

    with _status("starting ...") as status:
        report = replay(args.source, args.db, args.programs, progress=lambda msg: status.update(msg + " ..."),
                        unverified=args.unverified)
    return _show_report(report, args.json)


def _cmd_op(args) -> int:
    import tempfile
    from datetime import datetime, timezone
    from pathlib import Path

    with _imports():
        import polars as pl

        from engine.run import run_batch

    from engine.io.events import DuplicateKey, unique_object
    try:
        params = json.loads(args.params, object_pairs_hook=unique_object) if args.params else {}
    except json.JSONDecodeError as e:
        raise InputError(f"--params is not valid JSON: {e}") from None
    except DuplicateKey as e:  # as in a file's params (docs/decisions.md "Input")
        raise InputError(f"--params: {e}") from None
    if not isinstance(params, dict):
        raise InputError("--params must be a JSON object")
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--param {item!r}: write it as NAME=VALUE")
        params[name] = value
    # Without --timestamp an operation happens now, unless its key was applied before: then it is
    # a retry, and the stored instant makes it the duplicate it is (semantics.md 4), not a conflict.
    when = args.timestamp or _stored_operation_time(args) or datetime.now(timezone.utc).isoformat()
    row = pl.DataFrame({"operation": [args.operation], "program_id": [args.program], "idempotency_key": [args.key],
                        "external_id": [args.external_id], "participant_id": [args.participant_id],
                        "timestamp": [when], "params": [json.dumps(params)]},
                       schema={c: pl.String for c in ("operation", "program_id", "idempotency_key", "external_id",
                                                      "participant_id", "timestamp", "params")})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "operation.parquet"
        row.write_parquet(path)
        # like maintain, explain and replay: the ledger's own programs unless --programs is given
        # (the bundled sample's files used to be loaded into any ledger, and the operation rejected)
        programs = args.programs or _stored_programs(args) or "data/programs"
        report = run_batch(programs, None, args.db, operations=path,
                           source_names={str(path): f"perkflow op {args.operation}"})
    from engine.ledger import db
    from engine.ledger.sqlfiles import statement

    con = db.connect(args.db, read_only=True)
    try:
        # the one row was quarantined: by this run, or (a no-op re-run of the same command) by the
        # batch that committed it; either way its reason, not the stored outcome of its key
        if report.rejected:
            reason, message = con.execute(statement("lookups.sql", "rejected_in_batch"),
                                          {"batch_id": report.batch_id}).fetchall()[0]
            status, code, message, entries, redemption = "REJECTED", reason, message, [], None
        else:
            status, code, message, entries, redemption = con.execute(statement("lookups.sql", "operation_status"),
                                                         {"program": args.program, "key": args.key}).fetchall()[0]
    finally:
        con.close()
    duplicate = bool(report.duplicates)
    if args.json:
        print(json.dumps({"operation": args.operation, "key": args.key, "status": status, "error_code": code,
                          "error_message": message, "duplicate": duplicate, "journal_entry_ids": entries or []}
                         | ({"redemption_id": redemption} if redemption else {})))
    else:
        console.print(f"{args.operation} {args.key}: {status}" + (f" {code}: {message}" if code else "")
                      + (" (duplicate: already applied, nothing changed)" if duplicate else ""))
    return 0


def _stored_programs(args):
    """The programs the ledger `--db` stored (program_documents), compiled under the names of the
    files they were read from (so that a run keeps recording those files as their source); None
    if there is no ledger yet, or it stores none (a ledger from before program_documents)."""
    import duckdb

    from engine.catalog.load import compile_documents
    from engine.ledger import db
    from engine.ledger.sqlfiles import statement

    if not db.db_path(args.db).exists():
        return None
    con = db.connect(args.db, read_only=True)
    try:
        rows = con.execute(statement("lookups.sql", "program_documents_with_sources")).fetchall()
    except duckdb.CatalogException:
        return None
    finally:
        con.close()
    if not rows:
        return None
    return compile_documents([(source or f"stored program {key}", json.loads(document)) for key, document, source in rows])


def _stored_operation_time(args) -> str | None:
    from engine.ledger import db
    from engine.ledger.sqlfiles import statement

    if not db.db_path(args.db).exists():
        return None
    con = db.connect(args.db, read_only=True)
    try:
        rows = con.execute(statement("lookups.sql", "operation_timestamp"),
                           {"program": args.program, "key": args.key}).fetchall()
    finally:
        con.close()
    return rows[0][0].isoformat() if rows else None


def _cmd_maintain(args) -> int:
    with _imports():
        from engine.maintain import maintain

    as_of = _instant("--as-of", args.as_of)
    report = maintain(as_of, args.db, wait=args.wait, programs=args.programs)
    if args.json:
        print(json.dumps({"batch_id": report.batch_id, "as_of": report.as_of.isoformat(), "lots_due": report.lots_due,
                          "entries": report.entries, "tier_changes": report.tier_changes,
                          "counter_resets": report.counter_resets, "counter_rollovers": report.counter_rollovers,
                          "automation_events": report.fired,
                          "system_event_entries": report.system_event_entries, "system_events": report.system_events,
                          "read": report.fired, "completed": report.completed, "failed": report.failed,
                          "duplicates": report.duplicates, "rejected": report.rejected,
                          "seconds": round(report.seconds, 3)}))
    elif report.batch_id is None:
        console.print(f"nothing due up to {report.as_of.isoformat()}")
    else:
        console.print(f"batch {report.batch_id}: {report.fired} automation events and {report.system_events} "
                      f"scheduled SYSTEM events ({report.system_event_entries} entries of their rules); "
                      f"{report.lots_due} lots matured or expired ({report.entries} entries), "
                      f"{report.tier_changes} tier changes, {report.counter_resets} entities' counter resets and "
                      f"{report.counter_rollovers} participants' counter rollovers due up "
                      f"to {report.as_of.isoformat()} ({report.seconds:.2f}s); automation events {report.fired} read: "
                      f"{report.completed} completed, {report.failed} failed, {report.duplicates} duplicates, "
                      f"{report.rejected} rejected")
    return 0


def _cmd_validate(args) -> int:
    from engine.catalog import load_catalog

    catalog = load_catalog(args.programs)
    summary = {p.key: {"rules": len(p.rules), "active_rules": len(p.active_rules)} for p in catalog.programs.values()}
    if args.json:
        print(json.dumps({"valid": True, "programs": summary, "assets": sorted(catalog.assets),
                          "groups": sorted(catalog.groups)}))
    else:
        for key, s in summary.items():
            console.print(_styled("ok", "green", f"{key}: {s['rules']} rules ({s['active_rules']} active)"))
        console.print(f"assets: {', '.join(sorted(catalog.assets))}")
        if catalog.groups:
            console.print(f"groups: {', '.join(sorted(catalog.groups))}")
    return 0


def _cmd_verify(args) -> int:
    with _imports():
        from engine.ledger import db
        from engine.verify import verify

    if args.expect_root is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", args.expect_root.strip()):
        raise InputError(f"--expect-root {args.expect_root!r}: not a root hash (64 hex digits, a batches.root_hash "
                         "as `perkflow verify` prints it)")
    con = db.connect(args.db, read_only=True)
    try:
        db.limit_memory(con)
        report = verify(con, expect_root=args.expect_root)
    finally:
        con.close()
    if args.json:
        print(json.dumps({"ok": report.ok, "checked": report.checked, "head": report.head,
                          "violations": [{"check": v.check, "meaning": v.meaning,
                                          "rows": [dict(zip(v.columns, r)) for r in v.rows]}
                                         for v in report.violations]}, default=_json_default))
    elif report.ok:
        console.print(_styled("ok:", "green", f"{len(report.checked)} checks hold ({', '.join(report.checked)})"))
    else:
        first = report.violations[0]
        err_console.print(_styled("verification failed:", "bold red", f"{first.check}: {first.meaning}"))
        _show(args, first.columns, [_trim(r) for r in first.rows], title=f"first violations of {first.check}")
        for v in report.violations[1:]:
            err_console.print(f"also failing: {v.check}")
    if not args.json and report.head:
        console.print(f"head: batch {report.head['batch_id']}, root_hash {report.head['root_hash']} (kept elsewhere, "
                      "`perkflow verify --expect-root` checks that the chain still reaches it)")
    return 0 if report.ok else 4


def _cmd_explain_plan(args) -> int:
    from engine.catalog import load_catalog
    from engine.plan import needs_kernel, plan_program, program_unsupported

    catalog = load_catalog(args.programs)
    plans = [p for prog in catalog.programs.values() for p in plan_program(prog)]
    if args.json:
        print(json.dumps([p.__dict__ for p in plans]))
        return 0
    t = _table(title="rule plan")
    for c in ("program", "order", "rule", "path", "why"):
        t.add_column(c)
    for p in plans:
        t.add_row(p.program, str(p.order), p.rule, p.path, p.reason)
    console.print(t)
    for prog in catalog.programs.values():
        why_not = program_unsupported(prog)
        mode = ("set-based" if not needs_kernel(prog) else
                "running-state path (set-wise, to a fixed point)" if why_not is None else
                f"sequential kernel ({why_not})")
        console.print(f"{prog.key}: {mode}")
    return 0


def _cmd_explain(args) -> int:
    from engine.catalog import load_catalog
    from engine.explain import explain
    from engine.ledger import db

    catalog = load_catalog(args.programs) if args.programs else None
    con = db.connect(args.db, read_only=True)
    try:
        result = explain(con, catalog, args.event)
    except LookupError as e:
        raise InputError(str(e)) from None
    finally:
        con.close()
    if args.json:
        print(json.dumps(result, default=str))
        return 0
    console.print(f"event {result['event_id']} ({result['program']}/{result['idempotency_key']}, "
                  f"{result['external_id']}, {result['event_timestamp']}): {result['status']}"
                  + (f" {result['error_code']}: {result['error_message']}" if result["error_code"] else ""))
    t = _table()
    for c in ("order", "rule", "status", "recorded outcome", "condition now"):
        t.add_column(c)
    for r in result["rules"]:
        t.add_row(str(r["order"]), r["rule"], r["status"], r["recorded"] or r["not_run"] or "not matched",
                  r["re_evaluated"] + _version_note(r))
    console.print(t)
    for e in result["entries"]:
        console.print(f"  entry: {e['rule']} {e['type']} {e['amount']}")
    for c in result["tier_changes"]:
        console.print(f"  tier: {c['tier']} of {c['external_id']}: {c['from'] or '(none)'} -> {c['to'] or '(none)'} ({c['reason']})")
    if result["emitted_by"]:
        console.print(f"  SYSTEM event emitted by {result['emitted_by']}")
    for e in result["emitted"]:
        console.print(f"  emitted: {e['event_name']} due {e['due']}: {e['status']} ({e['idempotency_key']})")
    return 0


def _version_note(rule: dict) -> str:
    """Which rule version `explain` re-evaluated, when it is not the files' one."""
    if "rule_version" not in rule:
        return ""
    if rule["file_rule_version"] is None:
        return f" (by rule version {rule['rule_version']}; no longer in the program files)"
    return f" (by rule version {rule['rule_version']}; the file's is {rule['file_rule_version']})"


def _query(args, sql: str, params: list | dict | None = None):
    from engine.ledger import db

    con = db.connect(args.db, read_only=True)
    try:
        cur = con.execute(sql, params or [])
        if cur is None:  # DuckDB's answer to text without a statement (empty, blanks, a comment)
            raise InputError("sql: the query holds no statement to run")
        cols = [d[0] for d in cur.description]
        types = [str(d[1]) for d in cur.description]
        rows = cur.fetchall()
        if any("INTERVAL" in t for t in types):
            # An INTERVAL reaches Python as a timedelta, which has no months: `interval 14 month`
            # printed as "420 days, 0:00:00", another duration in Python's words. The query again,
            # with those columns as DuckDB writes them ("1 year 2 months", "3 days 02:00:00").
            cells = [f"CAST(#{i} AS VARCHAR)" if "INTERVAL" in t else f"#{i}" for i, t in enumerate(types, 1)]
            rows = con.sql(sql, params=params or None).project(", ".join(cells)).fetchall()
        return cols, rows
    finally:
        con.close()


def _show(args, cols: list[str], rows: list[tuple], title: str | None = None) -> None:
    if getattr(args, "json", False):
        print(json.dumps([dict(zip(cols, map(_json_safe, r))) for r in rows], default=_json_default, allow_nan=False))
    elif getattr(args, "csv", False):
        import csv

        w = csv.writer(sys.stdout)
        w.writerow(cols)
        w.writerows(rows)
    else:
        t = _table(title=title)
        for c in cols:
            t.add_column(c)
        for r in rows:
            t.add_row(*("" if v is None else str(v) for v in r))
        console.print(t)


def _json_safe(v):
    """A cell JSON can hold: a double that is no number (`sqrt(-1.0)` in `perkflow sql`) becomes
    the text "NaN", "Infinity" or "-Infinity" (bare NaN is not JSON; jq and JSON.parse refuse it)."""
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def _json_default(v):
    if isinstance(v, Decimal):
        return format(v.normalize(), "f")
    return str(v)


BALANCES_TABLE_ROWS = 50  # the table's default length; --json prints every row unless --limit says


def _cmd_balances(args) -> int:
    from engine.ledger.sqlfiles import statement

    if args.limit is not None and args.limit < 0:
        raise InputError(f"--limit must be 0 (all rows) or more, got {args.limit}")
    if args.external_id:
        _participant_id(args)
    if args.asset:
        _asset_id(args)
    limit = args.limit if args.limit is not None else (0 if args.json else BALANCES_TABLE_ROWS)
    limit = min(limit, 2**62)  # past any ledger's rows; SQL's LIMIT takes a BIGINT
    cols, rows = _query(args, statement("reports.sql", "participant_balances"),
                        # one more row than shown: to tell a cut list from a complete one
                        {"external_id": args.external_id, "asset": args.asset, "limit": limit + 1 if limit else None})
    cut = bool(limit) and len(rows) > limit
    _show(args, cols, [_trim(r) for r in rows[:limit or None]], title="balances")
    if cut and not args.json:
        err_console.print(f"{limit} rows shown, the ledger has more: --limit 0 shows them all", highlight=False)
    return 0


def _participant_id(args):
    """--external-id's participant: one the ledger does not know is a mistake to say, not an empty answer."""
    from engine.ledger.sqlfiles import statement

    found = _query(args, statement("reports.sql", "participant_id"), {"external_id": args.external_id})[1]
    if not found:
        raise InputError(f"--external-id: no participant {args.external_id!r} in this ledger")
    return found[0][0]


def _asset_id(args):
    """--asset's id, or an error listing the ledger's symbols."""
    from engine.ledger.sqlfiles import statement

    assets = dict(_query(args, statement("reports.sql", "assets_by_symbol"))[1])
    if args.asset not in assets:
        raise InputError(f"--asset: no asset {args.asset!r} in this ledger (its assets: {', '.join(assets) or 'none'})")
    return assets[args.asset]


def _instant(flag: str, text: str | None):
    """An RFC 3339 instant given on the command line (None if the flag is absent); a bad one is
    the flag's error (exit 2)."""
    from engine.durations import parse_instant

    try:
        return parse_instant(text) if text is not None else None
    except ValueError as e:
        raise InputError(f"{flag}: {e}") from None


def _cmd_statement(args) -> int:
    from engine.ledger.sqlfiles import statement

    start, end = _instant("--from", args.start), _instant("--to", args.end)
    if start is not None and end is not None and end < start:
        raise InputError(f"--to {args.end} is before --from {args.start}")
    account = {"participant_id": _participant_id(args), "asset_id": _asset_id(args), "bucket": args.bucket}

    def balance(before):
        return _query(args, statement("reports.sql", "statement_balance"), {**account, "before": before})[1][0][0]

    opening = balance(start) if start is not None else Decimal(0)
    closing = balance(end)
    cols, rows = _query(args, statement("reports.sql", "statement_rows"),
                        {**account, "from": start, "to": end, "opening": opening})
    head = {"external_id": args.external_id, "participant_id": account["participant_id"], "asset_symbol": args.asset,
            "bucket": args.bucket, "from": start, "to": end,
            "opening_balance": opening, "closing_balance": closing}
    if args.json:
        head["rows"] = [dict(zip(cols, map(_json_safe, r))) for r in rows]
        print(json.dumps(head, default=_json_default, allow_nan=False))
        return 0
    shown = ("effective_at", "program_key", "action_type", "bucket", "amount", "running_balance", "description")
    keep = [cols.index(c) for c in shown]
    t = _table(title=f"statement: {args.external_id} {args.asset}" + (f" {args.bucket}" if args.bucket else ""))
    for c in shown:
        t.add_column(c, justify="right" if c in ("amount", "running_balance") else "left")
    for r in map(_trim, rows):
        t.add_row(*("" if r[i] is None else str(r[i]) for i in keep))
    console.print(f"opening balance {_json_default(opening)}" + (f" (before {start.isoformat()})" if start else ""),
                  highlight=False)
    console.print(t)
    console.print(f"closing balance {_json_default(closing)}" + (f" (before {end.isoformat()})" if end else ""),
                  highlight=False)
    return 0


def _trim(row: tuple) -> tuple:
    """Decimals without the padding zeros of DECIMAL(38, 18)."""
    return tuple(_json_default(v) if isinstance(v, Decimal) else v for v in row)


def _cmd_sql(args) -> int:
    import duckdb

    try:
        cols, rows = _query(args, args.query)
    except duckdb.OutOfMemoryException:
        raise  # not the query's fault: main says what to do
    except duckdb.Error as e:  # the user's SQL: a syntax error, an unknown table, a write refused
        raise InputError(f"sql: {str(e).splitlines()[0]}") from None
    _show(args, cols, [_trim(r) for r in rows])
    return 0


def _cmd_report(args) -> int:
    import duckdb

    try:  # name is one of REPORTS (argparse choices)
        cols, rows = _query(args, f"SELECT * FROM {args.name}")
    except duckdb.CatalogException:
        raise InputError(f"report {args.name} is not in this database yet; a `perkflow run` on it "
                         "(re)creates the report views") from None

    def cell(v):  # MAP columns (amounts per asset): a JSON object in --json, its JSON text elsewhere
        if isinstance(v, dict):
            obj = {str(k): _json_default(x) if isinstance(x, Decimal) else x for k, x in v.items()}
            return obj if args.json else json.dumps(obj)
        return _json_default(v) if isinstance(v, Decimal) else v

    _show(args, cols, [tuple(cell(v) for v in r) for r in rows], title=args.name)
    return 0


def _cmd_generate(args) -> int:
    from engine.workloads import generate

    if args.events < 1:
        raise InputError("--events must be at least 1")
    participants = args.participants or max(1, args.events // 10)
    with _status(f"generating {args.workload} ..."):
        manifest = generate(args.workload, args.events, participants, args.seed, args.out)
    if args.json:
        print(json.dumps(manifest))
        return 0
    console.print(_styled("wrote", "green", f"{args.workload}: {manifest['events']:,} events, {manifest['participants']:,} "
                                           f"participants, {manifest['event_files']} event file(s), programs in {args.out}/programs"))
    if manifest["operations"]:  # the wallets' fund: run it first (perkflow run --operations)
        console.print(f"  operations: {args.out}/{manifest['operations']} (fund {', '.join(f'{a} {s}' for s, a in manifest['wallets'].items())}), "
                      "to run before the events", highlight=False)
    for s in manifest["substitutions"]:
        console.print(f"  substitution: {s}", highlight=False)
    return 0


def _cmd_bench(args) -> int:
    from engine.bench import BenchError, run_bench

    names = tuple(w.strip().upper() for w in args.workloads.split(",") if w.strip())
    if not names or set(names) - {"W1", "W2", "W3"}:
        raise InputError(f"--workloads: a comma-separated subset of W1,W2,W3, got {args.workloads!r}")
    try:
        with _status("benchmark ...") as status:
            result = run_bench(events=args.events, stateful_events=args.stateful_events,
                               participants=args.participants, workloads=names,
                               baseline_sample=args.baseline_sample, seed=args.seed, workdir=args.workdir,
                               progress=lambda msg: status.update(msg + " ..."))
    except BenchError as e:
        err_console.print(_styled("benchmark check failed:", "bold red", str(e)), highlight=False)
        return 4
    if args.json == "-":
        print(json.dumps(result))
        return 0
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")
    m = result["machine"]
    t = _table(title=f"perkflow bench: {m['cores']} cores, {m['cpu']}; python {m['python']}, polars {m['polars']}, "
                    f"duckdb {m['duckdb']}; load average {m['load_average']}")
    for c in ("figure", "events", "seconds", "events/s", "peak RSS", "ratio", "target", "met"):
        t.add_column(c, justify="right" if c in ("events", "seconds", "events/s", "peak RSS") else "left")
    for r in result["rows"]:
        t.add_row(r["figure"], f"{r['events']:,}", f"{r['seconds']:.2f}",
                  "" if r["events_per_second"] is None else f"{r['events_per_second']:,.0f}",
                  "" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:,.0f} MB",
                  r["ratio_text"], r["target"], {True: "yes", False: "no", None: ""}[r["met"]])
    console.print(t)
    console.print("checks: " + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in result["checks"].items()))
    for s in result["substitutions"]:
        console.print(f"substitution: {s}", highlight=False)
    return 0 if all(result["checks"].values()) else 4


if __name__ == "__main__":
    sys.exit(main())
