"""The daily partitioning shared by the landing folder, the ledger and the schedule/sensor.

Days are UTC calendar days (event timestamps are UTC). The first day comes from
PERKFLOW_START_DATE (default 2025-11-01, the first day of the bundled sample), read when the
code location loads: Dagster needs the partition set to be fixed at definition time.
"""

from __future__ import annotations

import os

import dagster as dg

START_DATE = os.environ.get("PERKFLOW_START_DATE", "2025-11-01")

daily = dg.DailyPartitionsDefinition(start_date=START_DATE, timezone="UTC")
