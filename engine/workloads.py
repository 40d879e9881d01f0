"""The reference workloads of design/performance.md: seeded, deterministic events and programs.

`perkflow generate --workload W1|W2|W3 --events N --participants M --seed S --out DIR` writes

    DIR/programs/<workload>.yaml          the program file(s)
    DIR/events/part-00000.parquet         W1, W2: one file, `event_data` as a struct column
    DIR/events/date=YYYY-MM-DD/part.parquet   W3: W2's events split into daily files
    DIR/operations/fund.parquet           W2, W3: the `fund` operation of the cashback wallet, run
                                          as a batch of its own before the events
    DIR/workload.json                     what was generated (no timestamps: byte-identical too)

Everything is vectorised (numpy draws, Polars string building): 10M events take seconds, not
minutes. The same arguments give byte-identical files.

Workloads are data (`Workload`: assets, rules, an event mix, the wallets to fund): a feature
left out of a workload is listed in `Workload.substitutions`; adding it is a new rule or asset
dict here, with its line deleted from there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from engine.generate import write
from engine.io.events import TS

YEAR_START = datetime(2025, 1, 1, tzinfo=timezone.utc)
DAYS = 365
WORKLOADS = ("W1", "W2", "W3")
CATEGORIES = ["grocery", "electronics", "fuel", "apparel", "pharmacy", "dining"]
CATEGORY_P = [0.30, 0.10, 0.15, 0.15, 0.10, 0.20]


@dataclass(frozen=True)
class Workload:
    name: str
    program_key: str
    description: str
    mix: dict[str, float]                  # event type -> share
    assets: list[dict]
    rules: list[dict]
    tiers: list[dict] = field(default_factory=list)
    daily_files: bool = False              # W3: one file per day, processed in order
    #: PREFUNDED asset symbol -> (event type, category) of the events whose rule credits it a
    #: fixed CASHBACK_AMOUNT: the generator funds its wallet with exactly what they draw
    wallets: dict[str, tuple[str, str]] = field(default_factory=dict)
    substitutions: list[str] = field(default_factory=list)  # features of performance.md left out, and why

    def program(self) -> dict:
        return {"program": {"key": self.program_key, "name": f"perkflow benchmark {self.name}",
                            "description": self.description, "on_unknown_participant": "CREATE"},
                "assets": self.assets, "rules": self.rules, **({"tiers": self.tiers} if self.tiers else {})}


PTS = {"symbol": "PTS", "name": "Points", "inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED", "scale": 0}
#: W2's PREFUNDED asset: cashback on dining purchases, paid from the program's wallet
CASHBACK = {"symbol": "CASHBACK", "name": "Dining cashback", "inventory_mode": "SIMPLE", "issuance_policy": "PREFUNDED",
            "scale": 2}
CASHBACK_AMOUNT = 5
#: W2's LOT asset: status miles, one lot per purchase, vesting 30 days, expiring after 365
MILES = {"symbol": "MILES", "name": "Status miles", "inventory_mode": "LOT", "issuance_policy": "UNLIMITED", "scale": 0}


def _rule(key: str, order: int, condition: str, actions: list[dict], **extra) -> dict:
    return {"name": key.replace("_", " ").capitalize(), "key": key, "order": order, "condition": condition,
            **extra, "actions": actions}


def _credit(amount: str, **extra) -> dict:
    return {"type": "CREDIT", "asset": "PTS", "amount": amount, **extra}


PURCHASE = 'event.type == "purchase"'

# Amount expressions use double literals (`* 3.0`) so that they are standard CEL, which the
# cel-python baseline evaluates as is; multipliers are 0.5, 1.5, 2, 3 so that a rounding tie can
# only come from an amount that is exact in binary: the float result and the decimal one (the
# hand-written SQL) agree on every cent value (tests/e2e/test_generate.py checks this).
W1 = Workload(
    name="W1", program_key="bench_w1",
    description="Stateless: 10 rules reading only event and now, one SIMPLE asset.",
    mix={"purchase": 0.85, "refund": 0.05, "review": 0.05, "visit": 0.05},
    assets=[PTS],
    rules=[
        # category multipliers: the first match wins and stops every later rule (base points included)
        _rule("electronics_3x", 100, f'{PURCHASE} && event.category == "electronics"',
              [_credit("round(event.amount * 3.0, 0)")], stop_after_match=True),
        _rule("grocery_pharmacy_2x", 200, f'{PURCHASE} && event.category in ["grocery", "pharmacy"]',
              [_credit("round(event.amount * 2.0, 0)")], stop_after_match=True),
        _rule("fuel_half", 300, f'{PURCHASE} && event.category == "fuel"',
              [_credit("round(event.amount * 0.5, 0)")], stop_after_match=True),
        _rule("base_points", 1000, PURCHASE, [_credit("round(event.amount, 0)")]),
        _rule("big_basket", 1100, f"{PURCHASE} && event.amount >= 150.0", [_credit("100")]),
        _rule("weekend_bonus", 1200, f'{PURCHASE} && now.getDayOfWeek("UTC") in [0, 6]', [_credit("20")]),
        _rule("summer_app_promo", 1300, f'{PURCHASE} && event.channel == "app"', [_credit("50")],
              active_from="2025-06-01T00:00:00Z", active_to="2025-09-01T00:00:00Z"),
        _rule("black_friday", 1400,
              f'{PURCHASE} && now >= timestamp("2025-11-28T00:00:00Z") && now < timestamp("2025-12-01T00:00:00Z")',
              [_credit("round(event.amount * 1.5, 0)")]),
        _rule("good_review", 2000, 'event.type == "review" && event.rating >= 4', [_credit("10")]),
        _rule("refund_clawback", 2100, 'event.type == "refund"',
              [{"type": "DEBIT", "asset": "PTS", "amount": "round(event.amount, 0)", "allow_negative": True}]),
    ],
)

def _w2_rules(daily_app_budget: int) -> list[dict]:
    has_purchases = '"purchases" in participant.counters'
    return [
        _rule("welcome_bonus", 10, f'{PURCHASE} && !("welcomed" in participant.tags)',
              [_credit("500"), {"type": "TAG", "tag": "welcomed"}]),
        _rule("count_purchase", 20, PURCHASE, [{"type": "COUNTER", "key": "purchases", "value": "1"}]),
        # from the program's wallet (before the gold multiplier, which stops every later rule)
        _rule("dining_cashback", 40, f'{PURCHASE} && event.category == "dining"',
              [{"type": "CREDIT", "asset": "CASHBACK", "amount": str(CASHBACK_AMOUNT)}]),
        _rule("fifth_purchase_bonus", 30,
              f"{PURCHASE} && {has_purchases} && int(participant.counters.purchases) % 5 == 0", [_credit("250")]),
        # the tier multiplier: gold from the 10th purchase on (auto-qualification runs after the
        # rules, so from the 11th purchase's points)
        _rule("gold_multiplier", 100,
              f'{PURCHASE} && has(participant.tiers.status) && participant.tiers.status.level == "gold"',
              [_credit("round(event.amount * participant.tiers.status.benefits.points_multiplier, 0)")],
              stop_after_match=True),
        _rule("base_points", 200, PURCHASE, [_credit("round(event.amount, 0)")]),
        _rule("app_bonus_daily_budget", 300, f'{PURCHASE} && event.channel == "app"', [_credit("20")],
              budgets=[{"asset": "PTS", "limit": str(daily_app_budget), "schedule_type": "INTERVAL",
                        "interval": "24h"}]),
        _rule("count_weekly_visits", 400, 'event.type == "visit"',
              [{"type": "COUNTER", "key": "visits_week", "value": "1", "reset_after": "168h"}]),
        _rule("weekly_visit_bonus", 410,
              'event.type == "visit" && "visits_week" in participant.counters && participant.counters.visits_week == 3.0',
              [_credit("30")]),
        # DEBITs without allow_negative: the event FAILS (insufficient_balance) when the balance is short
        _rule("refund_debit", 900, 'event.type == "refund"',
              [{"type": "DEBIT", "asset": "PTS", "amount": "round(event.amount, 0)"}]),
        _rule("redeem_reward", 910, 'event.type == "redeem"',
              [{"type": "DEBIT", "asset": "PTS", "amount": "event.points"}]),
        _rule("status_miles", 1000, PURCHASE,
              [{"type": "CREDIT", "asset": "MILES", "amount": "round(event.amount, 0)",
                "expires_at": "8760h", "matures_at": "720h"}]),
    ]


W2_TIERS = [{"key": "status", "name": "Status", "levels": [
    {"key": "gold", "rank": 1, "benefits": {"points_multiplier": 2.0},
     "qualification": {"mode": "ALL", "criteria": [{"counter": "purchases", "operator": ">=", "threshold": 10}]}}]}]

W2_MIX = {"purchase": 0.80, "refund": 0.05, "redeem": 0.07, "visit": 0.08}


def workload(name: str, events: int = 0) -> Workload:
    """The workload definition; W2/W3's daily app-bonus budget scales with the event count so that
    it binds on some days at any size (about 60% of an average day's app bonuses)."""
    name = name.upper()
    if name == "W1":
        return W1
    if name not in ("W2", "W3"):
        raise ValueError(f"unknown workload {name!r}; one of {', '.join(WORKLOADS)}")
    daily_app = events * W2_MIX["purchase"] * 0.5 / DAYS * 20
    return Workload(
        name=name, program_key="bench_w2",
        description=("Stateful: welcome bonus gated by a tag, 5th-purchase bonus on a counter, a gold-tier "
                     "multiplier from participant.tiers, a daily rule budget, refunds and redemptions as DEBITs "
                     "that can fail, dining cashback from a PREFUNDED wallet (funded first with what it pays "
                     "out), status miles as LOT credits vesting 30 days and expiring after 365.")
        + (" Split into 365 daily files, processed in order." if name == "W3" else ""),
        mix=W2_MIX, assets=[PTS, MILES, CASHBACK], rules=_w2_rules(max(20, int(daily_app * 0.6) // 20 * 20)),
        tiers=W2_TIERS, daily_files=name == "W3", wallets={"CASHBACK": ("purchase", "dining")},
    )


def external_ids(index: pl.Expr, width: int = 7) -> pl.Expr:
    return pl.concat_str(pl.lit("m"), index.cast(pl.String).str.zfill(width))


def events_frame(wl: Workload, n: int, participants: int, seed: int, start: datetime = YEAR_START,
                 days: int = DAYS) -> pl.DataFrame:
    """`n` events over `days` days in timestamp order, `event_data` a struct whose fields are null
    (absent) where an event type has no such field. Vectorised: no per-row Python."""
    if n < 1 or participants < 1:
        raise ValueError("events and participants must be at least 1")
    rng = np.random.default_rng(seed)
    types = list(wl.mix)
    kind = rng.choice(len(types), size=n, p=list(wl.mix.values())).astype(np.int8)
    micros = np.sort(rng.integers(0, days * 86_400 * 10**6, size=n, dtype=np.int64))
    who = rng.integers(0, participants, size=n, dtype=np.int64)
    cents = rng.integers(100, 30_000, size=n, dtype=np.int64)     # 1.00 .. 299.99
    category = rng.choice(len(CATEGORIES), size=n, p=CATEGORY_P).astype(np.int8)
    app = rng.random(size=n) < 0.5
    rating = rng.integers(1, 6, size=n, dtype=np.int64)
    points = rng.integers(1, 16, size=n, dtype=np.int64) * 100     # 100 .. 1500
    base = int(start.timestamp() * 10**6)
    kind_s = pl.Series("k", kind).cast(pl.UInt32)
    df = pl.DataFrame({
        "i": np.arange(n, dtype=np.int64),
        "who": who,
        "ts": micros + base,
        "type": kind_s.replace_strict(range(len(types)), types, return_dtype=pl.String),
        "amount": cents / 100.0,  # IEEE division: the double nearest to the cent value
        "category": pl.Series(category).cast(pl.UInt32).replace_strict(range(len(CATEGORIES)), CATEGORIES,
                                                                        return_dtype=pl.String),
        "app": app,
        "rating": rating,
        "points": points,
    })
    t = pl.col("type")
    is_purchase = t == "purchase"
    key_width = max(9, len(str(n - 1)))
    return df.select(
        program_id=pl.lit(wl.program_key),
        external_id=external_ids(pl.col("who"), max(7, len(str(participants - 1)))),
        idempotency_key=pl.concat_str(pl.lit(f"{wl.name.lower()}-{seed}-"),
                                      pl.col("i").cast(pl.String).str.zfill(key_width)),
        event_timestamp=pl.col("ts").cast(TS),
        event_data=pl.struct(
            "type",
            amount=pl.when(is_purchase | (t == "refund")).then("amount"),
            category=pl.when(is_purchase).then("category"),
            channel=pl.when(is_purchase).then(pl.when("app").then(pl.lit("app")).otherwise(pl.lit("store"))),
            rating=pl.when(t == "review").then("rating"),
            points=pl.when(t == "redeem").then("points"),
        ),
    )


def _funding(wl: Workload, df: pl.DataFrame, seed: int) -> pl.DataFrame | None:
    """The `fund` operations of the workload's wallets (an operations file, semantics.md 2.3),
    timestamped before the year: each wallet gets exactly what its rule's events draw (every
    such event completes), so it pays every credit and ends the year empty."""
    if not wl.wallets:
        return None
    rows = []
    for symbol, (etype, category) in wl.wallets.items():
        ev = pl.col("event_data").struct
        draws = df.filter((ev.field("type") == etype) & (ev.field("category") == category)).height
        rows.append({"operation": "fund", "program_id": wl.program_key,
                     "idempotency_key": f"{wl.name.lower()}-{seed}-fund-{symbol.lower()}", "external_id": None,
                     "timestamp": YEAR_START.replace(year=YEAR_START.year - 1).strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "params": json.dumps({"asset": symbol, "amount": str(draws * CASHBACK_AMOUNT)})})
    return pl.DataFrame(rows, schema={c: pl.String for c in rows[0]})


def generate(name: str, events: int, participants: int, seed: int, out: str | Path) -> dict:
    """Write a workload's programs and events under `out`; return the manifest (also written)."""
    wl = workload(name, events)
    out = Path(out)
    (out / "programs").mkdir(parents=True, exist_ok=True)
    prog_file = out / "programs" / f"{wl.name.lower()}.yaml"
    prog_file.write_text(
        f"# Generated by `perkflow generate --workload {wl.name}` (engine/workloads.py): do not edit.\n"
        + yaml.safe_dump(wl.program(), sort_keys=False, width=120), encoding="utf-8")
    df = events_frame(wl, events, participants, seed)
    files = []
    if wl.daily_files:
        df = df.with_columns(_day=pl.col("event_timestamp").dt.date())
        for (day,), part in df.partition_by("_day", maintain_order=True, as_dict=True).items():
            files.append(write(part.drop("_day"), out / "events", f"date={day.isoformat()}/part.parquet"))
    else:
        files.append(write(df, out / "events", "part-00000.parquet"))
    operations = _funding(wl, df, seed)
    if operations is not None:
        write(operations, out / "operations", "fund.parquet")
    manifest = {
        "workload": wl.name, "program": wl.program_key, "events": events, "participants": participants,
        "seed": seed, "description": wl.description, "substitutions": wl.substitutions,
        "programs": str(prog_file.relative_to(out)), "event_files": len(files),
        "operations": None if operations is None else "operations/fund.parquet",
        "wallets": {} if operations is None else {
            symbol: amount for symbol, amount in zip(operations["params"].str.json_path_match("$.asset"),
                                                      operations["params"].str.json_path_match("$.amount"))},
        "mix": wl.mix,
    }
    (out / "workload.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
