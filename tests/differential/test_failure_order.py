"""Which failure an event reports when it has more than one: the first, in rule order, as one
event at a time would meet them (semantics.md 5). The set-based path computes amount checks for
all rules at once; these cases hold it to the oracle (and to the row path)."""

from __future__ import annotations

import pytest

from tests.differential import strategies as S
from tests.differential.test_engine_vs_oracle import _row, _spec, check

# rule 1 debits 50 on a redemption; rule 2 then credits a CASH amount that may have too many
# decimals (invalid_scale) or pass max_transaction_amount 50.
RULES = [
    {"name": "Earn", "key": "earn", "order": 5, "condition": 'event.type == "buy"',
     "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "100"}]},
    {"name": "Redeem", "key": "redeem", "order": 10, "condition": 'event.type == "redeem"',
     "actions": [{"type": "DEBIT", "asset": "PTS", "amount": "50"}]},
    {"name": "Cashback", "key": "cashback", "order": 20, "condition": "has(event.cash)",
     "actions": [{"type": "CREDIT", "asset": "CASH", "amount": "event.cash"}]},
]


@pytest.mark.parametrize("row_path", [False, True])
def test_a_short_debit_before_a_bad_amount_is_the_failure(row_path):
    check(S.Scenario([_spec(RULES)], [[
        # u1 has nothing: the debit of rule 10 fails before rule 20's bad amount is reached
        _row("k0", "u1", "2025-03-01T09:00:00Z", '{"type": "redeem", "cash": 1.234}'),
        # u2 can pay: the debit applies, then rule 20's bad amount fails the event (invalid_scale)
        _row("k1", "u2", "2025-03-01T09:00:00Z", '{"type": "buy"}'),
        _row("k2", "u2", "2025-03-01T10:00:00Z", '{"type": "redeem", "cash": 1.234}'),
        # ... and the rolled-back debit of k2 never happened: two more redemptions of 50 fit in 100
        _row("k3", "u2", "2025-03-01T11:00:00Z", '{"type": "redeem"}'),
        _row("k4", "u2", "2025-03-01T12:00:00Z", '{"type": "redeem", "cash": 60}'),  # over max: fails
        _row("k5", "u2", "2025-03-01T13:00:00Z", '{"type": "redeem"}'),
        _row("k6", "u2", "2025-03-01T14:00:00Z", '{"type": "redeem", "cash": 70}'),  # short first
    ]]), row_path=row_path)
