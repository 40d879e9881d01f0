"""The CEL parser's tables are cached per user (engine/cel/parse.py `_parser`): a process that
loads them parses exactly as one that built them, and a folder others can write is not used
(the cache is a pickle). Each case runs in a fresh interpreter: the parser is per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

EXPRESSIONS = [
    "true", "false || event.flag", "event.amount >= 100.5 && event.category in ['a', 'b']",
    "int(event.amount) % 5 == 0 ? 2u : 3u", "event.tags.exists(t, t.startsWith('vip'))",
    "has(event.x) && size(event.items) > 2", "-(2 * 3) + duration('1h').getHours()",
    "timestamp('2026-01-01T00:00:00Z') < now", "{'a': [1, 2.0, b'x', null]}['a'][0] == 1",
]

PARSE = """
import json, sys
from engine.cel import parse
print(json.dumps([repr(parse.parse(e)) for e in json.loads(sys.argv[1])]))
"""


def _parse_in_fresh_process(cache_home: Path) -> list[str]:
    env = os.environ | {"XDG_CACHE_HOME": str(cache_home)}
    out = subprocess.run([sys.executable, "-c", PARSE, json.dumps(EXPRESSIONS)], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_a_process_that_loads_the_cached_tables_parses_as_one_that_built_them(tmp_path):
    built = _parse_in_fresh_process(tmp_path)
    cache = list((tmp_path / "perkflow").iterdir())
    assert len(cache) == 1 and cache[0].stat().st_size > 10_000, cache
    assert (tmp_path / "perkflow").stat().st_mode & 0o777 == 0o700
    loaded = _parse_in_fresh_process(tmp_path)
    assert loaded == built
    assert "true" in built[0].lower() and len(set(built)) == len(EXPRESSIONS)


def test_a_cache_folder_others_can_write_is_not_used(tmp_path):
    (tmp_path / "perkflow").mkdir(mode=0o777)
    os.chmod(tmp_path / "perkflow", 0o777)  # mkdir's mode is masked by the umask
    planted = tmp_path / "perkflow" / "planted"
    planted.write_text("x")
    _parse_in_fresh_process(tmp_path)
    assert sorted(p.name for p in (tmp_path / "perkflow").iterdir()) == ["planted"]
