"""Sensor: launch a day's ledger run when new event files land for it.

The cursor is the set of landed files already seen, as JSON {"YYYY-MM-DD": [relative paths]}.
A file is "seen" once a run has been requested for it. Each request's run_key hashes the day's
full file list, so a repeated tick never launches the same run twice, and a day that receives
another file later gets a new run (run_batch then books only the events it has not seen).

Files for a day that is not a partition yet (today, or before PERKFLOW_START_DATE) are left out
of the cursor and picked up on a later tick, once the day exists. Writers should land files
atomically (write `.name.parquet`, then rename): the engine and this sensor skip dot-files.
"""


import hashlib
import json
import re

import dagster as dg

from .jobs import daily_ledger_job
from .partitions import daily
from .resources import PerkflowFiles, landed_files

DAY_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


@dg.sensor(job=daily_ledger_job, minimum_interval_seconds=60,
           description="Request a daily_ledger_job run for every day with newly landed event files.")
def landed_files_sensor(context: dg.SensorEvaluationContext, perkflow_files: PerkflowFiles) -> dg.SensorResult:
    seen: dict[str, list[str]] = json.loads(context.cursor) if context.cursor else {}
    landing = perkflow_files.landing_dir()
    requests: list[dg.RunRequest] = []
    waiting: list[str] = []
    if landing.is_dir():
        for folder in sorted(p for p in landing.iterdir() if p.is_dir()):
            m = DAY_DIR.match(folder.name)
            if not m:
                continue
            day = m.group(1)
            files = [str(f.relative_to(landing)) for f in landed_files(folder)]
            if not files or set(files) <= set(seen.get(day, [])):
                continue
            if not daily.has_partition_key(day):
                waiting.append(day)
                continue
            digest = hashlib.sha256("\n".join(files).encode()).hexdigest()[:16]
            requests.append(dg.RunRequest(partition_key=day, run_key=f"{day}:{digest}",
                                          tags={"perkflow/landed_files": str(len(files))}))
            seen[day] = files
    if waiting:
        context.log.info(f"files landed for days that are not partitions yet: {', '.join(waiting)}")
    if not requests:
        return dg.SensorResult(skip_reason=dg.SkipReason("no newly landed files"), cursor=json.dumps(seen, sort_keys=True))
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))
