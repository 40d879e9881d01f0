"""Deterministic, seeded event generators: the bundled sample and the reference workloads.

Output is Parquet with `event_data` as a struct column (the fast path); a null struct field is
an absent field, so one schema serves every event type.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

START = datetime(2025, 11, 1, tzinfo=timezone.utc)
CATEGORIES = ["coffee", "pastry", "beans", "equipment", "tea"]


def sample_events(n: int, participants: int, seed: int, program: str = "coffee_club",
                  start: datetime = START, days: int = 61) -> pl.DataFrame:
    """Coffee Club events: purchases (with category multipliers and cashback), redemptions that
    may exceed the balance (those events FAIL), refunds that claw back, and visits."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(["purchase", "redeem", "refund", "visit"], size=n, p=[0.8, 0.08, 0.05, 0.07])
    amount = np.round(rng.uniform(2, 80, size=n), 2)
    seconds = np.sort(rng.integers(0, days * 86400, size=n))
    who = rng.integers(0, participants, size=n)
    df = pl.DataFrame({
        "program_id": [program] * n,
        "external_id": [f"member_{i:05d}" for i in who],
        "idempotency_key": [f"{program}-{seed}-{i:08d}" for i in range(n)],
        "event_timestamp": pl.Series([start + timedelta(seconds=int(s)) for s in seconds]).dt.cast_time_unit("us"),
        "type": kind,
        "amount": amount,
        "category": rng.choice(CATEGORIES, size=n),
        "channel": rng.choice(["app", "store"], size=n),
        "points": rng.integers(20, 400, size=n),
    })
    is_purchase = pl.col("type") == "purchase"
    return df.select(
        "program_id", "external_id", "idempotency_key", "event_timestamp",
        event_data=pl.struct(
            "type",
            amount=pl.when(is_purchase | (pl.col("type") == "refund")).then("amount"),
            category=pl.when(is_purchase).then("category"),
            channel=pl.when(is_purchase & (pl.col("channel") == "app")).then("channel"),
            points=pl.when(pl.col("type") == "redeem").then("points"),
        ),
    )


def quickstart_events() -> pl.DataFrame:
    """The quickstart's one event, in batch form."""
    return pl.DataFrame({
        "program_id": ["customer_loyalty"],
        "external_id": ["user_123"],
        "idempotency_key": ["first-purchase-001"],
        "event_timestamp": [datetime(2025, 11, 1, 12, 0, tzinfo=timezone.utc)],
        "event_data": ['{"type": "purchase", "amount": 49.99}'],
    }).with_columns(pl.col("event_timestamp").dt.cast_time_unit("us"))


def write(df: pl.DataFrame, out: str | Path, name: str) -> Path:
    path = Path(out) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    df.write_parquet(path)
    return path
