"""Settings of the serving component: one typed object, read from the environment once.

The BentoML service is configured by the environment of its process (the operator's
Deployment sets env vars; `kubetrain-serve` passes its own through), so every knob is
an env var with a sane default. `ServingSettings.from_env()` validates everything up
front and raises `ValueError` naming the variable, so a bad value fails the server at
start-up instead of on the first request.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

MODEL_ENV = "KUBETRAIN_BENTO_MODEL"
"""`<name>:<version>` of the model in the BentoML store the service packs and serves."""

_PREFIX = "KUBETRAIN_SERVING_"
BATCHERS = ("kubetrain", "bentoml")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if not minimum <= value <= maximum:
        raise ValueError(f"{name}={value} is out of range [{minimum}, {maximum}]")
    return value


def _cpu_limit(env: Mapping[str, str]) -> int:
    """Whole CPUs the process may use: KUBETRAIN_CPU_LIMIT (the pod's limit), else the host's.

    TensorFlow sizes its thread pools from the node's cores, not the pod's limit, which
    oversubscribes a throttled container; the limit is the better guess.
    """
    raw = env.get("KUBETRAIN_CPU_LIMIT", "").strip()
    if raw:
        try:
            # resourceFieldRef renders limits.cpu as a whole number of cores (rounded up).
            return max(1, int(float(raw.rstrip("m")) / (1000 if raw.endswith("m") else 1)))
        except ValueError:
            raise ValueError(f"KUBETRAIN_CPU_LIMIT={raw!r} is not a CPU quantity") from None
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


@dataclass(frozen=True)
class ServingSettings:
    """Everything the inference service can be tuned with (env var in brackets)."""

    model_tag: str | None = None
    """[KUBETRAIN_BENTO_MODEL] `<name>:<version>` in the BentoML store; when unset inside a
    built Bento, the model packed into that Bento is used."""
    max_body_bytes: int = 8 * 1024 * 1024
    """[KUBETRAIN_SERVING_MAX_BODY_BYTES] Largest request body accepted on /predict and
    /classify; larger bodies get 413 before they are read into memory."""
    max_images: int = 256
    """[KUBETRAIN_SERVING_MAX_IMAGES] Most images one /classify request may carry (413 above)."""
    max_batch_size: int = 128
    """[KUBETRAIN_SERVING_MAX_BATCH_SIZE] Most images the adaptive batcher feeds the model
    in one call; a request with more images is split across calls."""
    max_queue_images: int = 4096
    """[KUBETRAIN_SERVING_MAX_QUEUE_IMAGES] Images that may wait for the model per worker;
    a request that would exceed it is answered 503 at once (overload shedding)."""
    batcher: str = "kubetrain"
    """[KUBETRAIN_SERVING_BATCHER] "kubetrain": the never-waiting micro-batcher shared by
    /predict and /classify (batcher.py); "bentoml": /classify as a BentoML batchable API
    (CorkDispatcher) and /predict unbatched."""
    max_latency_ms: int = 2000
    """[KUBETRAIN_SERVING_MAX_LATENCY_MS] Only with batcher "bentoml": BentoML's batching
    deadline; a /classify request that would wait longer is answered 503."""
    workers: int = 1
    """[KUBETRAIN_SERVING_WORKERS] Worker processes (each loads its own copy of the model)."""
    tf_threads: int = 1
    """[KUBETRAIN_SERVING_TF_THREADS] TensorFlow intra-op threads per worker; default: the
    CPU limit (KUBETRAIN_CPU_LIMIT, else usable cores) divided by the workers."""
    timeout_s: int = 30
    """[KUBETRAIN_SERVING_TIMEOUT] Seconds a request may take before BentoML answers 504."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServingSettings:
        """Read and validate every variable; raises ValueError naming a bad one."""
        env = os.environ if env is None else env
        workers = _int(env, _PREFIX + "WORKERS", 1, 1, 64)
        default_threads = max(1, _cpu_limit(env) // workers)
        tag = env.get(MODEL_ENV, "").strip() or None
        if tag is not None and (":" not in tag or tag.startswith(":") or tag.endswith(":")):
            raise ValueError(f"{MODEL_ENV}={tag!r} must be <name>:<version>")
        batcher = env.get(_PREFIX + "BATCHER", "").strip().lower() or cls.batcher
        if batcher not in BATCHERS:
            raise ValueError(f"{_PREFIX}BATCHER={batcher!r} must be one of {', '.join(BATCHERS)}")
        return cls(
            model_tag=tag,
            max_body_bytes=_int(env, _PREFIX + "MAX_BODY_BYTES", cls.max_body_bytes, 1024, 1 << 30),
            max_images=_int(env, _PREFIX + "MAX_IMAGES", cls.max_images, 1, 100_000),
            max_batch_size=_int(env, _PREFIX + "MAX_BATCH_SIZE", cls.max_batch_size, 2, 4096),
            max_queue_images=_int(
                env, _PREFIX + "MAX_QUEUE_IMAGES", cls.max_queue_images, 1, 10_000_000
            ),
            batcher=batcher,
            max_latency_ms=_int(env, _PREFIX + "MAX_LATENCY_MS", cls.max_latency_ms, 10, 600_000),
            workers=workers,
            tf_threads=_int(env, _PREFIX + "TF_THREADS", default_threads, 1, 256),
            timeout_s=_int(env, _PREFIX + "TIMEOUT", cls.timeout_s, 1, 3600),
        )
