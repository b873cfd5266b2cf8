"""The Kubernetes API as the agent uses it: the official client, plain dicts, bounded threads.

Design:
* All calls go through the kubernetes Python client's typed API methods with
  `_preload_content=False`, and responses are parsed with `json.loads`: the agent works on
  the API's own camelCase JSON (what the docs and `kubectl get -o json` show) and skips
  the client's model deserialisation.
* The client is synchronous. Coroutines call it through `Kube.call`, which runs it on a
  bounded ThreadPoolExecutor (`api_workers`), so a burst of pods cannot create a burst of
  threads or connections.
* `Informer` is list+watch in one daemon thread per watched collection. It relists on
  410 Gone, on a closed watch after its server-side timeout, and after errors (with
  capped backoff), and delivers changes into the asyncio loop with
  `call_soon_threadsafe`, where the store lives; consumers never see a half-applied list.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

Obj = dict[str, Any]
T = TypeVar("T")

STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"


class ApiError(Exception):
    """An API call failed; `status` is the HTTP status (0 for transport errors)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


def _api_error(exc: Exception) -> ApiError:
    if isinstance(exc, ApiException):
        body = exc.body
        msg = exc.reason or ""
        if body:
            try:
                doc = json.loads(body)
                msg = doc.get("message") or msg
            except (ValueError, TypeError, AttributeError):
                msg = str(body)[:300]
        return ApiError(int(exc.status or 0), str(msg))
    return ApiError(0, f"{type(exc).__name__}: {exc}")


def _json(resp: Any) -> Obj:
    try:
        data = resp.data
    finally:
        with contextlib.suppress(Exception):
            resp.release_conn()
    return json.loads(data) if data else {}


@dataclass(frozen=True)
class ClusterInfo:
    """Where the apiserver is, for the kubeconfigs handed to pods."""

    server: str
    ca_file: str | None


class Kube:
    """A thin, dict-based wrapper around the kubernetes client."""

    def __init__(self, kubeconfig: str | None, *, api_workers: int = 8, timeout: float = 30.0):
        cfg = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        # One pooled connection per worker plus one per watch; a few spare.
        cfg.connection_pool_maxsize = api_workers + 8
        self.configuration = cfg
        self.api_client = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self.api_client)
        self.coordination = client.CoordinationV1Api(self.api_client)
        self.networking = client.NetworkingV1Api(self.api_client)
        self.cluster = ClusterInfo(server=cfg.host, ca_file=cfg.ssl_ca_cert)
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=api_workers, thread_name_prefix="kube-api")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):
            self.api_client.close()

    # ------------------------------------------------------------------ plumbing
    def raw(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Obj:
        """Call a typed client method, return the JSON body as a dict (blocking)."""
        kwargs.setdefault("_request_timeout", self.timeout)
        try:
            return _json(fn(*args, _preload_content=False, **kwargs))
        except ApiError:
            raise
        except Exception as exc:
            raise _api_error(exc) from exc

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Obj:
        """`raw` on the bounded API thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, functools.partial(self.raw, fn, *args, **kwargs)
        )

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Any blocking helper on the same bounded pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args))

    # ------------------------------------------------------------------ pods
    async def patch_pod_status(self, ns: str, name: str, status: Obj) -> Obj:
        return await self.call(
            self.core.patch_namespaced_pod_status,
            name,
            ns,
            {"status": status},
            _content_type=STRATEGIC,
        )

    async def delete_pod_now(self, ns: str, name: str, uid: str) -> None:
        """Delete with grace 0 and a UID precondition (the kubelet's final delete)."""
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        try:
            await self.call(self.core.delete_namespaced_pod, name, ns, body=body)
        except ApiError as exc:
            if exc.status not in (404, 409):
                raise

    async def bind(self, ns: str, name: str, uid: str, node: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": ns, "uid": uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        await self.call(self.core.create_namespaced_pod_binding, name, ns, body)

    async def get_optional(self, fn: Callable[..., Any], *args: Any) -> Obj | None:
        try:
            return await self.call(fn, *args)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise


Handler = Callable[[str, Obj], None]


def object_key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


class Informer:
    """list+watch of one collection in a daemon thread; store and callbacks in the loop.

    `handler(event_type, obj)` runs in the event loop for ADDED/MODIFIED/DELETED, including
    the synthetic ones a relist produces. `synced` is set after the first list.
    """

    def __init__(
        self,
        name: str,
        kube: Kube,
        list_fn: Callable[..., Any],
        *args: Any,
        handler: Handler | None = None,
        watch_timeout: int = 60,
        **kwargs: Any,
    ) -> None:
        self.name = name
        self.kube = kube
        self.list_fn = list_fn
        self.args = args
        self.kwargs = kwargs
        self.handler = handler
        self.watch_timeout = watch_timeout
        self.store: dict[str, Obj] = {}
        self.synced = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._resp: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        resp = self._resp
        if resp is not None:
            with contextlib.suppress(Exception):
                resp.shutdown()
            with contextlib.suppress(Exception):
                resp.close()

    def join(self, timeout: float = 2.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------- loop side
    def _apply_list(self, items: list[Obj]) -> None:
        fresh = {object_key(o): o for o in items}
        old = self.store
        self.store = dict(fresh)
        for key, obj in fresh.items():
            prev = old.get(key)
            if prev is None:
                self._emit("ADDED", obj)
            elif (prev.get("metadata") or {}).get("resourceVersion") != (
                obj.get("metadata") or {}
            ).get("resourceVersion"):
                self._emit("MODIFIED", obj)
        for key, obj in old.items():
            if key not in fresh:
                self._emit("DELETED", obj)
        self.synced.set()

    def _apply(self, etype: str, obj: Obj) -> None:
        key = object_key(obj)
        if etype == "DELETED":
            self.store.pop(key, None)
        else:
            self.store[key] = obj
        self._emit(etype, obj)

    def _emit(self, etype: str, obj: Obj) -> None:
        if self.handler is None:
            return
        try:
            self.handler(etype, obj)
        except Exception:
            log.exception("informer %s: handler failed on %s %s", self.name, etype, object_key(obj))

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop closed during shutdown
            loop.call_soon_threadsafe(fn, *args)

    # ------------------------------------------------------------- thread side
    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                rv: str | None = self._list()
                backoff = 0.5
                while rv is not None and not self._stop.is_set():
                    rv = self._watch(rv)  # None: 410 Gone or a broken stream, relist
            except Exception as exc:
                if self._stop.is_set():
                    return
                log.warning("informer %s: %s; relisting in %.1fs", self.name, exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 15.0)

    def _list(self) -> str:
        doc = self.kube.raw(self.list_fn, *self.args, **self.kwargs)
        items = doc.get("items") or []
        self._post(self._apply_list, items)
        return str((doc.get("metadata") or {}).get("resourceVersion") or "")

    def _watch(self, rv: str) -> str | None:
        resp = self.list_fn(
            *self.args,
            watch=True,
            resource_version=rv,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout,
            _preload_content=False,
            _request_timeout=(10, self.watch_timeout + 30),
            **self.kwargs,
        )
        self._resp = resp
        started = time.monotonic()
        try:
            buf = b""
            for chunk in resp.stream(65536, decode_content=True):
                if self._stop.is_set():
                    return None
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    etype = event.get("type")
                    obj = event.get("object") or {}
                    if etype == "ERROR":
                        code = obj.get("code")
                        if code == 410:
                            return None
                        raise ApiError(int(code or 0), str(obj.get("message")))
                    new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if new_rv:
                        rv = str(new_rv)
                    if etype == "BOOKMARK":
                        continue
                    self._post(self._apply, str(etype), obj)
        finally:
            self._resp = None
            with contextlib.suppress(Exception):
                resp.release_conn()
        if time.monotonic() - started < 1.0:
            # A watch that ends at once would spin; a short pause keeps it bounded.
            self._stop.wait(1.0)
        return rv
