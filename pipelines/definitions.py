"""The code location: `dagster dev -m pipelines.definitions`, `dagster definitions validate -m pipelines.definitions`.

Explicit `Definitions(...)` style: everything the location holds is listed here. (The
`load_from_defs_folder` style also loads, but under this repo's pyproject it logs a code-location
name warning for every module; explicit lists validate cleanly.)
"""

from __future__ import annotations

import dagster as dg

from pipelines.defs import assets, checks, jobs, schedules, sensors
from pipelines.defs.resources import default_resources

defs = dg.Definitions(
    assets=[assets.raw_event_batches, assets.ledger, assets.lot_maintenance, assets.balances],
    asset_checks=checks.ledger_checks,
    jobs=[jobs.daily_ledger_job],
    schedules=[schedules.daily_ledger_schedule],
    sensors=[sensors.landed_files_sensor],
    resources=default_resources(),
)
