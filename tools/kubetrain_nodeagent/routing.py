"""Ingress routing as pure functions: rules -> routes, request -> route -> endpoints.

Matching follows the networking.k8s.io/v1 Ingress semantics:

* host: an exact host beats a wildcard (`*.example.com` matches exactly one extra DNS
  label), which beats a rule without host; the request's Host header is compared without
  port and case-insensitively;
* path: `Exact` matches the path exactly; `Prefix` (and `ImplementationSpecific`)
  matches element-wise on `/`-separated segments, so `/foo` matches `/foo` and `/foo/bar`
  but not `/foobar`; the longest matching path wins and `Exact` beats `Prefix` of equal
  length;
* an Ingress's `defaultBackend` serves requests no rule matches;
* on ties the oldest Ingress wins (creationTimestamp, then namespace/name).

Endpoints come from the Service's selector and the pods, not from EndpointSlices: pod
IPs are loopback addresses (podnet.py), which the apiserver refuses in EndpointSlices
("may not be in the loopback range"), so the EndpointSlice controller never publishes
them. `pod_endpoints` therefore recomputes what that controller would publish as ready
(k8s.io/endpointslice, v1.36 `syncService`/`reconcile`/`podToEndpoint`/`FindPort`):

* no endpoints for `type: ExternalName` or a Service without selector;
* pods of the Service's namespace whose labels match every selector pair;
* not terminal (phase Succeeded/Failed) and with an IP (`status.podIPs`, else `podIP`);
* bound to a node (`spec.nodeName`), unless `publishNotReadyAddresses`;
* ready = `publishNotReadyAddresses`, or the pod's `Ready` condition is True and it has
  no deletionTimestamp (a terminating pod is never ready);
* the port: a numeric `targetPort` as is (unset means `port`); a named one is the
  `containerPort` of the first container port with that name and the Service port's
  protocol (TCP by default), in containers, then in sidecar init containers
  (`restartPolicy: Always`); a pod without it gives no endpoint for that port.

One deliberate difference: the controller also skips (unless `publishNotReadyAddresses`)
pods whose Node object no longer exists; the ingress does not watch Nodes (pods get their
IP from a running agent, whose Node exists), it only requires `spec.nodeName` to be set.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True)
class Route:
    """One (host, path) -> service backend rule from an Ingress."""

    namespace: str
    ingress: str
    host: str
    """Lowercase host, `*.suffix` wildcard, or "" for any host."""
    path: str
    path_type: str
    """"Exact" or "Prefix" (ImplementationSpecific is treated as Prefix)."""
    service: str
    port: int | str
    default: bool = False
    """True for an Ingress's spec.defaultBackend."""


def ingress_class_of(ing: Obj) -> str:
    spec = ing.get("spec") or {}
    annotations = (ing.get("metadata") or {}).get("annotations") or {}
    return str(spec.get("ingressClassName") or annotations.get("kubernetes.io/ingress.class") or "")


def _backend(b: Obj | None) -> tuple[str, int | str] | None:
    svc = (b or {}).get("service") or {}
    if not svc.get("name"):
        return None
    port = svc.get("port") or {}
    if port.get("number"):
        return svc["name"], int(port["number"])
    if port.get("name"):
        return svc["name"], str(port["name"])
    return None


def build_routes(ingresses: Iterable[Obj], ingress_class: str = "") -> list[Route]:
    """All routes of the Ingresses this proxy serves (all, or those of `ingress_class`)."""
    routes: list[Route] = []
    # Oldest Ingress first: on equal matches (and for defaultBackend) the oldest wins,
    # as with ingress-nginx, so the choice is deterministic.
    ordered = sorted(
        ingresses,
        key=lambda i: (
            str((i.get("metadata") or {}).get("creationTimestamp") or ""),
            str((i.get("metadata") or {}).get("namespace") or ""),
            str((i.get("metadata") or {}).get("name") or ""),
        ),
    )
    for ing in ordered:
        if ingress_class and ingress_class_of(ing) != ingress_class:
            continue
        meta = ing.get("metadata") or {}
        ns, name = meta.get("namespace", ""), meta.get("name", "")
        spec = ing.get("spec") or {}
        for rule in spec.get("rules") or []:
            host = str(rule.get("host") or "").lower()
            for p in (rule.get("http") or {}).get("paths") or []:
                be = _backend(p.get("backend"))
                if be is None:
                    continue
                ptype = p.get("pathType") or "Prefix"
                routes.append(
                    Route(
                        namespace=ns,
                        ingress=name,
                        host=host,
                        path=p.get("path") or "/",
                        path_type="Exact" if ptype == "Exact" else "Prefix",
                        service=be[0],
                        port=be[1],
                    )
                )
        be = _backend(spec.get("defaultBackend"))
        if be is not None:
            routes.append(Route(ns, name, "", "/", "Prefix", be[0], be[1], default=True))
    return routes


def _host_rank(rule_host: str, host: str) -> int:
    """3 exact, 2 wildcard, 1 any-host rule, 0 no match."""
    if not rule_host:
        return 1
    if rule_host == host:
        return 3
    if rule_host.startswith("*."):
        suffix = rule_host[1:]
        head = host[: -len(suffix)] if host.endswith(suffix) else ""
        if head and "." not in head:
            return 2
    return 0


def _path_matches(route: Route, path: str) -> bool:
    if route.path_type == "Exact":
        return path == route.path
    prefix = [s for s in route.path.split("/") if s]
    parts = [s for s in path.split("/") if s]
    return parts[: len(prefix)] == prefix


def normalise_host(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):  # IPv6 literal
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


def match(routes: Iterable[Route], host_header: str, path: str) -> Route | None:
    """The route serving `host_header` + `path`, or None."""
    host = normalise_host(host_header)
    best: tuple[int, int, int] | None = None
    chosen: Route | None = None
    fallback: Route | None = None
    for r in routes:
        if r.default:
            fallback = fallback or r
            continue
        rank = _host_rank(r.host, host)
        if not rank or not _path_matches(r, path):
            continue
        key = (
            rank,
            len(r.path.rstrip("/")) if r.path_type == "Prefix" else len(r.path),
            r.path_type == "Exact",
        )
        if best is None or key > best:
            best, chosen = key, r
    return chosen or fallback


def service_port(service: Obj | None, port: int | str) -> tuple[Obj | None, str]:
    """The Service port an Ingress backend refers to (a number is `spec.ports[].port`, a
    name is `spec.ports[].name`); (None, why) if there is no such Service or port."""
    if service is None:
        return None, "service not found"
    for p in (service.get("spec") or {}).get("ports") or []:
        if isinstance(port, int) and int(p.get("port", 0)) == port:
            return p, ""
        if isinstance(port, str) and p.get("name") == port:
            return p, ""
    return None, f"service has no port {port!r}"


def endpoint_source_problem(service: Obj) -> str:
    """Why the EndpointSlice controller would publish no endpoints at all for the Service
    ("" when it manages them from the selector)."""
    spec = service.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return "service is of type ExternalName (it has no endpoints)"
    if not spec.get("selector"):
        # Selector-less Services need hand-written EndpointSlices, which cannot carry the
        # loopback pod IPs used here.
        return "service has no selector (only selector-based Services are routed)"
    return ""


def pod_is_ready(pod: Obj) -> bool:
    """The pod's Ready condition is True (podutil.IsPodReady)."""
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def pod_ipv4s(pod: Obj) -> list[str]:
    """The pod's IPv4 addresses: `status.podIPs`, else `status.podIP` (the controller reads
    podIPs, which the apiserver keeps consistent with podIP)."""
    status = pod.get("status") or {}
    ips = [str(x.get("ip") or "") for x in status.get("podIPs") or []]
    if not ips and status.get("podIP"):
        ips = [str(status["podIP"])]
    out = []
    for ip in ips:
        try:
            if isinstance(ipaddress.ip_address(ip), ipaddress.IPv4Address):
                out.append(ip)
        except ValueError:
            continue
    return out


def target_port(pod: Obj, port: Obj) -> int | None:
    """The pod port a Service port targets, as `FindPort` resolves it; None if the pod
    has no container port of that name and protocol."""
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int):
        return target
    if target is None:
        return None
    protocol = port.get("protocol") or "TCP"
    spec = pod.get("spec") or {}
    sidecars = [c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
    for c in [*(spec.get("containers") or []), *sidecars]:
        for cp in c.get("ports") or []:
            if cp.get("name") == target and (cp.get("protocol") or "TCP") == protocol:
                return int(cp["containerPort"])
    return None


def pod_endpoints(service: Obj, port: Obj, pods: Iterable[Obj]) -> list[tuple[str, int]]:
    """Sorted (IP, port) of the endpoints the EndpointSlice controller would publish as
    ready for this Service port (see the module docstring for the rules)."""
    if endpoint_source_problem(service):
        return []
    spec = service.get("spec") or {}
    selector: dict[str, str] = spec.get("selector") or {}
    publish_not_ready = bool(spec.get("publishNotReadyAddresses"))
    ns = (service.get("metadata") or {}).get("namespace")
    out: set[tuple[str, int]] = set()
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("namespace") != ns:
            continue
        labels = meta.get("labels") or {}
        if any(labels.get(k) != v for k, v in selector.items()):
            continue
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        if not publish_not_ready and not (pod.get("spec") or {}).get("nodeName"):
            continue  # the controller's Node lookup fails for "" -> skipped
        ready = publish_not_ready or (pod_is_ready(pod) and not meta.get("deletionTimestamp"))
        if not ready:
            continue
        number = target_port(pod, port)
        if number is None:
            continue
        out.update((ip, number) for ip in pod_ipv4s(pod))
    return sorted(out)


def split_loopback(endpoints: Iterable[tuple[str, int]]) -> tuple[list[tuple[str, int]], list[str]]:
    """(loopback endpoints, the other addresses). The ingress connects only to 127.0.0.0/8:
    a pod IP elsewhere (e.g. a fake one a test wrote into pod status) is never a target."""
    keep: list[tuple[str, int]] = []
    refused: list[str] = []
    for ip, number in endpoints:
        if ipaddress.ip_address(ip).is_loopback:
            keep.append((ip, number))
        else:
            refused.append(ip)
    return keep, refused
