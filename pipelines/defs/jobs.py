"""The one job the schedule and the sensor launch: land -> book -> check -> report, for one day."""

from __future__ import annotations

import dagster as dg

from . import assets

daily_ledger_job = dg.define_asset_job(
    name="daily_ledger_job",
    selection=dg.AssetSelection.assets(assets.raw_event_batches, assets.ledger, assets.lot_maintenance,
                                       assets.balances),
    description="Inventory a day's landed files, book them into the ledger, run the ledger checks, write "
                "the lot expiries and maturities due by the day's end, then report balances. Asset checks "
                "on the selected assets run with them.",
)
