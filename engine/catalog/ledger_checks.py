"""Program files checked against the ledger they run on, once it is open and before anything is
written: what a file may not change about what the ledger already holds."""

from __future__ import annotations

from engine.catalog.compiled import Catalog
from engine.errors import CatalogError
from engine.ledger.sqlfiles import statement

#: Scrip: "Cannot be changed later" (scrip-reference.md 3). The ledger's balances, lots and
#: wallets of an asset were made under these; a new value would reinterpret them (a scale-0
#: asset holding 5.25, SIMPLE balances with no lots, credits that never drew on a wallet).
FIXED_ASSET_FIELDS = ("inventory_mode", "issuance_policy", "scale")


def check_assets(con, catalog: Catalog) -> None:
    """An asset the ledger already has keeps its fixed fields; its name and
    max_transaction_amount may change (Scrip's asset PATCH takes them)."""
    stored = {row[0]: dict(zip(FIXED_ASSET_FIELDS, row[1:]))
              for row in con.execute(statement("lookups.sql", "stored_asset_kinds")).fetchall()}
    for prog in sorted(catalog.programs.values(), key=lambda p: p.source):
        for i, symbol in enumerate(prog.assets):  # in file order
            asset, was = catalog.assets[symbol], stored.get(symbol)
            for name in FIXED_ASSET_FIELDS if was else ():
                if getattr(asset, name) != was[name]:
                    raise CatalogError(
                        f"{prog.source}: assets[{i}] ({asset.symbol}).{name}: {getattr(asset, name)!r} but this "
                        f"ledger's {asset.symbol} is {was[name]!r}, and an asset's {name} cannot be changed once "
                        f"it has a ledger (its balances were made under it); keep {was[name]!r}, or define a new "
                        f"asset symbol (`perkflow replay --programs` rebuilds a fresh ledger under other files)")
