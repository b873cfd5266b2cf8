"""Prometheus metrics of the operator, served on `:9090/metrics` by `start_server`.

Per watch (labels `namespace`, `watch`) and per dataset label (`label`):
- `kubetrain_label_changes` / `kubetrain_label_objects` (gauges): the tally;
- `kubetrain_notifications_total`: change records received from the listen stream;
- `kubetrain_listen_connected` (gauge 0/1) and `kubetrain_listen_reconnects_total`;
- `kubetrain_resync_duration_seconds` (histogram) and `kubetrain_resync_objects` (gauge),
  `kubetrain_resync_corrections_total` (keys a listing fixed that notifications had missed);
- `kubetrain_runs_started_total`, `kubetrain_runs_succeeded_total`, `kubetrain_runs_failed_total`;
- `kubetrain_trigger_to_job_seconds` (histogram): threshold crossing -> Job created.
A watch's series are removed when its worker stops for good (watch deleted).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)
_W = ("namespace", "watch")
_WL = ("namespace", "watch", "label")

LABEL_CHANGES = Gauge(
    "kubetrain_label_changes", "Changes of a label against the baseline", _WL, registry=REGISTRY
)
LABEL_OBJECTS = Gauge("kubetrain_label_objects", "Live objects of a label", _WL, registry=REGISTRY)
NOTIFICATIONS = Counter(
    "kubetrain_notifications_total", "Bucket notification records received", _W, registry=REGISTRY
)
LISTEN_CONNECTED = Gauge(
    "kubetrain_listen_connected", "1 while the listen stream is connected", _W, registry=REGISTRY
)
LISTEN_RECONNECTS = Counter(
    "kubetrain_listen_reconnects_total", "Listen stream disconnects", _W, registry=REGISTRY
)
RESYNC_SECONDS = Histogram(
    "kubetrain_resync_duration_seconds",
    "Duration of a full bucket listing applied to the tally",
    _W,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120),
    registry=REGISTRY,
)
RESYNC_OBJECTS = Gauge(
    "kubetrain_resync_objects", "Objects seen by the last full listing", _W, registry=REGISTRY
)
RESYNC_CORRECTIONS = Counter(
    "kubetrain_resync_corrections_total",
    "Keys whose state a full listing corrected (missed or pre-start changes)",
    _W,
    registry=REGISTRY,
)
RUNS_STARTED = Counter(
    "kubetrain_runs_started_total", "Training Jobs created", _W, registry=REGISTRY
)
RUNS_SUCCEEDED = Counter(
    "kubetrain_runs_succeeded_total", "Training runs succeeded", _W, registry=REGISTRY
)
RUNS_FAILED = Counter("kubetrain_runs_failed_total", "Training runs failed", _W, registry=REGISTRY)
TRIGGER_TO_JOB = Histogram(
    "kubetrain_trigger_to_job_seconds",
    "Seconds from the threshold crossing being seen to the Job being created",
    _W,
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
    registry=REGISTRY,
)

_PER_WATCH = (
    NOTIFICATIONS,
    LISTEN_CONNECTED,
    LISTEN_RECONNECTS,
    RESYNC_SECONDS,
    RESYNC_OBJECTS,
    RESYNC_CORRECTIONS,
    RUNS_STARTED,
    RUNS_SUCCEEDED,
    RUNS_FAILED,
    TRIGGER_TO_JOB,
)


class WatchMetrics:
    """The metric children of one watch, tracking which label series exist."""

    def __init__(self, namespace: str, watch: str) -> None:
        self.key = (namespace, watch)
        self._labels: set[str] = set()
        self._lock = threading.Lock()

    def set_labels(self, counts: Iterable[tuple[str, int, int]]) -> None:
        """(label, changes, objects) for every current label; stale label series are removed."""
        seen = set()
        with self._lock:
            for label, changes, objects in counts:
                LABEL_CHANGES.labels(*self.key, label).set(changes)
                LABEL_OBJECTS.labels(*self.key, label).set(objects)
                seen.add(label)
            for label in self._labels - seen:
                self._remove_label(label)
            self._labels = seen

    def _remove_label(self, label: str) -> None:
        for gauge in (LABEL_CHANGES, LABEL_OBJECTS):
            with contextlib.suppress(KeyError):
                gauge.remove(*self.key, label)

    def remove(self) -> None:
        with self._lock:
            for label in self._labels:
                self._remove_label(label)
            self._labels = set()
        for metric in _PER_WATCH:
            with contextlib.suppress(KeyError):
                metric.remove(*self.key)


def start_server(host: str, port: int) -> None:
    """Serve REGISTRY on http://host:port/metrics in a daemon thread (port 0: disabled)."""
    if port:
        start_http_server(port, addr=host, registry=REGISTRY)
