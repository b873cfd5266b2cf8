"""Pod IP ranges: loopback only (127.0.0.0/8).

Pod processes run on the host, so a pod IP must be an address the host can bind. On this
machine traffic may only go to loopback addresses: servers, probes and the ingress may
never target another range, not even a private one made local with an AnyIP route
(`ip route ... local ... dev lo`), which is monitored and flagged. So the pod range is
always a subnet of 127.0.0.0/8, which Linux routes to `lo` without any setup, and the
agent never touches routes.

`--pod-cidr auto` (the default) is 127.0.0.0/24; an explicit range must lie inside
127.0.0.0/8 (IPv4, /16 to /30). The allocator (`pod.IPAllocator`) hands out every host
address of the range except the network and broadcast addresses, 127.0.0.1 (host
services listen there) and the node's host IP, so in `auto` pods get 127.0.0.2-254.

The price: the apiserver rejects loopback addresses in EndpointSlices and Endpoints
("may not be in the loopback range"), so the real EndpointSlice controller cannot
publish any endpoint for these pods. The ingress therefore resolves a Service's ready
endpoints from its selector and the Ready pods itself (see `routing.pod_endpoints`).
"""

from __future__ import annotations

import ipaddress
import socket

AUTO = "auto"
DEFAULT_RANGE = "127.0.0.0/24"
LOOPBACK_NET = ipaddress.IPv4Network("127.0.0.0/8")
HOST_SERVICES_IP = "127.0.0.1"
MIN_PREFIX, MAX_PREFIX = 16, 30


class PodNetworkError(ValueError):
    """The pod range cannot be used; the message says why and what to pass instead."""


def check_range(cidr: str) -> ipaddress.IPv4Network:
    """The range as a network if it is an allowed pod range, else PodNetworkError."""
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError as exc:
        raise PodNetworkError(f"--pod-cidr {cidr!r} is not a CIDR range: {exc}") from exc
    if not isinstance(net, ipaddress.IPv4Network) or not net.subnet_of(LOOPBACK_NET):
        raise PodNetworkError(
            f"--pod-cidr {cidr!r} must lie inside 127.0.0.0/8: on this machine servers and "
            "tests may only send traffic to loopback addresses, so pod IPs (which probes and "
            "the ingress connect to) must be loopback; use e.g. 127.0.5.0/24 or 'auto' "
            f"({DEFAULT_RANGE})"
        )
    if not MIN_PREFIX <= net.prefixlen <= MAX_PREFIX:
        raise PodNetworkError(
            f"--pod-cidr {cidr!r} must be between /{MIN_PREFIX} and /{MAX_PREFIX}"
        )
    return net


def resolve(cidr: str) -> str:
    """`auto` -> the default range; any range is checked (`check_range`) and must be
    bindable here (a sanity check: Linux makes all of 127.0.0.0/8 local)."""
    net = check_range(DEFAULT_RANGE if cidr == AUTO else cidr)
    probe = str(net.broadcast_address - 1)
    if not is_local(probe):
        raise PodNetworkError(
            f"pod range {net} is not bindable on this host ({probe} gives EADDRNOTAVAIL); "
            "is the loopback interface up?"
        )
    return str(net)


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
