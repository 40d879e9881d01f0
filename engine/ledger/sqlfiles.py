"""Loading the SQL in `sql/`: whole files (DDL) and `-- name:` sections (statements)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"


def sql_path(name: str) -> Path:
    return SQL_DIR / name


@cache
def script(name: str) -> str:
    return sql_path(name).read_text(encoding="utf-8")


@cache
def sections(name: str) -> dict[str, str]:
    """{section name: statement} of a file written as `-- name: x` blocks."""
    out: dict[str, str] = {}
    for block in re.split(r"^-- name: ", script(name), flags=re.M)[1:]:
        title, _, body = block.partition("\n")
        # without the trailing ';', a section can be wrapped as a subquery
        out[title.strip()] = body.strip().rstrip(";").rstrip()
    return out


def statement(file: str, name: str) -> str:
    return sections(file)[name]
