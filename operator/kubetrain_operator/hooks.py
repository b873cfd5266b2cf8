"""The seam between the training state machine and serving rollout (`serving_rollout`).

The watch worker calls two functions, both guarded so that a broken or failing rollout
never disturbs tallying, triggering or run bookkeeping:

- `Rollout.promoted(watch_body, result)` once a run whose result says `promoted` has been
  recorded (`status.lastRun.rolloutPending: true`); at-least-once (re-called after an
  operator restart until it returns), so the callee is idempotent;
- `Rollout.check(watch_body)` periodically, to advance/roll back a rollout in flight.

Both return the new `status.serving` (or None: nothing to report); the worker is the only
writer of the watch's status and stores it there. The implementation is
`kubetrain_operator.serving_rollout` (`on_promoted(kube, body, result, settings)` and
`check(kube, body, settings)`, `settings` being `OperatorSettings.rollout`), imported
directly: the rollout ships with the operator.

Errors: `Permanent` (a bad `spec.serving`, objects owned by someone else) deserves a Warning
Event and no retry; any other exception is transient and retried by the worker later.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kubetrain_contract as contract

from kubetrain_operator import serving_rollout
from kubetrain_operator.kube import Kube
from kubetrain_operator.settings import OperatorSettings

#: What retrying cannot fix: reported as Permanent.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (
    serving_rollout.ServingSpecError,
    serving_rollout.RolloutError,
)


class Permanent(Exception):
    """A rollout error that retrying cannot fix (the message says what and where)."""


class Rollout:
    """The worker's adapter to `serving_rollout`, bound to the operator's client and settings."""

    def __init__(self, kube: Kube, settings: OperatorSettings) -> None:
        self.kube = kube
        self.settings = settings

    @property
    def enabled(self) -> bool:
        """Always True: kept for the worker, which skips periodic checks when False."""
        return True

    def promoted(
        self, watch_body: Mapping[str, Any], result: contract.TrainResult
    ) -> dict[str, Any] | None:
        try:
            status = serving_rollout.on_promoted(
                self.kube, dict(watch_body), result, self.settings.rollout
            )
        except PERMANENT_ERRORS as exc:
            raise Permanent(str(exc)) from exc
        return dict(status) if status is not None else None

    def check(self, watch_body: Mapping[str, Any]) -> dict[str, Any] | None:
        try:
            status = serving_rollout.check(self.kube, dict(watch_body), self.settings.rollout)
        except PERMANENT_ERRORS as exc:
            raise Permanent(str(exc)) from exc
        return dict(status) if status is not None else None
