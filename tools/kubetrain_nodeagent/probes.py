"""One probe attempt (httpGet, tcpSocket, exec), with the kubelet's success rules.

httpGet succeeds on a status in [200, 400) without following redirects; the host
defaults to the pod IP and a named port resolves through the container's ports. tcpSocket
succeeds when a connection opens. exec runs the command in the container's environment
in its own process group and succeeds on exit 0. Each attempt is bounded by
`timeoutSeconds` (default 1). gRPC probes are reported as failures with a clear message.

httpGet/tcpSocket (probes and preStop hooks) connect only to loopback addresses: on this
machine traffic may only go to 127.0.0.0/8, pod IPs are loopback (podnet.py), and an
explicit `host` elsewhere fails the attempt with a message saying so instead of
connecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from .runtime import StartError, wait_pid, which

Obj = dict[str, Any]


@dataclass(frozen=True)
class ProbeTiming:
    """A probe's schedule and thresholds with Kubernetes defaults."""

    initial_delay: float
    period: float
    timeout: float
    success_threshold: int
    failure_threshold: int

    @classmethod
    def of(cls, probe: Obj) -> ProbeTiming:
        return cls(
            initial_delay=float(probe.get("initialDelaySeconds") or 0),
            period=float(probe.get("periodSeconds") or 10),
            timeout=float(probe.get("timeoutSeconds") or 1),
            success_threshold=int(probe.get("successThreshold") or 1),
            failure_threshold=int(probe.get("failureThreshold") or 3),
        )


def _port(value: Any, ports: Mapping[str, int]) -> int:
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    if value in ports:
        return ports[value]
    raise ValueError(f"port {value!r} is not a named port of the container")


def _loopback_host(spec: Obj, pod_ip: str) -> str:
    """The host to connect to (default the pod IP); ValueError unless it is loopback."""
    host = str(spec.get("host") or pod_ip)
    if host == "localhost":
        return host
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"host {host!r} is not a loopback address: the kubetrain node agent only "
            "connects to 127.0.0.0/8 (leave host unset to use the pod IP)"
        )
    return host


async def run_probe(
    probe: Obj,
    *,
    pod_ip: str,
    ports: Mapping[str, int],
    env: Mapping[str, str],
    cwd: str,
    session: aiohttp.ClientSession,
) -> tuple[bool, str]:
    """Run one attempt; returns (success, message for the failure)."""
    timeout = float(probe.get("timeoutSeconds") or 1)
    try:
        if probe.get("httpGet"):
            return await _http(probe["httpGet"], pod_ip, ports, timeout, session)
        if probe.get("tcpSocket"):
            return await _tcp(probe["tcpSocket"], pod_ip, ports, timeout)
        if probe.get("exec"):
            return await _exec(list(probe["exec"].get("command") or []), env, cwd, timeout)
        if probe.get("grpc"):
            return False, "grpc probes are not supported by the kubetrain node agent"
    except ValueError as exc:
        return False, str(exc)
    return False, "probe has no handler (httpGet, tcpSocket or exec)"


async def _http(
    spec: Obj, pod_ip: str, ports: Mapping[str, int], timeout: float, session: aiohttp.ClientSession
) -> tuple[bool, str]:
    host = _loopback_host(spec, pod_ip)
    port = _port(spec.get("port"), ports)
    scheme = str(spec.get("scheme") or "HTTP").lower()
    path = spec.get("path") or "/"
    if not path.startswith("/"):
        path = "/" + path
    url = f"{scheme}://{host}:{port}{path}"
    headers = {h.get("name", ""): h.get("value", "") for h in spec.get("httpHeaders") or []}
    headers.setdefault("User-Agent", "kube-probe/kubetrain")
    try:
        async with session.get(
            url,
            headers=headers,
            allow_redirects=False,
            ssl=False,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            await resp.read()
            if 200 <= resp.status < 400:
                return True, ""
            return False, f"HTTP probe failed with statuscode: {resp.status}"
    except TimeoutError:
        return False, f'Get "{url}": context deadline exceeded'
    except aiohttp.ClientError as exc:
        return False, f'Get "{url}": {exc}'


async def _tcp(
    spec: Obj, pod_ip: str, ports: Mapping[str, int], timeout: float
) -> tuple[bool, str]:
    host = _loopback_host(spec, pod_ip)
    port = _port(spec.get("port"), ports)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        return False, f"dial tcp {host}:{port}: {exc or 'timeout'}"
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return True, ""


async def _exec(
    command: list[str], env: Mapping[str, str], cwd: str, timeout: float
) -> tuple[bool, str]:
    if not command:
        return False, "exec probe has an empty command"
    try:
        exe = which(command[0], env)
    except StartError as exc:
        return False, str(exc)
    try:
        popen = subprocess.Popen(
            [exe, *command[1:]],
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        return False, f"exec probe failed to start: {exc}"
    try:
        rc = await asyncio.wait_for(wait_pid(popen), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        await wait_pid(popen)
        return False, f"command timed out after {timeout:g}s"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
    return (rc == 0), ("" if rc == 0 else f"command exited with {rc}")
