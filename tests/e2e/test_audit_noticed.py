"""Black-box checks of what earlier audits noticed and left (semantics.md 2.1, 2.2, 7, 9, 13 and
scrip-reference.md): each test writes program files and Parquet inputs, runs `perkflow` in a
subprocess into a real DuckDB file and reads the ledger back with SQL; expected numbers are
worked out by hand from the contract (docs/decisions.md where it is silent)."""

from __future__ import annotations

import decimal
import json
from decimal import Decimal as D

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.e2e.test_contract_audit import LOT, SIMPLE, Ledger, at, on
from tests.helpers.io import cli, event, query, write_events, write_program


def shop(rules: list[dict], assets: list[dict], **extra) -> dict:
    return {"program": {"key": "shop", "name": "Shop"}, "assets": assets, "rules": rules, **extra}


# ---- 1. FORFEIT action with reference_id (semantics.md 7 table, 2.3; scrip-reference.md 9, 12) ----

def test_a_forfeit_action_with_reference_id_forfeits_only_the_lots_of_that_reference(tmp_path):
    """The forfeit operation takes reference_id (LOT): the FORFEIT action does the same. Without
    an amount it forfeits all the bucket holds of the reference (as the operation and RELEASE)."""
    rules = [on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"}),
             on("hold", {"type": "HOLD", "asset": "PTS", "amount": "event.n", "reference_id": "event.ref"}),
             on("lose", {"type": "FORFEIT", "asset": "PTS", "bucket": "HELD", "reference_id": "event.ref"}),
             on("lose_n", {"type": "FORFEIT", "asset": "PTS", "bucket": "HELD", "amount": "event.n",
                           "reference_id": "event.ref"})]
    led = Ledger(tmp_path, shop(rules, [LOT]))
    led.run([{"key": "e1", "who": "a", "when": at(1, 10), "data": {"type": "earn", "n": 100}},
             {"key": "e2", "who": "a", "when": at(1, 11), "data": {"type": "hold", "n": 30, "ref": "A"}},
             {"key": "e3", "who": "a", "when": at(1, 12), "data": {"type": "hold", "n": 20, "ref": "B"}},
             {"key": "e4", "who": "a", "when": at(1, 13), "data": {"type": "lose", "ref": "A"}},
             {"key": "e5", "who": "a", "when": at(1, 14), "data": {"type": "lose_n", "n": 5, "ref": "B"}},
             {"key": "e6", "who": "a", "when": at(1, 15), "data": {"type": "lose_n", "n": 16, "ref": "B"}}])
    status = led.status()
    assert [status[k] for k in ("e1", "e2", "e3", "e4", "e5")] == [("COMPLETED", None)] * 5
    assert status["e6"] == ("FAILED", "insufficient_balance")  # B holds 20 - 5 = 15 < 16
    entries = led.sql("SELECT e.idempotency_key, j.action_type, j.reference_id, p.amount FROM journal_entries j "
                      "JOIN events e ON e.id = j.event_id JOIN postings p ON p.journal_entry_id = j.id "
                      "WHERE j.action_type = 'FORFEIT' AND p.entity_type = 'SYSTEM_BREAKAGE' ORDER BY 1")
    assert [(k, t, r, D(a)) for k, t, r, a in entries] == [("e4", "FORFEIT", "A", D(30)), ("e5", "FORFEIT", "B", D(5))]
    assert led.sql("SELECT available, held FROM balances WHERE external_id = 'a'") == [(D(50), D(15))]
    assert cli("verify", "--db", str(led.db)).returncode == 0


def test_a_forfeit_action_without_amount_forfeits_the_whole_bucket_and_nothing_is_a_no_op(tmp_path):
    """As the forfeit operation without `amount` (Scrip: "processes the whole SIMPLE balance")."""
    rules = [on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"}),
             on("lose", {"type": "FORFEIT", "asset": "PTS"})]
    led = Ledger(tmp_path, shop(rules, [SIMPLE]))
    led.run([{"key": "e1", "who": "a", "when": at(1, 10), "data": {"type": "earn", "n": 40}},
             {"key": "e2", "who": "a", "when": at(1, 11), "data": {"type": "lose"}},
             {"key": "e3", "who": "a", "when": at(1, 12), "data": {"type": "lose"}}])
    assert set(led.status().values()) == {("COMPLETED", None)}
    assert led.sql("SELECT action_type, COUNT(*) FROM journal_entries GROUP BY 1 ORDER BY 1") == [
        ("CREDIT", 1), ("FORFEIT", 1)]  # e3 found nothing to forfeit: no entry
    assert led.sql("SELECT entity_type, available FROM balances ORDER BY 1") == [
        ("PARTICIPANT", D(0)), ("SYSTEM_BREAKAGE", D(40)), ("SYSTEM_ISSUANCE", D(-40))]


@pytest.mark.parametrize("action, says", [
    ({"type": "TAG", "tag": "vip", "amount": "5"}, "amount: TAG takes no amount; its fields are description, tag, target"),
    ({"type": "CREDIT", "asset": "PTS", "amount": "5", "allow_negative": True},
     "allow_negative: allow_negative applies to DEBIT only"),
    ({"type": "HOLD", "asset": "PTS", "amount": "1", "expires_at": "1h"}, "expires_at: expires_at applies to CREDIT only"),
    ({"type": "VOID_HOLD", "asset": "PTS", "reference_id": "r", "bucket": "HELD"}, "bucket: VOID_HOLD takes no bucket"),
    ({"type": "COUNTER", "key": "n", "value": "1", "asset": "PTS"}, "asset: COUNTER takes no asset"),
])
def test_a_field_an_action_never_takes_says_so_plainly_not_not_supported_yet(tmp_path, action, says):
    programs = write_program(tmp_path / "programs" / "shop.yaml", shop([on("x", action)], [LOT]))
    res = cli("validate", "--programs", str(programs))
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 2 and "not supported yet" not in out, out
    assert "shop.yaml" in out and f"rules[0] (x).actions[0].{says}" in out, out


# ---- 2. names unique per program (scrip-reference.md 15, 18: reward and automation names) ----

REWARD = {"redemption_type": "UNIT_BASED", "asset": "PTS", "unit_cost": "10"}
AUTOMATION = {"event_name": "tick", "scope": "program", "trigger": {"type": "cron", "cron_expression": "0 9 * * 1"}}


@pytest.mark.parametrize("section, entries, says", [
    ("rewards", [{"key": "mug_a", "name": "Mug", **REWARD}, {"key": "mug_b", "name": "Mug", **REWARD}],
     "rewards[1] (Mug): name 'Mug' is also the name of rewards[0] (Mug)"),
    ("rewards", [{"key": "mug", "name": "Mug", **REWARD}, {"key": "mug", "name": "Cup", **REWARD}],
     "rewards[1] (Cup): key 'mug' is also the key of rewards[0] (Mug)"),
    ("automations", [{"key": "a", "name": "Weekly", **AUTOMATION}, {"key": "b", "name": "Weekly", **AUTOMATION}],
     "automations[1] (Weekly): name 'Weekly' is also the name of automations[0] (Weekly)"),
    ("rules", [on("x"), {**on("y"), "key": "x"}], "rules[1] (y): key 'x' is also the key of rules[0] (x)"),
    ("assets", [SIMPLE, SIMPLE], "assets[1] (PTS): symbol 'PTS' is also the symbol of assets[0] (PTS)"),
])
def test_two_entries_with_one_name_are_a_load_error_naming_the_file_and_both(tmp_path, section, entries, says):
    """Scrip: a reward's and an automation's `name` is "unique per program"; keys give ids."""
    if section == "rules":
        entries = [{**r, "actions": [{"type": "TAG", "tag": "t"}]} for r in entries]
    spec = shop(entries if section == "rules" else [], entries if section == "assets" else [SIMPLE],
                **({} if section in ("rules", "assets") else {section: entries}))
    programs = write_program(tmp_path / "programs" / "shop.yaml", spec)
    events = write_events(tmp_path / "e.parquet", [event("shop", "e1", "a", at(1), {"type": "x"})])
    for command in (["validate", "--programs", str(programs)],
                    ["run", "--programs", str(programs), "--events", str(events), "--db", str(tmp_path / "w.duckdb")]):
        res = cli(*command)
        out = " ".join((res.stdout + res.stderr).split())
        assert res.returncode == 2 and "shop.yaml" in out and says in out, out
    assert not (tmp_path / "w.duckdb").exists()


# ---- 3. Parquet MAP columns in a struct event_data are maps in CEL (semantics.md 2.2, 6) ----

def _map_events(path, value_type, rows: list[dict]):
    """Events whose struct event_data has `type` and a Parquet MAP `attrs` (string keys)."""
    payload = pa.struct([("type", pa.string()), ("attrs", pa.map_(pa.string(), value_type))])
    pq.write_table(pa.table({
        "program_id": ["shop"] * len(rows), "idempotency_key": [r["key"] for r in rows],
        "external_id": [r["who"] for r in rows], "event_timestamp": [at(1, 10 + i) for i in range(len(rows))],
        "event_data": pa.array([{"type": "buy", "attrs": r["attrs"]} for r in rows], payload)}), path)
    return path


MAP_ROWS = [{"key": "e1", "who": "a", "attrs": [("color", "red"), ("size", "L")]},
            {"key": "e2", "who": "b", "attrs": [("size", "M")]},
            {"key": "e3", "who": "c", "attrs": None}]  # a null field is absent
MAP_RULES = [
    {"name": "sizes", "condition": 'event.attrs.size == "M"',
     "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "size(event.attrs) * 100"}]},
    {"name": "has_size", "condition": "has(event.attrs.size)", "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]},
]
#: the same, through participant state: a counter written and read back (running path or kernel)
STATEFUL_RULES = [
    {"name": "count", "condition": '"color" in event.attrs', "actions": [{"type": "COUNTER", "key": "reds", "value": "1"}]},
    {"name": "red", "condition": 'get(participant.counters, "reds", 0.0) >= 1.0 && event.attrs["color"] == "red"',
     "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "5"}]},
]


@pytest.mark.parametrize("stateful, flags, env, path", [
    (False, [], {}, None),                                           # set-wise (the vectorised backend declines maps)
    (False, ["--row-path"], {}, None),
    (True, [], {"PERKFLOW_RUNNING_MIN_EVENTS": "1"}, "running_rounds"),  # the running-state path
    (True, [], {"PERKFLOW_RUNNING_MIN_EVENTS": "1000"}, "sequential_events"),  # the per-event kernel
])
def test_a_parquet_map_in_event_data_is_a_map_in_cel_on_every_path(tmp_path, stateful, flags, env, path):
    """`event.attrs["color"]`, `"color" in event.attrs`, `has(event.attrs.size)` and `size()` read a
    MAP as a CEL map (never a list of {key, value} entries), exactly as the same payloads sent as
    JSON objects (NDJSON) are read; the stored payload is the JSON object."""
    rules = MAP_RULES + (STATEFUL_RULES if stateful else [])
    programs = write_program(tmp_path / "programs" / "shop.yaml", shop(rules, [SIMPLE]))
    as_map = _map_events(tmp_path / "map.parquet", pa.string(), MAP_ROWS)
    as_json = tmp_path / "objects.ndjson"
    as_json.write_text("".join(json.dumps({"program_id": "shop", "idempotency_key": r["key"], "external_id": r["who"],
                                           "event_timestamp": at(1, 10 + i),
                                           "event_data": {"type": "buy", "attrs": None if r["attrs"] is None
                                                          else dict(r["attrs"])}}) + "\n"
                               for i, r in enumerate(MAP_ROWS)))
    ledgers = {}
    for name, events in (("map", as_map), ("json", as_json)):
        db = tmp_path / f"{name}.duckdb"
        res = cli("run", "--programs", str(programs), "--events", str(events), "--db", str(db), "--json", *flags,
                  env=env)
        assert res.returncode == 0, res.stderr
        counts = json.loads(res.stdout.strip().splitlines()[-1])
        assert (counts["read"], counts["completed"]) == (3, 3), counts
        if path is not None:
            assert counts[path] > 0, counts
        stored = {k: {f: v for f, v in json.loads(text).items() if v is not None}  # (a struct keeps its nulls)
                  for k, text in query(db, "SELECT idempotency_key, event_data::VARCHAR FROM events")}
        ledgers[name] = (query(db, "SELECT external_id, available FROM balances WHERE entity_type = 'PARTICIPANT' "
                                   "ORDER BY 1"), stored)
    # a: has size (1) + red with a color counted first (5 when stateful); b: size M, one entry (100) + 1
    assert ledgers["map"][0] == [("a", D(6) if stateful else D(1)), ("b", D(101))]
    assert ledgers["map"] == ledgers["json"]
    assert ledgers["map"][1]["e1"]["attrs"] == {"color": "red", "size": "L"}
    # replay reads the stored payload with the type the run read it with (payload_types): a map again
    res = cli("replay", "--from", str(tmp_path / "map.duckdb"), "--db", str(tmp_path / "replay.duckdb"), env=env)
    assert res.returncode == 0, res.stderr
    assert query(tmp_path / "replay.duckdb", "SELECT external_id, available FROM balances WHERE "
                                            "entity_type = 'PARTICIPANT' ORDER BY 1") == ledgers["map"][0]


def test_a_map_of_decimals_reaches_cel_as_doubles_and_a_map_with_integer_keys_is_refused(tmp_path):
    """DECIMAL values of a MAP are doubles in CEL as DECIMAL struct fields are (docs/decisions.md);
    a MAP with integer keys has no JSON-object form (the stored payload): the file is refused, exit
    2, naming it and the column (it was an internal error, exit 1)."""
    rules = [{"name": "x2", "condition": '"k" in event.attrs',
              "actions": [{"type": "CREDIT", "asset": "PTS", "amount": 'event.attrs["k"] * 2.0'}]}]
    programs = write_program(tmp_path / "programs" / "shop.yaml", shop(rules, [{**SIMPLE, "scale": 2}]))
    events = _map_events(tmp_path / "dec.parquet", pa.decimal128(10, 2),
                         [{"key": "e1", "who": "a", "attrs": [("k", decimal.Decimal("2.25"))]}])
    db = tmp_path / "w.duckdb"
    res = cli("run", "--programs", str(programs), "--events", str(events), "--db", str(db))
    assert res.returncode == 0, res.stderr
    assert query(db, "SELECT b.external_id, available, status FROM balances b, events WHERE entity_type = 'PARTICIPANT'") == [("a", D("4.5"), "COMPLETED")]
    payload = pa.struct([("type", pa.string()), ("codes", pa.map_(pa.int64(), pa.string()))])
    bad = tmp_path / "intkeys.parquet"
    pq.write_table(pa.table({"program_id": ["shop"], "idempotency_key": ["k1"], "external_id": ["a"],
                             "event_timestamp": [at(2)],
                             "event_data": pa.array([{"type": "buy", "codes": [(1, "one")]}], payload)}), bad)
    before = query(db, "SELECT COUNT(*) FROM batches")
    res = cli("run", "--programs", str(programs), "--events", str(bad), "--db", str(db))
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 2 and "intkeys.parquet" in out and "event_data.codes is a map with Int64 keys" in out, out
    assert query(db, "SELECT COUNT(*) FROM batches") == before


# ---- 4. an action's description is literal text (docs/decisions.md "Ledger") ----

def test_an_action_description_that_looks_like_cel_is_stored_as_written(tmp_path):
    literal = 'string(event.amount) + " points for " + participant.external_id'
    rules = [on("buy", {"type": "CREDIT", "asset": "PTS", "amount": "event.amount", "description": literal},
                {"type": "CREDIT", "asset": "PTS", "amount": "1"})]
    led = Ledger(tmp_path, shop(rules, [SIMPLE]))
    led.run([{"key": "e1", "who": "a", "when": at(1), "data": {"type": "buy", "amount": 7}}])
    assert led.sql("SELECT action_index, description FROM journal_entries ORDER BY action_index") == [
        (0, literal), (1, "buy")]  # no description: the rule's name


# ---- 5. hive partition values are part of a quarantined row's raw (semantics.md 2.2, 13) ----

@pytest.mark.parametrize("flags", [[], ["--chunk-rows", "1"]])
def test_partition_values_are_in_the_raw_of_rows_quarantined_when_read_and_at_intake(tmp_path, flags):
    """A row of `events/program_id=P/date=D/part.parquet` is read with program_id and date from its
    folders. Its raw in rejected_rows holds them whether it was quarantined when read (a bad
    timestamp) or at intake (its folder names an unknown program): that folder is the only place
    the row says which program it is for."""
    programs = write_program(tmp_path / "programs" / "shop.yaml",
                             shop([on("x", {"type": "TAG", "tag": "t"})], [SIMPLE]))
    root = tmp_path / "events"
    cols = ("idempotency_key", "external_id", "event_timestamp", "event_data")
    for folder, rows in (("program_id=shop/date=2025-03-01", [("k1", "a", at(1), '{"type":"x"}'),
                                                              ("k2", "b", "not a time", "{}")]),
                         ("program_id=nope/date=2025-03-02", [("n1", "a", at(2), '{"type":"x"}')])):
        (root / folder).mkdir(parents=True)
        pq.write_table(pa.table({c: [r[i] for r in rows] for i, c in enumerate(cols)}), root / folder / "part.parquet")
    db = tmp_path / "w.duckdb"
    res = cli("run", "--programs", str(programs), "--events", str(root), "--db", str(db), *flags)
    assert res.returncode == 0, res.stderr
    raws = {reason: json.loads(raw) for reason, raw in query(db, "SELECT reason, raw FROM rejected_rows")}
    assert set(raws) == {"invalid_timestamp", "unknown_program"}
    assert raws["invalid_timestamp"] == {"idempotency_key": "k2", "external_id": "b", "event_timestamp": "not a time",
                                         "event_data": "{}", "program_id": "shop", "date": "2025-03-01"}
    assert raws["unknown_program"] == {"idempotency_key": "n1", "external_id": "a", "event_timestamp": at(2),
                                       "event_data": '{"type":"x"}', "program_id": "nope", "date": "2025-03-02"}


# ---- 6. a `perkflow op` records a source a reader can use (semantics.md 13) ----

def test_perkflow_op_records_perkflow_op_name_as_the_source_not_its_deleted_temp_file(tmp_path):
    programs = write_program(tmp_path / "programs" / "shop.yaml", shop([], [SIMPLE]))
    db = tmp_path / "w.duckdb"
    base = ("--programs", str(programs), "--db", str(db), "--external-id", "a")
    for args in (("upsert_participant", "--program", "shop", "--key", "u1", "--timestamp", at(1, 9)),
                 ("adjust", "--program", "nope", "--key", "r1", "--timestamp", at(1, 10),  # REJECTED
                  "--param", "type=CREDIT", "--param", "asset=PTS", "--param", "amount=5"),
                 ("adjust", "--program", "shop", "--key", "f1", "--timestamp", at(1, 11),  # FAILED
                  "--param", "type=DEBIT", "--param", "asset=PTS", "--param", "amount=50")):
        res = cli("op", *args, *base)
        assert res.returncode == 0, res.stderr
    rejected = query(db, "SELECT source, row_number, reason, raw FROM rejected_rows")
    assert [r[:3] for r in rejected] == [("perkflow op adjust", 1, "unknown_program")]
    assert json.loads(rejected[0][3])["program_id"] == "nope"  # the row as it was run
    assert query(db, "SELECT idempotency_key, source, status FROM operations ORDER BY 1") == [
        ("f1", "perkflow op adjust", "FAILED"), ("u1", "perkflow op upsert_participant", "COMPLETED")]
    assert query(db, "SELECT sources FROM batches ORDER BY id") == [
        (["perkflow op upsert_participant"],), (["perkflow op adjust"],), (["perkflow op adjust"],)]


# ---- 7. a DEBIT returns value to the acting program's source (semantics.md 7, 9.2; decisions) ----

def test_a_debit_of_a_shared_prefunded_asset_returns_value_to_the_debiting_programs_wallet(tmp_path):
    """Programs a and b share the PREFUNDED asset PTS; a's wallet funded x's points. b's DEBIT of
    x returns them to b's wallet (the source b's credits draw from), which b may then credit:
    balances are per participant and asset whichever program moved them (semantics.md 2.1), so
    value carries no program of origin to go back to."""
    pre = {**SIMPLE, "issuance_policy": "PREFUNDED"}
    rules = [on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"}),
             on("claw", {"type": "DEBIT", "asset": "PTS", "amount": "event.n"})]
    led = Ledger(tmp_path, {**shop(rules, [pre]), "program": {"key": "a", "name": "A"}},
                 {**shop(rules, [pre]), "program": {"key": "b", "name": "B"}})
    led.run(operations=[{"op": "fund", "program": "a", "key": "f1", "when": at(1, 9),
                         "params": {"asset": "PTS", "amount": "100"}}])
    led.run([{"program": "a", "key": "e1", "who": "x", "when": at(1, 10), "data": {"type": "earn", "n": 30}},
             {"program": "b", "key": "e2", "who": "x", "when": at(1, 11), "data": {"type": "claw", "n": 10}},
             {"program": "b", "key": "e3", "who": "y", "when": at(1, 12), "data": {"type": "earn", "n": 10}},
             {"program": "b", "key": "e4", "who": "y", "when": at(1, 13), "data": {"type": "earn", "n": 1}}])
    assert led.status() == {"f1": ("COMPLETED", None), "e1": ("COMPLETED", None), "e2": ("COMPLETED", None),
                            "e3": ("COMPLETED", None), "e4": ("FAILED", "insufficient_wallet")}
    wallets = led.sql("SELECT p.key, b.available FROM balances b JOIN programs p ON p.id = b.entity_id "
                      "WHERE b.entity_type = 'PROGRAM_WALLET' ORDER BY 1")
    assert wallets == [("a", D(100) - 30), ("b", D(10) - 10)]
    assert led.sql("SELECT external_id, available FROM balances WHERE entity_type = 'PARTICIPANT' ORDER BY 1") == [
        ("x", D(30) - 10), ("y", D(10))]
    assert cli("verify", "--db", str(led.db)).returncode == 0
