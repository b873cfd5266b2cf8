"""The node agent: watches, binding, one worker per pod, clean shutdown.

Threads: one watch thread per informer (pods on this node; unscheduled pods, once per
served namespace or once for all) and the bounded API pool of `Kube`. Everything else —
binding decisions, pod workers, probes, status writes, events, the optional ingress —
runs on one asyncio loop.

Binding: unscheduled pods that `scheduling.bind_candidate` accepts and that fit next to
the node's pods (including pods bound but not yet seen, "assumed") are bound through the
`pods/binding` subresource. A 409 means another agent was faster; it is not an error.
Pods that do not fit get `PodScheduled=False, reason Unschedulable` (once per reason)
and are retried every few seconds.

Pods: the informer on `spec.nodeName=<node>` starts a `PodWorker` per UID, forwards
updates (deletionTimestamp starts graceful termination) and deletions. Workers of
pods that were removed, or that finished their deletion, are forgotten only when the
pod is gone from the API, so a pod held by a finalizer is never started twice.

Shutdown (SIGTERM/SIGINT): stop watches, stop every worker (SIGTERM, grace, SIGKILL),
mark the node NotReady (or delete it), close sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import Any

import aiohttp

from . import podnet
from .kube import ApiError, Informer, Kube
from .node import NodeRegistrar
from .pod import IPAllocator, NodeContext, PodWorker
from .scheduling import bind_candidate, fits
from .settings import AgentSettings
from .status import TERMINAL_PHASES, now

log = logging.getLogger(__name__)

Obj = dict[str, Any]
RESYNC_SECONDS = 3.0
ASSUME_SECONDS = 30.0


class EventRecorder:
    """Best-effort core/v1 Events (bounded queue; dropped when full or on errors)."""

    def __init__(self, kube: Kube, node: str, maxsize: int = 500) -> None:
        self.kube = kube
        self.node = node
        self.queue: asyncio.Queue[Obj] = asyncio.Queue(maxsize=maxsize)

    def __call__(self, pod: Obj, etype: str, reason: str, message: str) -> None:
        meta = pod.get("metadata") or {}
        t = now()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{meta.get('name')}.",
                "namespace": meta.get("namespace"),
            },
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
            "type": etype,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "kubetrain-nodeagent", "host": self.node},
            "reportingComponent": "kubetrain-nodeagent",
            "reportingInstance": self.node,
            "firstTimestamp": t,
            "lastTimestamp": t,
            "count": 1,
        }
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(event)

    async def run(self) -> None:
        while True:
            event = await self.queue.get()
            ns = event["metadata"]["namespace"]
            try:
                await self.kube.call(self.kube.core.create_namespaced_event, ns, event)
            except ApiError as exc:
                log.debug("event dropped: %s", exc)


class NodeAgent:
    """Runs pods bound to one Node until `stop` is set."""

    def __init__(self, settings: AgentSettings, kube: Kube) -> None:
        self.settings = settings
        self.kube = kube
        self.registrar = NodeRegistrar(settings, kube)
        self.pod_cidr = settings.pod_cidr
        self.workers: dict[str, PodWorker] = {}
        self.finished: set[str] = set()
        self.binding: set[str] = set()
        self.assumed: dict[str, tuple[Obj, float]] = {}
        self.unschedulable_said: dict[str, str] = {}
        self.mine: Informer | None = None
        self.pending: list[Informer] = []
        self.ctx: NodeContext | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---------------------------------------------------------------- run
    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        # Before anything is created: a bad range is a clean startup error (cli reports it).
        self.pod_cidr = podnet.resolve(s.pod_cidr)
        s.node_dir.mkdir(parents=True, exist_ok=True)
        session = aiohttp.ClientSession()
        events = EventRecorder(self.kube, s.node_name)
        ingress = None
        heartbeat_stop = asyncio.Event()
        try:
            self.registrar.pod_cidr = self.pod_cidr
            await self.registrar.register()
            self.ctx = NodeContext(
                settings=s,
                kube=self.kube,
                allocatable=dict(self.registrar.resources),
                session=session,
                ips=IPAllocator(self.pod_cidr, s.host_ip, self.kube),
                event=events,
                cluster=self.kube.cluster,
            )
            self._spawn(events.run(), "events")
            self._spawn(self.registrar.heartbeat(heartbeat_stop), "heartbeat")
            self.mine = Informer(
                "pods-on-node",
                self.kube,
                self.kube.core.list_pod_for_all_namespaces,
                handler=self._on_my_pod,
                field_selector=f"spec.nodeName={s.node_name}",
            )
            self.mine.start()
            selector = f"spec.nodeName=,spec.schedulerName={s.scheduler_name}"
            if s.namespaces:
                for ns in s.namespaces:
                    self.pending.append(
                        Informer(
                            f"unscheduled-{ns}",
                            self.kube,
                            self.kube.core.list_namespaced_pod,
                            ns,
                            handler=self._on_unscheduled,
                            field_selector=selector,
                        )
                    )
            else:
                self.pending.append(
                    Informer(
                        "unscheduled",
                        self.kube,
                        self.kube.core.list_pod_for_all_namespaces,
                        handler=self._on_unscheduled,
                        field_selector=selector,
                    )
                )
            # Adopt our pods before binding new ones, so capacity accounting is right.
            await self._wait_synced([self.mine], stop)
            for inf in self.pending:
                inf.start()
            if s.ingress is not None:
                from .ingress import IngressProxy

                isettings = s.ingress
                if s.namespaces and not isettings.namespaces:
                    # An agent scoped to namespaces serves only their Ingresses.
                    isettings = dataclasses.replace(isettings, namespaces=s.namespaces)
                ingress = IngressProxy(isettings, self.kube)
                await ingress.start()
            log.info(
                "node agent %s ready: pod range %s, scheduler %s, namespaces %s, state %s",
                s.node_name,
                self.pod_cidr,
                s.scheduler_name,
                ",".join(s.namespaces) or "(all)",
                s.node_dir,
            )
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=RESYNC_SECONDS)
                self._resync()
        finally:
            log.info("node agent %s shutting down", s.node_name)
            for inf in [*self.pending, *([self.mine] if self.mine else [])]:
                inf.stop()
            if ingress is not None:
                await ingress.stop()
            await self._stop_workers()
            heartbeat_stop.set()
            await self.registrar.unregister(delete=s.delete_node_on_exit)
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await session.close()
            log.info("node agent %s stopped", s.node_name)

    async def _wait_synced(self, informers: list[Informer], stop: asyncio.Event) -> None:
        waits = [asyncio.create_task(i.synced.wait()) for i in informers]
        stopper = asyncio.create_task(stop.wait())
        try:
            while not all(w.done() for w in waits) and not stop.is_set():
                await asyncio.wait([*waits, stopper], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in [*waits, stopper]:
                t.cancel()

    async def _stop_workers(self) -> None:
        workers = list(self.workers.values())
        for w in workers:
            w.request_stop("shutdown")
        tasks = [w.task for w in workers if w.task is not None]
        if tasks:
            log.info("stopping %d pod(s)", len(tasks))
            await asyncio.wait(tasks, timeout=self.settings.shutdown_grace + 10)
            for t in tasks:
                if not t.done():
                    t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # ---------------------------------------------------------------- pods on this node
    def _on_my_pod(self, etype: str, pod: Obj) -> None:
        meta = pod.get("metadata") or {}
        uid = str(meta.get("uid", ""))
        self.assumed.pop(uid, None)
        worker = self.workers.get(uid)
        if etype == "DELETED":
            self.finished.discard(uid)
            if worker is not None:
                worker.request_stop("gone")
            return
        if worker is not None:
            worker.update(pod)
            return
        if uid in self.finished or self.ctx is None:
            return
        worker = PodWorker(self.ctx, pod)
        self.workers[uid] = worker
        worker.start()
        assert worker.task is not None

        def done(_: asyncio.Task[None], uid: str = uid) -> None:
            self.workers.pop(uid, None)
            if self.mine is not None and any(
                (p.get("metadata") or {}).get("uid") == uid for p in self.mine.store.values()
            ):
                self.finished.add(uid)

        worker.task.add_done_callback(done)
        log.info("pod %s/%s: accepted (uid %s)", meta.get("namespace"), meta.get("name"), uid)

    # ---------------------------------------------------------------- binding
    def _on_unscheduled(self, etype: str, pod: Obj) -> None:
        if etype != "DELETED":
            self._consider(pod)

    def _resync(self) -> None:
        for inf in self.pending:
            for pod in list(inf.store.values()):
                self._consider(pod)
        if self.mine is not None:
            live = {(p.get("metadata") or {}).get("uid") for p in self.mine.store.values()}
            self.finished &= live
        # Bound bookkeeping: a pod bound but never seen (deleted at once) stops counting.
        cutoff = time.monotonic() - ASSUME_SECONDS
        for uid in [u for u, (_, t) in self.assumed.items() if t < cutoff]:
            del self.assumed[uid]
        pending = {
            (p.get("metadata") or {}).get("uid") for inf in self.pending for p in inf.store.values()
        }
        for uid in [u for u in self.unschedulable_said if u not in pending]:
            del self.unschedulable_said[uid]

    def _consider(self, pod: Obj) -> None:
        meta = pod.get("metadata") or {}
        uid = str(meta.get("uid", ""))
        ok, _why = bind_candidate(pod, self.registrar.view())
        if not ok or uid in self.binding or uid in self.assumed or self.ctx is None:
            return
        running = [
            p
            for p in (self.mine.store.values() if self.mine else [])
            if (p.get("status") or {}).get("phase") not in TERMINAL_PHASES
        ] + [p for p, _ in self.assumed.values()]
        fit, why = fits(pod, running, self.ctx.allocatable)
        if not fit:
            if self.unschedulable_said.get(uid) != why:
                self.unschedulable_said[uid] = why
                self._spawn(self._say_unschedulable(pod, why), "unschedulable")
            return
        self.unschedulable_said.pop(uid, None)
        self.binding.add(uid)
        self.assumed[uid] = (pod, time.monotonic())
        self._spawn(self._bind(pod), f"bind-{uid}")

    async def _bind(self, pod: Obj) -> None:
        meta = pod.get("metadata") or {}
        ns, name, uid = str(meta.get("namespace")), str(meta.get("name")), str(meta.get("uid"))
        node = self.settings.node_name
        try:
            await self.kube.bind(ns, name, uid, node)
            log.info("pod %s/%s: bound to %s", ns, name, node)
            if self.ctx is not None:
                self.ctx.event(
                    pod, "Normal", "Scheduled", f"Successfully assigned {ns}/{name} to {node}"
                )
        except ApiError as exc:
            self.assumed.pop(uid, None)
            if exc.status in (404, 409):
                log.debug("pod %s/%s: not bound (%s)", ns, name, exc)
            else:
                log.warning("pod %s/%s: binding failed: %s", ns, name, exc)
        finally:
            self.binding.discard(uid)

    async def _say_unschedulable(self, pod: Obj, why: str) -> None:
        meta = pod.get("metadata") or {}
        cond = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": f"0/1 nodes are available: {self.settings.node_name}: {why}",
            "lastProbeTime": None,
            "lastTransitionTime": now(),
        }
        try:
            await self.kube.patch_pod_status(
                str(meta.get("namespace")), str(meta.get("name")), {"conditions": [cond]}
            )
        except ApiError as exc:
            log.debug("could not mark %s unschedulable: %s", meta.get("name"), exc)
