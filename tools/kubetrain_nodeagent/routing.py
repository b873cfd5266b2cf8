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

A backend's Service port (number or name) is resolved to the EndpointSlice port with the
same name, and only endpoints whose `conditions.ready` is not false are used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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


def service_port_name(service: Obj | None, port: int | str) -> tuple[str | None, str]:
    """The Service port's name for a backend port (number or name); (None, why) if absent."""
    if service is None:
        return None, "service not found"
    for p in (service.get("spec") or {}).get("ports") or []:
        if isinstance(port, int) and int(p.get("port", 0)) == port:
            return str(p.get("name") or ""), ""
        if isinstance(port, str) and p.get("name") == port:
            return port, ""
    return None, f"service has no port {port!r}"


def ready_endpoints(slices: Iterable[Obj], port_name: str) -> list[tuple[str, int]]:
    """(address, port) of every ready endpoint in the Service's EndpointSlices."""
    out: list[tuple[str, int]] = []
    seen: set[tuple[str, int]] = set()
    for s in slices:
        if s.get("addressType") not in (None, "IPv4", "IPv6"):
            continue
        number = None
        for p in s.get("ports") or []:
            if (p.get("name") or "") == port_name and p.get("port"):
                number = int(p["port"])
        if number is None:
            continue
        for ep in s.get("endpoints") or []:
            cond = ep.get("conditions") or {}
            if cond.get("ready") is False:
                continue
            for addr in ep.get("addresses") or []:
                if (addr, number) not in seen:
                    seen.add((addr, number))
                    out.append((addr, number))
    return sorted(out)


def pod_endpoints(
    service: Obj | None, port: int | str, pods: Iterable[Obj]
) -> list[tuple[str, int]]:
    """Ready endpoints computed from the Service's selector, as the EndpointSlice
    controller would: for loopback pod IPs, which EndpointSlices cannot carry."""
    if service is None:
        return []
    spec = service.get("spec") or {}
    selector = spec.get("selector") or {}
    if not selector:
        return []
    target: int | str | None = None
    for p in spec.get("ports") or []:
        if (isinstance(port, int) and int(p.get("port", 0)) == port) or (
            isinstance(port, str) and p.get("name") == port
        ):
            target = p.get("targetPort") or p.get("port")
    if target is None:
        return []
    ns = (service.get("metadata") or {}).get("namespace")
    out: list[tuple[str, int]] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        labels = meta.get("labels") or {}
        if meta.get("namespace") != ns or meta.get("deletionTimestamp"):
            continue
        if any(labels.get(k) != v for k, v in selector.items()):
            continue
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        if not ready or not status.get("podIP") or status.get("phase") != "Running":
            continue
        number: int | None = None
        if isinstance(target, int) or str(target).isdigit():
            number = int(target)
        else:
            for c in (pod.get("spec") or {}).get("containers") or []:
                for cp in c.get("ports") or []:
                    if cp.get("name") == target:
                        number = int(cp["containerPort"])
        if number is not None:
            out.append((str(status["podIP"]), number))
    return sorted(out)


def slices_for(slices: Mapping[str, Obj], namespace: str, service: str) -> list[Obj]:
    return [
        s
        for s in slices.values()
        if (s.get("metadata") or {}).get("namespace") == namespace
        and ((s.get("metadata") or {}).get("labels") or {}).get("kubernetes.io/service-name")
        == service
    ]
