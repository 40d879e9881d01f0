"""Run the cel-spec conformance cases through both backends and compare to expectations.

    python -m tests.conformance.run --summary              # pass/fail/skip per file, backend
    python -m tests.conformance.run --write-expectations   # regenerate expectations.json

Every case that does not pass on a backend is listed in `expectations.json` with a reason,
so any change of outcome (a new failure, or a listed case that now passes) is visible.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl

from engine.cel import CelError, CelUint, NotVectorisable, PolarsContext, compile_cel
from engine.cel.values import CelType, kind

from . import textproto as tp

REPO = Path(__file__).resolve().parents[2]
EXPECTATIONS = Path(__file__).with_name("expectations.json")
BACKENDS = ("row", "polars")
_ERROR = object()


def conformance_dir() -> Path:
    return Path(os.environ.get("PERKFLOW_CEL_CONFORMANCE",
                               REPO.parent / "shared" / "cel-conformance"))


class OutOfScope(Exception):
    """The case needs something perkflow deliberately does not have (e.g. protobuf)."""


@dataclass
class Case:
    file: str
    section: str
    name: str
    expr: str
    bindings: dict
    expected: object  # a value, or _ERROR
    scope_reason: str | None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.file, self.section, self.name)


_PROTO = re.compile(r"TestAllTypes|google\.protobuf\.|proto[23]\.|\bAny\b")


def load_cases(directory: Path | None = None) -> list[Case]:
    directory = directory or conformance_dir()
    cases = []
    for path in sorted(directory.glob("*.textproto")):
        msg = tp.parse(path.read_text())
        for section in tp.get_all(msg, "section"):
            for test in tp.get_all(section, "test"):
                cases.append(_case(path.stem, tp.get(section, "name").decode(), test))
    return cases


def _case(file: str, section: str, test: list) -> Case:
    name = tp.get(test, "name").decode()
    expr = tp.get(test, "expr").decode()
    reason = None
    bindings, expected = {}, _ERROR
    try:
        if _PROTO.search(expr) or tp.get(test, "container"):
            raise OutOfScope("protobuf messages not supported")
        for b in tp.get_all(test, "bindings"):
            bindings[tp.get(b, "key").decode()] = to_value(tp.get(tp.get(b, "value"), "value"))
        if tp.get(test, "value") is not None:
            expected = to_value(tp.get(test, "value"))
        elif tp.get(test, "typed_result") is not None:
            expected = to_value(tp.get(tp.get(test, "typed_result"), "result"))
        elif tp.get(test, "eval_error") is None and tp.get(test, "any_eval_errors") is None:
            expected = True  # SimpleTest default: the expression evaluates to true
    except OutOfScope as exc:
        reason = str(exc)
    return Case(file, section, name, expr, bindings, expected, reason)


def to_value(msg: list) -> object:
    """A google.api.expr Value message -> our Python value representation."""
    field, raw = msg[0]
    if field == "null_value":
        return None
    if field == "bool_value":
        return raw == "true"
    if field == "int64_value":
        return int(raw)
    if field == "uint64_value":
        return CelUint(int(raw))
    if field == "double_value":
        return float(raw)
    if field == "string_value":
        return raw.decode("utf-8")
    if field == "bytes_value":
        return raw
    if field == "list_value":
        return [to_value(x) for x in tp.get_all(raw, "values")]
    if field == "map_value":
        return {to_value(tp.get(e, "key")): to_value(tp.get(e, "value"))
                for e in tp.get_all(raw, "entries")}
    if field == "type_value":
        return CelType(raw.decode())
    if field == "object_value":
        ext, body = raw[0]
        seconds, nanos = int(tp.get(body, "seconds", "0")), int(tp.get(body, "nanos", "0"))
        if nanos % 1000:
            raise OutOfScope("nanosecond timestamps/durations not supported")
        delta = timedelta(seconds=seconds, microseconds=nanos // 1000)
        if ext.endswith("Duration]"):
            return delta
        if ext.endswith("Timestamp]"):
            return datetime(1970, 1, 1, tzinfo=timezone.utc) + delta
    raise OutOfScope(f"protobuf messages not supported ({field})")


def same(a: object, b: object) -> bool:
    """Strict equality of results: same CEL kind and value (NaN equals NaN here)."""
    if a is _ERROR or b is _ERROR:
        return a is b
    if kind(a) != kind(b):
        return False
    if kind(a) == "double" and math.isnan(a):
        return math.isnan(b)
    if kind(a) == "list":
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if kind(a) == "map":
        return len(a) == len(b) and all(
            any(kind(k) == kind(j) and k == j and same(a[k], b[j]) for j in b) for k in a)
    return a == b


def _show(x: object) -> str:
    return "error" if x is _ERROR else repr(x)


def run_row(case: Case) -> tuple[str, str]:
    try:
        got = compile_cel(case.expr).evaluate(dict(case.bindings))
    except CelError as exc:
        got = _ERROR
        detail = str(exc)
    else:
        detail = ""
    if same(got, case.expected):
        return "pass", ""
    return "fail", f"got {_show(got)} {detail}".strip() + f", expected {_show(case.expected)}"


_SCALAR_DTYPES = {"bool": pl.Boolean, "int": pl.Int64, "uint": pl.UInt64, "double": pl.Float64,
                  "string": pl.String, "bytes": pl.Binary, "null_type": pl.Null,
                  "google.protobuf.Timestamp": pl.Datetime("us", "UTC"),
                  "google.protobuf.Duration": pl.Duration("us")}


def _frame(bindings: dict) -> pl.DataFrame:
    columns = {"__row": pl.Series("__row", [0])}
    for name, value in bindings.items():
        dtype = _SCALAR_DTYPES.get(kind(value))
        plain = int(value) if type(value) is CelUint else value
        columns[name] = pl.Series(name, [plain], dtype=dtype)
    return pl.DataFrame(columns)


def _from_polars(value: object, dtype: pl.DataType) -> object:
    if value is None:
        return _ERROR
    if dtype == pl.UInt64:
        return CelUint(value)
    return value


def run_polars(case: Case) -> tuple[str, str]:
    try:
        program = compile_cel(case.expr)
    except CelError as exc:
        return "skip", f"does not compile: {exc}"
    try:
        frame = _frame(case.bindings)
    except Exception as exc:  # noqa: BLE001 - any binding Polars cannot hold
        return "skip", f"binding not representable as a column: {type(exc).__name__}"
    ctx = PolarsContext({c: (pl.col(c), frame.schema[c]) for c in frame.columns})
    try:
        expr = program.to_polars(ctx)
    except NotVectorisable as exc:
        return "skip", f"not vectorised: {exc}"
    try:
        out = frame.select(expr.alias("r"))
        got = _from_polars(out["r"][0], out.schema["r"])
    except Exception as exc:  # noqa: BLE001 - a Polars crash is a failure to report
        return "fail", f"polars raised {type(exc).__name__}: {str(exc)[:120]}"
    if same(got, case.expected):
        return "pass", ""
    return "fail", f"got {_show(got)}, expected {_show(case.expected)}"


RUNNERS = {"row": run_row, "polars": run_polars}


def outcomes(cases: list[Case]) -> dict[tuple[str, str, str, str], tuple[str, str]]:
    result = {}
    for case in cases:
        for backend in BACKENDS:
            if case.scope_reason:
                result[case.key + (backend,)] = ("skip", case.scope_reason)
            else:
                result[case.key + (backend,)] = RUNNERS[backend](case)
    return result


def load_expectations() -> dict[tuple[str, str, str, str], dict]:
    if not EXPECTATIONS.exists():
        return {}
    entries = json.loads(EXPECTATIONS.read_text())
    return {(e["file"], e["section"], e["test"], e["backend"]): e for e in entries}


def write_expectations(results) -> None:
    """Keep hand-written reasons of unchanged entries; new entries get the observed reason."""
    old = load_expectations()
    entries = []
    for key, (outcome, reason) in sorted(results.items()):
        if outcome == "pass":
            continue
        prior = old.get(key)
        if prior and prior["outcome"] == outcome:
            reason = prior["reason"]
        file, section, test, backend = key
        entries.append({"file": file, "section": section, "test": test, "backend": backend,
                        "outcome": outcome, "reason": reason})
    EXPECTATIONS.write_text(json.dumps(entries, indent=1, ensure_ascii=False) + "\n")


def summary(results) -> str:
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for (file, _, _, backend), (outcome, _) in results.items():
        row = counts.setdefault((file, backend), {"pass": 0, "fail": 0, "skip": 0})
        row[outcome] += 1
    lines = [f"{'file':<16}{'backend':<8}{'pass':>6}{'fail':>6}{'skip':>6}"]
    totals = {b: {"pass": 0, "fail": 0, "skip": 0} for b in BACKENDS}
    for (file, backend), c in sorted(counts.items()):
        lines.append(f"{file:<16}{backend:<8}{c['pass']:>6}{c['fail']:>6}{c['skip']:>6}")
        for k in c:
            totals[backend][k] += c[k]
    for backend, c in totals.items():
        lines.append(f"{'TOTAL':<16}{backend:<8}{c['pass']:>6}{c['fail']:>6}{c['skip']:>6}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-expectations", action="store_true")
    parser.add_argument("--summary", action="store_true")
    parser.add_argument("--failures", action="store_true", help="print every failing case")
    args = parser.parse_args()
    directory = conformance_dir()
    if not directory.is_dir():
        raise SystemExit(f"conformance cases not found at {directory} "
                         "(set PERKFLOW_CEL_CONFORMANCE)")
    results = outcomes(load_cases(directory))
    if args.write_expectations:
        write_expectations(results)
        print(f"wrote {EXPECTATIONS}")
    if args.failures:
        for key, (outcome, reason) in sorted(results.items()):
            if outcome == "fail":
                print(" / ".join(key), "::", reason)
    if args.summary or not (args.write_expectations or args.failures):
        print(summary(results))


if __name__ == "__main__":
    main()
