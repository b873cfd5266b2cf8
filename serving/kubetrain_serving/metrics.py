"""Prometheus metrics of the inference service, served by BentoML's own /metrics.

BentoML runs its workers with `PROMETHEUS_MULTIPROC_DIR` set and renders /metrics
from every worker's multiprocess files, so plain `prometheus_client` metrics created
in a worker appear next to BentoML's `bentoml_service_*` series. They are created on
first use (in the worker, after BentoML has prepared the environment) rather than at
import, because a metric created before the multiprocess directory is known would
silently live in one process's memory only.

Series (all prefixed `kubetrain_serving_`):
- `request_duration_seconds{endpoint,status}`: histogram of whole-request latency on
  /predict and /classify, including parsing, batching and rejected requests;
- `predictions_total{label}`: images classified, per predicted class;
- `rejected_requests_total{endpoint,reason}`: bad or oversized requests answered 4xx,
  and overload answered 503;
- `batch_images`: histogram of images per model call (how well batching works);
- `model_info{model_name,model_version,mlflow_run_id,dataset_digest,bento_model}`:
  always 1; says which model this server answers with.
"""

from __future__ import annotations

import functools
from typing import Any

PREFIX = "kubetrain_serving"

#: Latency buckets (seconds): sub-millisecond to the 30 s request timeout.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


#: Batch-size buckets (images per model call).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServingMetrics:
    """The metric objects of one process, with their labelled children cached.

    `labels()` validates and hashes its arguments on every call; on the request path
    that is measurable, so each label combination is resolved once.
    """

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.request_seconds = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Latency of inference requests, from the first byte read to the response.",
            ["endpoint", "status"],
            buckets=LATENCY_BUCKETS,
        )
        self.predictions = Counter(
            f"{PREFIX}_predictions",
            "Images classified, by predicted label.",
            ["label"],
        )
        self.rejected_requests = Counter(
            f"{PREFIX}_rejected_requests",
            "Inference requests rejected as bad input or over a limit.",
            ["endpoint", "reason"],
        )
        self.batch_images = Histogram(
            f"{PREFIX}_batch_images",
            "Images per model call (requests merged by adaptive batching).",
            buckets=BATCH_BUCKETS,
        )
        self.model_info = Gauge(
            f"{PREFIX}_model_info",
            "The model this server answers with (value is always 1).",
            ["model_name", "model_version", "mlflow_run_id", "dataset_digest", "bento_model"],
            multiprocess_mode="livemax",
        )
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (str(id(metric)), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        self._child(self.request_seconds, endpoint, str(status)).observe(seconds)

    def rejected(self, endpoint: str, reason: str) -> None:
        self._child(self.rejected_requests, endpoint, reason).inc()

    def prediction(self, label: str) -> None:
        self._child(self.predictions, label).inc()

    def batch(self, images: int) -> None:
        self.batch_images.observe(images)

    def serving(self, **labels: str) -> None:
        """Mark the loaded model (labels: see `model_info`)."""
        self.model_info.labels(**labels).set(1)


@functools.cache
def get_metrics() -> ServingMetrics:
    """Create (once per process) and return the metrics."""
    return ServingMetrics()
