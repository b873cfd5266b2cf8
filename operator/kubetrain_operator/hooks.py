"""The seam between the training state machine and serving rollout (`rollout_apply`).

The watch worker calls two functions, both guarded so that a missing, broken or failing
rollout never disturbs tallying, triggering or run bookkeeping:

- `Rollout.promoted(watch_body, result)` once a run whose result says `promoted` has been
  recorded (`status.lastRun.rolloutPending: true`); at-least-once (re-called after an
  operator restart until it returns), so the callee is idempotent;
- `Rollout.check(watch_body)` periodically, to advance/roll back a rollout in flight.

Both return the new `status.serving` (or None: nothing to report); the worker is the only
writer of the watch's status and stores it there. The implementation lives in
`kubetrain_operator.rollout_apply` (`on_promoted(api, body, result, settings)` and
`check(api, body, settings)`, `settings` being `OperatorSettings.rollout`); when that
module is absent, rollout is simply disabled.

Errors: `Permanent` (a bad `spec.serving`, objects owned by someone else) deserves a Warning
Event and no retry; any other exception is transient and retried by the worker later.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import kubetrain_contract as contract

from kubetrain_operator.kube import Kube
from kubetrain_operator.settings import OperatorSettings

log = logging.getLogger("kubetrain.operator.hooks")
ROLLOUT_MODULE = "kubetrain_operator.rollout_apply"


class Permanent(Exception):
    """A rollout error that retrying cannot fix (the message says what and where)."""


def _load(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        return None


class Rollout:
    """Late-bound adapter to `rollout_apply`; inert when the module does not exist."""

    def __init__(self, kube: Kube, settings: OperatorSettings) -> None:
        self.kube = kube
        self.settings = settings
        self._module: ModuleType | None = None
        self._permanent: tuple[type[BaseException], ...] = ()
        self._loaded = False

    def _bind(self) -> ModuleType | None:
        if self._loaded:
            return self._module
        self._loaded = True
        module = _load(ROLLOUT_MODULE)
        if module is None:
            log.info("no %s module: promoted models are not rolled out", ROLLOUT_MODULE)
            return None
        pure = _load("kubetrain_operator.rollout")
        permanent: list[type[BaseException]] = []
        for holder, attr in ((module, "RolloutError"), (pure, "ServingSpecError")):
            cls = getattr(holder, attr, None) if holder is not None else None
            if isinstance(cls, type) and issubclass(cls, BaseException):
                permanent.append(cls)
        self._permanent = tuple(permanent)
        self._module = module
        return module

    @property
    def enabled(self) -> bool:
        return self._bind() is not None

    def _call(self, fn_name: str, *args: Any) -> dict[str, Any] | None:
        module = self._bind()
        if module is None:
            return None
        fn = getattr(module, fn_name, None)
        if fn is None:
            raise Permanent(f"{ROLLOUT_MODULE} has no {fn_name}()")
        try:
            result = fn(self.kube.api, *args, self.settings.rollout)
        except self._permanent as exc:
            raise Permanent(str(exc)) from exc
        return dict(result) if isinstance(result, Mapping) else None

    def promoted(
        self, watch_body: Mapping[str, Any], result: contract.TrainResult
    ) -> dict[str, Any] | None:
        return self._call("on_promoted", dict(watch_body), result)

    def check(self, watch_body: Mapping[str, Any]) -> dict[str, Any] | None:
        return self._call("check", dict(watch_body))
