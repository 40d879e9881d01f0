"""The catalog after validation: programs, shared assets and rules with CEL compiled and ids fixed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from engine.cel import CelProgram

from .models import Asset, Program


@dataclass(frozen=True)
class CompiledAction:
    index: int
    type: str
    asset: Asset
    asset_id: uuid.UUID
    amount: Decimal | CelProgram  # a static amount, or an expression evaluated per event
    allow_negative: bool
    description: str | None


@dataclass(frozen=True)
class CompiledRule:
    id: uuid.UUID
    key: str
    version: str  # content hash: a changed rule is a new version
    name: str
    order: int
    status: str
    stop_after_match: bool
    active_from: datetime | None
    active_to: datetime | None
    condition: CelProgram
    actions: tuple[CompiledAction, ...]
    definition: dict  # the rule as written (normalised), stored in rule_versions


@dataclass(frozen=True)
class CompiledProgram:
    id: uuid.UUID
    key: str
    model: Program
    source: str  # the file it came from
    rules: tuple[CompiledRule, ...]  # every rule, ascending order

    @property
    def active_rules(self) -> tuple[CompiledRule, ...]:
        return tuple(r for r in self.rules if r.status == "ACTIVE")


@dataclass(frozen=True)
class Catalog:
    programs: dict[str, CompiledProgram]  # by key
    assets: dict[str, Asset]  # by symbol, shared across the project
    asset_ids: dict[str, uuid.UUID] = field(default_factory=dict)

    def resolve_program(self, ref: str) -> CompiledProgram | None:
        """A program by key or by id (events may carry either)."""
        if ref in self.programs:
            return self.programs[ref]
        for prog in self.programs.values():
            if str(prog.id) == ref:
                return prog
        return None
