"""Expanding an input argument (file, directory, or glob) into an ordered list of files."""

from __future__ import annotations

import glob
from pathlib import Path

from engine.errors import InputError

EVENT_SUFFIXES = {".parquet", ".pq", ".ndjson", ".jsonl", ".csv"}


def expand(spec: str | Path) -> list[tuple[Path, Path]]:
    """[(file, root)] in arrival order: sorted paths. `root` is where hive partitions start."""
    spec = str(spec)
    if any(c in spec for c in "*?[") and not Path(spec).exists():  # `drop[1]/` is a folder's name
        # a folder the pattern matches is read as a folder is (`landing/date=2025-03-0*`): it
        # matched no files, and the run stopped saying so
        matched = [Path(f) for f in glob.glob(spec, recursive=True)]
        files = sorted({f for m in matched for f in ([m] if m.is_file() else event_files(m) if m.is_dir() else [])})
        root = Path(spec.split("*")[0].split("?")[0].split("[")[0])
        root = root if root.is_dir() else root.parent
        if not files:
            raise InputError(f"{spec}: the pattern matches no files")
        return [(f, root) for f in files]
    p = Path(spec)
    if p.is_file():
        return [(p, p.parent)]
    if p.is_dir():
        files = event_files(p)
        if not files:
            raise InputError(f"{p}: no event files (*.parquet, *.ndjson, *.csv) in this directory")
        return [(f, p) for f in files]
    # (for --events and --operations alike)
    raise InputError(not_found(p, "pass a Parquet, NDJSON or CSV file, a folder of them or a glob"))


def event_files(folder: Path) -> list[Path]:
    """The event and operation files under a folder, recursively, sorted: their suffix in any
    case, as the readers take it (`B.PARQUET` was skipped without a word), hidden files left out."""
    return sorted(f for f in folder.rglob("*")
                  if f.is_file() and f.suffix.lower() in EVENT_SUFFIXES and not f.name.startswith("."))


def not_found(p: Path, hint: str) -> str:
    """Why a path given as input names no file or folder, and `hint`: /dev/null, a pipe or a socket
    exists, so "no such file" sent the user looking for a typo."""
    if p.exists():
        return f"{p}: not a regular file or a folder (a device, pipe or socket); {hint}"
    return f"{p}: no such file or directory; {hint}"


def hive_values(file: Path, root: Path) -> dict[str, str]:
    """`key=value` directory names between root and the file."""
    try:
        rel = file.parent.relative_to(root)
    except ValueError:
        return {}
    out = {}
    for part in rel.parts:
        if "=" in part:
            k, v = part.split("=", 1)
            out[k] = v
    return out
