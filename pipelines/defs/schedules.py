"""Daily schedule: shortly after midnight UTC, book the day that just ended."""

from __future__ import annotations

import dagster as dg

from .jobs import daily_ledger_job

# Runs at 01:15 UTC for the previous day's partition (the newest complete day), leaving an hour
# for late files to land. Created stopped; turn it on in the UI or with `dagster schedule start`.
daily_ledger_schedule = dg.build_schedule_from_partitioned_job(
    daily_ledger_job, name="daily_ledger_schedule", hour_of_day=1, minute_of_hour=15,
    description="Book yesterday's landed event files into the ledger (UTC days).",
)
