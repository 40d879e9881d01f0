"""One `perkflow verify` check alone, as verify runs it, on a fresh read-only connection with
verify's memory cap (PERKFLOW_DUCKDB_MEMORY, default 700MB). Prints one JSON line: violations
(or the out-of-memory error), wall and CPU seconds, peak RSS, and the peak of DuckDB's own memory
(`duckdb_memory()`, sampled every 50 ms from a second cursor) with its largest tags.

    PERKFLOW_DUCKDB_MEMORY=100MB python benchmarks/verify_check.py LEDGER.duckdb summary_identity

The smallest cap a check passes under, at two ledger sizes, shows whether what it cannot spill
grows with the ledger (benchmarks/README.md, "Session 9: verify at scale").
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time

import duckdb

from engine import verify
from engine.ledger import db


def main(path: str, name: str) -> dict:
    con = db.connect(path, read_only=True)
    db.limit_memory(con)
    peak = {"bytes": 0, "tags": {}}
    stop = threading.Event()

    def sample() -> None:
        cur = con.cursor()
        while not stop.is_set():
            rows = cur.execute("SELECT tag, memory_usage_bytes FROM duckdb_memory()").fetchall()
            if (total := sum(b for _, b in rows)) > peak["bytes"]:
                peak.update(bytes=total, tags={t: round(b / 2**20) for t, b in rows if b >= 2**20})
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    wall = time.time()
    out: dict = {"check": name, "cap": os.environ.get("PERKFLOW_DUCKDB_MEMORY") or db.MEMORY_LIMIT}
    try:
        out["violations"] = verify.violations(con, name)[0]
    except duckdb.OutOfMemoryException as e:
        out["error"] = str(e).splitlines()[0]
    stop.set()
    sampler.join()
    use = resource.getrusage(resource.RUSAGE_SELF)
    return out | {"wall_s": round(time.time() - wall, 1), "cpu_s": round(use.ru_utime + use.ru_stime, 1),
                  "peak_rss_mb": round(use.ru_maxrss / 1024), "peak_duckdb_mb": round(peak["bytes"] / 2**20),
                  "duckdb_tags_mb": peak["tags"]}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
