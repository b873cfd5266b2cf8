"""Pod IP ranges that are local to this host.

Pod processes run on the host, so a pod IP must be an address the host can bind. The
obvious candidates, 127.0.0.x, are local without any setup, but the apiserver rejects
loopback addresses in EndpointSlices and Endpoints ("may not be in the loopback
range"), so with loopback pod IPs the real EndpointSlice controller cannot publish any
endpoint. The agent therefore prefers a private, non-loopback range made local with an
"AnyIP" route (`ip route replace local <cidr> dev lo`): every address in it is bindable
and reachable on this host only, nothing leaves the machine, and EndpointSlices accept it.

`--pod-cidr auto` (the default) uses 10.244.0.0/24 when it is local or the agent may make
it local (CAP_NET_ADMIN), else falls back to 127.0.0.0/24 with a warning; an explicit
range is used as given and must be local (or be made local).
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import socket
import subprocess

log = logging.getLogger(__name__)

AUTO = "auto"
PREFERRED = "10.244.0.0/24"
LOOPBACK = "127.0.0.0/24"


class PodNetworkError(Exception):
    """The pod range cannot be used; the message says how to fix it."""


def is_loopback_range(cidr: str) -> bool:
    return ipaddress.ip_network(cidr, strict=False).is_loopback


def probe_address(cidr: str) -> str:
    """An address of the range to test bindability with (the last usable one)."""
    net = ipaddress.ip_network(cidr, strict=False)
    return str(net.broadcast_address - 1)


def is_local(ip: str) -> bool:
    """Whether this host can bind `ip` (EADDRNOTAVAIL otherwise)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((ip, 0))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("ip") or "/usr/sbin/ip"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=10, check=False)


def add_local_route(cidr: str) -> None:
    """`ip route replace local <cidr> dev lo`; PodNetworkError with the fix on failure."""
    try:
        res = _ip("route", "replace", "local", cidr, "dev", "lo")
    except (OSError, subprocess.SubprocessError) as exc:
        raise PodNetworkError(f"cannot run `ip route`: {exc}") from exc
    if res.returncode != 0:
        raise PodNetworkError(
            f"pod range {cidr} is not local and `ip route replace local {cidr} dev lo` failed: "
            f"{res.stderr.strip() or res.returncode}. Run it once as root, or pass "
            f"--pod-cidr {LOOPBACK} (loopback pod IPs: EndpointSlices stay empty, the ingress "
            "then routes by Service selector)"
        )


def remove_local_route(cidr: str) -> None:
    try:
        res = _ip("route", "del", "local", cidr, "dev", "lo")
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not remove the local route for %s: %s", cidr, exc)
        return
    if res.returncode != 0:
        log.warning("could not remove the local route for %s: %s", cidr, res.stderr.strip())


def prepare(cidr: str, *, allow_route: bool = True) -> tuple[str, bool]:
    """Resolve `auto` and make the range local. Returns (cidr, whether we added a route)."""
    if cidr == AUTO:
        try:
            return prepare(PREFERRED, allow_route=allow_route)
        except PodNetworkError as exc:
            log.warning(
                "%s; using loopback pod IPs (%s): EndpointSlices cannot list them, so the "
                "ingress resolves Services by selector",
                exc,
                LOOPBACK,
            )
            return LOOPBACK, False
    if is_loopback_range(cidr) or is_local(probe_address(cidr)):
        return cidr, False
    if not allow_route:
        raise PodNetworkError(
            f"pod range {cidr} is not local to this host (and routes may not be added)"
        )
    add_local_route(cidr)
    if not is_local(probe_address(cidr)):
        remove_local_route(cidr)
        raise PodNetworkError(f"pod range {cidr} is still not bindable after adding a local route")
    log.info("made pod range %s local (ip route replace local %s dev lo)", cidr, cidr)
    return cidr, True
