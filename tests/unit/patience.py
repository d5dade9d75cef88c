"""How long the unit tests wait, so that none depends on the speed of the machine it runs on.

CI runs on two shared, busy cores: anything that takes a millisecond on an idle laptop may take seconds there. So
a test never sleeps "long enough" and never bounds how long something took; it polls for the condition it needs
(`wait_for`) with a limit that only a broken behaviour uses up. Client timeouts are generous too, except in a test
about the timeout itself: that one gives a short timeout against a backend held until the test ends (the
`held_hang` fixture in conftest.py), so the client's timeout is always the first thing to end the call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

PATIENCE = 60.0  # seconds: the limit of a wait for something that takes well under a second on an idle machine
GENEROUS_TIMEOUT = 30.0  # seconds: the client timeout of a test that is not about the timeout
SHORT_TIMEOUT = 0.5  # seconds: the client timeout of a test that is, only ever against a held hang


def wait_for(probe: Callable[[], Any], what: str, limit: float = PATIENCE) -> Any:
    """Poll `probe` until it returns something true and return that; fail the test after `limit` seconds."""
    deadline = time.monotonic() + limit
    while not (value := probe()):
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {limit:g} s waiting for {what}")
        time.sleep(0.02)
    return value
