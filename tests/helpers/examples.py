"""How many examples a property test draws.

Each test's default is sized for `make test` (CI's run, on two cores). `PERKFLOW_EXAMPLES_SCALE`
multiplies every default (`make test-long` draws 5x as many); a test's own variable
(`PERKFLOW_DIFF_EXAMPLES`, `PERKFLOW_LEDGER_EXAMPLES`, ...) sets its count outright. The tests are
derandomized, so a run at the default size draws the same cases every time: the long profile is
where new cases come from.
"""

from __future__ import annotations

import os

SCALE = float(os.environ.get("PERKFLOW_EXAMPLES_SCALE") or 1)


def examples(variable: str, default: int) -> int:
    """The example count of a test: `variable` if set, else `default` scaled (at least 1)."""
    given = os.environ.get(variable)
    return int(given) if given else max(1, round(default * SCALE))
