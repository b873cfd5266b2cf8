"""The local ingress: an aiohttp reverse proxy driven by Ingress objects.

Three informers (Ingresses, Services, non-terminal Pods — all namespaces, or the given
ones) keep an in-memory view; routes are rebuilt when an Ingress changes. For each request:

1. `routing.match` picks the rule by host and path (exact host > wildcard > any; longest
   path; Exact beats Prefix), falling back to an Ingress's defaultBackend;
2. the backend Service port (number or name) is looked up, and its ready endpoints are
   computed from the Service's selector and the pods (`routing.pod_endpoints`), exactly
   as the EndpointSlice controller would publish them (pod Ready condition, not
   terminating, targetPort by number or by container port name);
3. the request goes to the next endpoint in round-robin order. A connection failure
   (nothing was sent yet) moves on to the next endpoint, up to 3, so a pod that has just
   stopped does not fail requests during a rollout.

Why not EndpointSlices: pod IPs are loopback addresses (servers and tests on this machine
may only send traffic to 127.0.0.0/8, see podnet.py), and the apiserver rejects loopback
addresses in EndpointSlices, so the real controller cannot publish these endpoints. For the
same rule the proxy connects only to loopback endpoints: a non-loopback pod IP (say, a fake
one a test wrote into a pod's status) is refused with a 503 naming it, never contacted.

Answers when there is nothing to route to are explicit: 404 "no Ingress rule matches",
503 "no ready endpoints for service ..." (or the reason the Service has none), 502 when
every endpoint refused the connection, 504 on an upstream timeout. Request bodies are read
in full (bounded by `max_body`) so that a retry can resend them; responses are passed back
unmodified apart from hop-by-hop headers. The proxy starts listening only after the first
full list of all three collections, so a listening port means the routes are loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Iterator
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from .kube import Informer, Kube
from .routing import (
    Route,
    build_routes,
    endpoint_source_problem,
    match,
    pod_endpoints,
    service_port,
    split_loopback,
)
from .settings import IngressSettings

log = logging.getLogger(__name__)

Obj = dict[str, Any]
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
}
MAX_ATTEMPTS = 3
# Finished pods are never endpoints; leaving them out keeps the pod store small.
LIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"


class IngressProxy:
    """Serves HTTP on settings.address:settings.port until `stop`."""

    def __init__(self, settings: IngressSettings, kube: Kube) -> None:
        self.settings = settings
        self.kube = kube
        self.informers: dict[str, list[Informer]] = {
            "ingress": [],
            "service": [],
            "pod": [],
        }
        self._routes: list[Route] | None = None
        self._rr: dict[tuple[str, str, str], itertools.count[int]] = {}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = settings.port

    # ---------------------------------------------------------------- state
    def _collections(self) -> None:
        n, c = self.kube.networking, self.kube.core
        specs = {
            "ingress": (n.list_ingress_for_all_namespaces, n.list_namespaced_ingress),
            "service": (c.list_service_for_all_namespaces, c.list_namespaced_service),
            "pod": (c.list_pod_for_all_namespaces, c.list_namespaced_pod),
        }
        for kind, (all_fn, ns_fn) in specs.items():
            handler = self._ingress_changed if kind == "ingress" else None
            extra: dict[str, Any] = {"field_selector": LIVE_PODS} if kind == "pod" else {}
            if self.settings.namespaces:
                for ns in self.settings.namespaces:
                    self.informers[kind].append(
                        Informer(f"{kind}-{ns}", self.kube, ns_fn, ns, handler=handler, **extra)
                    )
            else:
                self.informers[kind].append(
                    Informer(kind, self.kube, all_fn, handler=handler, **extra)
                )

    def _ingress_changed(self, _etype: str, _obj: Obj) -> None:
        self._routes = None

    def _store(self, kind: str) -> dict[str, Obj]:
        out: dict[str, Obj] = {}
        for inf in self.informers[kind]:
            out.update(inf.store)
        return out

    def _pods(self) -> Iterator[Obj]:
        # No copy: iterated synchronously on the loop, where the stores are updated.
        for inf in self.informers["pod"]:
            yield from inf.store.values()

    @property
    def routes(self) -> list[Route]:
        if self._routes is None:
            self._routes = build_routes(
                self._store("ingress").values(), self.settings.ingress_class
            )
        return self._routes

    # ---------------------------------------------------------------- lifecycle
    async def start(self, sync_timeout: float = 60.0) -> None:
        self._collections()
        all_informers = [i for group in self.informers.values() for i in group]
        for inf in all_informers:
            inf.start()
        try:
            await asyncio.wait_for(
                asyncio.gather(*(i.synced.wait() for i in all_informers)), timeout=sync_timeout
            )
        except TimeoutError:
            log.warning(
                "ingress: initial list not complete after %.0fs; serving anyway", sync_timeout
            )
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            connector=aiohttp.TCPConnector(limit=100, force_close=False),
        )
        app = web.Application(client_max_size=self.settings.max_body)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.address, self.settings.port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("ingress listening on http://%s:%d", self.settings.address, self.port)

    async def stop(self) -> None:
        for group in self.informers.values():
            for inf in group:
                inf.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # ---------------------------------------------------------------- proxy
    def _text(self, status: int, message: str) -> web.Response:
        return web.Response(status=status, text=f"kubetrain ingress: {message}\n")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        host = request.headers.get("Host", "")
        path = request.path
        route = match(self.routes, host, path)
        if route is None:
            return self._text(404, f"no Ingress rule matches host {host!r} path {path!r}")
        backend = f"service {route.namespace}/{route.service} port {route.port} (ingress {route.namespace}/{route.ingress})"
        service = self._store("service").get(f"{route.namespace}/{route.service}")
        svc_port, why = service_port(service, route.port)
        if service is None or svc_port is None:
            return self._text(503, f"{backend}: {why}")
        why = endpoint_source_problem(service)
        if why:
            return self._text(503, f"{backend}: {why}")
        endpoints, refused = split_loopback(pod_endpoints(service, svc_port, self._pods()))
        if not endpoints:
            if refused:
                return self._text(
                    503,
                    f"no ready endpoints for {backend}: pod IPs {', '.join(sorted(refused))} are "
                    "not loopback addresses and this ingress only connects to 127.0.0.0/8",
                )
            return self._text(503, f"no ready endpoints for {backend}")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._text(413, f"request body larger than {self.settings.max_body} bytes")
        counter = self._rr.setdefault(
            (route.namespace, route.service, str(route.port)), itertools.count()
        )
        start = next(counter)
        headers = self._forward_headers(request)
        last_error = ""
        for attempt in range(min(len(endpoints), MAX_ATTEMPTS)):
            addr, port = endpoints[(start + attempt) % len(endpoints)]
            url = URL(f"http://{addr}:{port}{request.raw_path}", encoded=True)
            try:
                return await self._forward(request.method, url, headers, body)
            except aiohttp.ClientConnectorError as exc:
                last_error = f"{addr}:{port}: {exc.os_error or exc}"
                log.info("ingress: %s refused (%s); trying the next endpoint", url, last_error)
                continue
            except TimeoutError:
                return self._text(504, f"{backend}: endpoint {addr}:{port} timed out")
            except aiohttp.ClientError as exc:
                return self._text(502, f"{backend}: endpoint {addr}:{port}: {exc}")
        return self._text(502, f"{backend}: no endpoint accepted the connection ({last_error})")

    def _forward_headers(self, request: web.Request) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict()
        for k, v in request.headers.items():
            if k.lower() not in HOP_BY_HOP:
                headers.add(k, v)
        peer = request.remote or ""
        prior = request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
        headers["X-Forwarded-Host"] = request.headers.get("Host", "")
        headers["X-Forwarded-Proto"] = request.scheme
        headers["X-Real-IP"] = peer
        return headers

    async def _forward(
        self, method: str, url: URL, headers: CIMultiDict[str], body: bytes
    ) -> web.Response:
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(
            total=self.settings.upstream_timeout, sock_connect=self.settings.connect_timeout
        )
        async with self._session.request(
            method, url, headers=headers, data=body or None, allow_redirects=False, timeout=timeout
        ) as resp:
            payload = await resp.read()
            out_headers: CIMultiDict[str] = CIMultiDict()
            for k, v in resp.headers.items():
                if k.lower() not in HOP_BY_HOP:
                    out_headers.add(k, v)
            return web.Response(status=resp.status, headers=out_headers, body=payload)


async def serve(settings: IngressSettings, kube: Kube, stop: asyncio.Event) -> None:
    """Run the proxy until `stop` is set (the standalone `kubetrain-nodeagent ingress`)."""
    proxy = IngressProxy(settings, kube)
    await proxy.start()
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await proxy.stop()
