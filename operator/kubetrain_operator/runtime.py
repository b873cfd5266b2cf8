"""Process-wide runtime shared by the kopf handlers: settings, API client, Event emitter.

Kept in kopf's `memo` so handlers stay one-liners. `emit` is injectable: in the operator it
posts Kubernetes Events through kopf's poster (`kopf.event`, usable from sync daemon
threads); elsewhere a logging fallback keeps the worker usable without kopf's context.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from kubetrain_operator.hooks import Rollout
from kubetrain_operator.kube import Kube
from kubetrain_operator.settings import OperatorSettings
from kubetrain_operator.webhook import WebhookRouter

log = logging.getLogger("kubetrain.operator")

Emitter = Callable[[Mapping[str, Any], str, str, str], None]


def log_emitter(obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    meta = obj.get("metadata") or {}
    log.info(
        "event %s %s/%s %s: %s", type_, meta.get("namespace"), meta.get("name"), reason, message
    )


def kopf_emitter(obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    import kopf

    try:
        kopf.event(cast(kopf.Body, dict(obj)), type=type_, reason=reason, message=message[:1024])
    except LookupError:  # outside kopf's context (no poster): log instead of failing the caller
        log_emitter(obj, type_, reason, message)


@dataclass
class WorkerHealth:
    """What a worker reports to the liveness probe."""

    phase: str = "Starting"
    last_loop: float = field(default_factory=time.time)


@dataclass
class Runtime:
    settings: OperatorSettings
    kube: Kube
    emit: Emitter = log_emitter
    workers: dict[str, WorkerHealth] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    started_at: float = field(default_factory=time.time)
    webhook: WebhookRouter | None = None
    """Set when the webhook receiver runs (`--webhook-port` not 0)."""
    rollout: Rollout = field(init=False)

    def __post_init__(self) -> None:
        self.rollout = Rollout(self.kube, self.settings)

    def startup_delay(self) -> float:
        """Seconds a watch daemon waits before acting (peering: let peers show up first)."""
        if self.settings.standalone:
            return 0.0
        return max(0.0, self.started_at + self.settings.peering_settle_seconds - time.time())

    def fault(self, point: str) -> None:
        """Crash-test hook: die abruptly after `point` if configured (never in production)."""
        if point and self.settings.fault_exit_after == point:
            log.error("fault injection: exiting abruptly after %r", point)
            for handler in logging.getLogger().handlers:
                handler.flush()
            sys.stderr.flush()
            os._exit(17)

    def report(self, key: str, phase: str) -> None:
        with self.lock:
            joined = key not in self.workers
            self.workers[key] = WorkerHealth(phase=phase)
            busy = len(self.workers)
        cap = self.settings.max_watch_threads
        if joined and busy >= cap:
            # Each watch daemon holds one of kopf's `cap` threads for its lifetime: from now
            # on a further DatasetWatch is not watched until a thread frees up.
            log.warning(
                "all %d watch threads are in use (%d watches, last %s): further DatasetWatches "
                "wait unwatched for a free thread, and so do kopf's sync handlers such as the "
                "liveness probe; raise --max-watch-threads",
                cap,
                busy,
                key,
            )

    def forget(self, key: str) -> None:
        with self.lock:
            self.workers.pop(key, None)

    def probe(self) -> dict[str, Any]:
        """Liveness data; a worker whose loop has not turned for `worker_stuck_seconds` (10
        minutes) is reported stuck."""
        now = time.time()
        limit = self.settings.worker_stuck_seconds
        with self.lock:
            items = dict(self.workers)
        stuck = sorted(k for k, h in items.items() if now - h.last_loop > limit)
        if stuck:
            raise RuntimeError(f"watch workers stuck: {', '.join(stuck)}")
        return {"watches": len(items), "phases": {k: h.phase for k, h in sorted(items.items())}}
