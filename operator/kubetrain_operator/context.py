"""What the pieces of one watch's worker share: identity, clients, and the session's state.

`worker.py` (session and loop), `detection.py` (listing, probe, notification intake) and
`runs.py` (launch, adoption, completion, rollout hook) each own their own bookkeeping; what
more than one of them reads or writes lives here, on one object per watch:
- the parsed spec (replaced in place when a non-source field of the spec changes),
- `durable`, the state part of the status, which only `persist()` writes,
- the report fields the status shows (`source`, `decision`, `serving`), and `dirty`.
`reset()` starts a session from scratch but keeps the source's last reason, so a status
written before the first listing still says why the previous session ended.

`persist` is set by the worker: it force-writes the whole status (the patch is built from all
the pieces). Writing before a side effect goes through `write_durable`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from kubetrain_operator import metrics
from kubetrain_operator.decisions.trigger import Decision
from kubetrain_operator.kube import KubeError
from kubetrain_operator.runtime import Runtime
from kubetrain_operator.spec import API_VERSION, KIND, WatchSpec
from kubetrain_operator.status import Durable
from kubetrain_operator.statusview import SourceReport

log = logging.getLogger("kubetrain.operator.worker")


class Restart(Exception):
    """Leave the session and start a new one (source changed, baseline unreadable...)."""


class _Prefixed(logging.LoggerAdapter):  # type: ignore[type-arg,unused-ignore]
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{(self.extra or {}).get('watch')}] {msg}", kwargs


def _not_wired() -> None:
    raise RuntimeError("WatchContext.persist is set by the worker")


class WatchContext:
    def __init__(
        self, rt: Runtime, *, namespace: str, name: str, body: Mapping[str, Any], stopped: Any
    ) -> None:
        self.rt = rt
        self.settings = rt.settings
        self.kube = rt.kube
        self.namespace = namespace
        self.name = name
        self.key = f"{namespace}/{name}"
        self.body = body  # kopf's live view: spec edits show up here without a restart
        self.stopped = stopped
        self.metrics = metrics.WatchMetrics(namespace, name)
        self.log = _Prefixed(log, {"watch": self.key})
        self.persist: Callable[[], None] = _not_wired
        self.source = SourceReport()
        self.reset()

    def reset(self) -> None:
        self.spec: WatchSpec | None = None
        self.durable = Durable()
        self.source = SourceReport(reason=self.source.reason, message=self.source.message)
        self.decision: Decision | None = None
        self.serving: dict[str, Any] | None = None
        self.dirty = True

    @property
    def watch(self) -> WatchSpec:
        """The parsed spec; only pieces that exist after the parse ask for it."""
        assert self.spec is not None, "the spec is parsed at session start"
        return self.spec

    def ref(self) -> dict[str, Any]:
        uid = (
            self.spec.uid if self.spec else str((self.body.get("metadata") or {}).get("uid") or "")
        )
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": uid},
        }

    def event(self, type_: str, reason: str, message: str) -> None:
        self.log.info("%s: %s", reason, message)
        self.rt.emit(self.ref(), type_, reason, message)

    def wait(self, seconds: float) -> bool:
        """Sleep unless stopped; True when the daemon must stop."""
        self.stopped.wait(seconds)
        return bool(self.stopped)

    def labels(self) -> tuple[str, str]:
        """The (namespace, watch) labels of this watch's metrics."""
        return (self.namespace, self.name)

    def write_durable(self, *, raise_errors: bool = False) -> bool:
        """Persist the durable state now (not throttled); False (or raise) on failure."""
        try:
            self.persist()
        except KubeError as exc:
            if raise_errors:
                raise
            self.log.warning("writing status failed: %s", exc)
            return False
        return True
