"""The one poll-until helper of the test suite.

Polls a predicate until it returns something truthy and returns that value; on timeout it
fails naming what it waited for, with the last value seen and the last retried error. The
predicate always runs once more at the deadline, so a slow machine never fails a test that
has in fact reached its state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    what: str = "condition",
    *,
    interval: float = 0.2,
    retry_on: tuple[type[Exception], ...] = (),
) -> Any:
    """PREDICATE's first truthy value within TIMEOUT seconds; errors in RETRY_ON count as
    "not yet" (an object that does not exist yet), any other error fails at once."""
    deadline = time.monotonic() + timeout
    last: Any = None
    last_exc: Exception | None = None
    while True:
        try:
            last = predicate()
            if last:
                return last
        except retry_on as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what}; last={last!r}"
                + (f" (last error: {last_exc})" if last_exc else "")
            )
        time.sleep(interval)
