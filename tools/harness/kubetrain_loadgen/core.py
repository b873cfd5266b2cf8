"""The load generator: N closed-loop clients over aiohttp, bounded in time and in count.

Model: `concurrency` workers share one aiohttp session (one connection each, kept
alive). Each worker sends a request, waits for the whole response, records the
latency, and immediately sends the next, until either `max_requests` requests were
issued or `max_seconds` elapsed (requests in flight then finish, bounded by the
per-request timeout). So the offered load is exactly `concurrency` outstanding
requests, and throughput is completed OK requests (or images) per wall-clock second
of the measured phase. An optional warm-up phase runs first and is not recorded.

Safety: targets must resolve to loopback addresses only (`check_loopback`), and
every bound has a hard ceiling, so a typo cannot turn this into a flood against
another host or an endless run.

Responses are checked, not just counted: a 200 whose JSON is not the expected shape
(one prediction object, or a list with one entry per image sent) counts as an error.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import socket
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

MAX_CONCURRENCY = 1024
MAX_REQUESTS = 1_000_000
MAX_SECONDS = 600.0


class TargetRefused(ValueError):
    """The URL is not a loopback HTTP target."""


def check_loopback(url: str) -> None:
    """Raise TargetRefused unless `url` is http(s) to a host resolving only to loopback."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise TargetRefused(f"{url!r}: only http:// or https:// URLs are supported")
    host = parts.hostname
    if not host:
        raise TargetRefused(f"{url!r}: no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise TargetRefused(f"{url!r}: {exc}") from None
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise TargetRefused(f"{url!r}: cannot resolve {host!r}: {exc}") from None
    addresses = {str(info[4][0]) for info in infos}
    outside = sorted(a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback)
    if not addresses or outside:
        raise TargetRefused(
            f"{url!r}: {host!r} resolves to non-loopback {outside}; only 127.0.0.0/8 and ::1 are allowed"
        )


@dataclass(frozen=True)
class Payload:
    """One request body and what a correct answer looks like."""

    body: bytes
    content_type: str
    images: int
    """Images this request carries (for images/s)."""
    expect_list: bool
    """True: the answer is a JSON list with `images` entries; False: one JSON object."""


@dataclass(frozen=True)
class LoadSpec:
    """What to send, how hard, and for how long at most."""

    url: str
    concurrency: int
    max_requests: int
    """Requests issued in the measured phase at most."""
    max_seconds: float
    """Seconds the measured phase may issue requests for."""
    warmup_requests: int = 0
    """Requests sent (same concurrency) before measuring; not recorded."""
    timeout_s: float = 30.0
    """Per-request timeout."""

    def validate(self) -> None:
        check_loopback(self.url)
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ValueError(
                f"concurrency must be in [1, {MAX_CONCURRENCY}], got {self.concurrency}"
            )
        if not 1 <= self.max_requests <= MAX_REQUESTS:
            raise ValueError(
                f"max_requests must be in [1, {MAX_REQUESTS}], got {self.max_requests}"
            )
        if not 0 < self.max_seconds <= MAX_SECONDS:
            raise ValueError(f"max_seconds must be in (0, {MAX_SECONDS}], got {self.max_seconds}")
        if not 0 <= self.warmup_requests <= MAX_REQUESTS:
            raise ValueError(f"warmup_requests must be in [0, {MAX_REQUESTS}]")
        if not 0 < self.timeout_s <= MAX_SECONDS:
            raise ValueError(f"timeout_s must be in (0, {MAX_SECONDS}]")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class LoadResult:
    """What one measured phase produced."""

    url: str
    concurrency: int
    requests: int = 0
    """Requests completed (OK or not)."""
    ok: int = 0
    images_ok: int = 0
    """Images in OK requests."""
    elapsed_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    """Latency of every OK request."""
    errors: Counter[str] = field(default_factory=Counter)
    """Failures by kind (`http_503`, `timeout`, `bad_response`, ...)."""

    @property
    def failed(self) -> int:
        return self.requests - self.ok

    def p(self, q: float) -> float:
        return percentile(sorted(self.latencies_ms), q)

    @property
    def requests_per_s(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def images_per_s(self) -> float:
        return self.images_ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        return {
            "url": self.url,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "ok": self.ok,
            "failed": self.failed,
            "errors": dict(self.errors),
            "elapsed_s": round(self.elapsed_s, 3),
            "requests_per_s": round(self.requests_per_s, 1),
            "images_per_s": round(self.images_per_s, 1),
            "p50_ms": round(percentile(lat, 50), 2),
            "p90_ms": round(percentile(lat, 90), 2),
            "p99_ms": round(percentile(lat, 99), 2),
            "max_ms": round(lat[-1], 2) if lat else math.nan,
        }


def _answer_ok(payload: Payload, body: bytes) -> bool:
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    if payload.expect_list:
        return (
            isinstance(doc, list)
            and len(doc) == payload.images
            and all(isinstance(d, dict) and "prediction" in d for d in doc)
        )
    return isinstance(doc, dict) and "prediction" in doc


async def _phase(
    session: Any,
    spec: LoadSpec,
    payloads: Sequence[Payload],
    max_requests: int,
    max_seconds: float,
    result: LoadResult | None,
) -> None:
    import aiohttp

    issued = 0
    started = time.perf_counter()
    deadline = started + max_seconds

    async def worker() -> None:
        nonlocal issued
        while issued < max_requests and time.perf_counter() < deadline:
            payload = payloads[issued % len(payloads)]
            issued += 1
            t0 = time.perf_counter()
            kind = "ok"
            try:
                async with session.post(
                    spec.url, data=payload.body, headers={"Content-Type": payload.content_type}
                ) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        kind = f"http_{resp.status}"
                    elif not _answer_ok(payload, body):
                        kind = "bad_response"
            except TimeoutError:
                kind = "timeout"
            except aiohttp.ClientError as exc:
                kind = type(exc).__name__
            latency_ms = (time.perf_counter() - t0) * 1000.0
            if result is None:
                continue
            result.requests += 1
            if kind == "ok":
                result.ok += 1
                result.images_ok += payload.images
                result.latencies_ms.append(latency_ms)
            else:
                result.errors[kind] += 1

    await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
    if result is not None:
        result.elapsed_s = time.perf_counter() - started


async def run_load(spec: LoadSpec, payloads: Sequence[Payload]) -> LoadResult:
    """Warm up, then measure; the spec is validated (loopback, bounds) first."""
    import aiohttp

    spec.validate()
    if not payloads:
        raise ValueError("no payloads to send")
    connector = aiohttp.TCPConnector(limit=spec.concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if spec.warmup_requests:
            await _phase(session, spec, payloads, spec.warmup_requests, spec.max_seconds, None)
        result = LoadResult(url=spec.url, concurrency=spec.concurrency)
        await _phase(session, spec, payloads, spec.max_requests, spec.max_seconds, result)
    return result


def run_load_sync(spec: LoadSpec, payloads: Sequence[Payload]) -> LoadResult:
    """`run_load` in a fresh event loop (for scripts and tests)."""
    return asyncio.run(run_load(spec, payloads))
