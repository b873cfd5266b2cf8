"""kubetrain-loadgen: a bounded, loopback-only async HTTP load generator (aiohttp)."""

from kubetrain_loadgen.core import (
    LoadResult,
    LoadSpec,
    Payload,
    TargetRefused,
    check_loopback,
    run_load,
    run_load_sync,
)

__all__ = [
    "LoadResult",
    "LoadSpec",
    "Payload",
    "TargetRefused",
    "check_loopback",
    "run_load",
    "run_load_sync",
]
