"""The Node object and its heartbeats.

Registration creates (or adopts) the Node with kubelet-like labels, capacity and
allocatable (cpu, memory, pods, ephemeral-storage), addresses (InternalIP = host IP) and
conditions (Ready True, pressure conditions False). Liveness is a Lease in
`kube-node-lease` named after the node (renewed every `heartbeat_seconds`, owned by the
Node so it is garbage-collected with it); the Node status is refreshed every
`node_status_seconds`. The latest Node object is kept, so cordoning (`spec.unschedulable`)
and taints are honoured by the binding logic.

On shutdown the node is marked NotReady (or deleted with its Lease, for tests).
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform as host_platform
import socket
from typing import Any

import psutil

from .kube import MERGE, STRATEGIC, ApiError, Kube
from .scheduling import NodeView
from .settings import AgentSettings
from .status import now, now_micro

log = logging.getLogger(__name__)

Obj = dict[str, Any]
LEASE_NAMESPACE = "kube-node-lease"
AGENT_VERSION = "v0.1.0-kubetrain"
CONDITION_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


def node_resources(settings: AgentSettings) -> dict[str, str]:
    memory = settings.memory or f"{psutil.virtual_memory().total // 1024}Ki"
    disk = psutil.disk_usage(str(settings.state_dir.resolve().anchor or "/")).total
    return {
        "cpu": settings.cpu,
        "memory": memory,
        "pods": str(settings.max_pods),
        "ephemeral-storage": f"{disk // 1024}Ki",
    }


def node_labels(settings: AgentSettings) -> dict[str, str]:
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(
        host_platform.machine(), host_platform.machine()
    )
    labels = {
        "kubernetes.io/hostname": settings.node_name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch,
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": arch,
        "kubetrain.dev/node-agent": "true",
    }
    labels.update(dict(settings.labels))
    return labels


def _conditions(ready: bool, message: str, prior: list[Obj]) -> list[Obj]:
    t = now()
    old = {c.get("type"): c for c in prior}

    def cond(ctype: str, status: str, reason: str, msg: str) -> Obj:
        p = old.get(ctype) or {}
        ltt = p.get("lastTransitionTime") if p.get("status") == status else None
        return {
            "type": ctype,
            "status": status,
            "reason": reason,
            "message": msg,
            "lastHeartbeatTime": t,
            "lastTransitionTime": ltt or t,
        }

    return [
        cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubetrain node agent"),
        cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubetrain node agent"),
        cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubetrain node agent"),
        cond(
            "Ready",
            "True" if ready else "False",
            "KubeletReady" if ready else "KubeletNotReady",
            message,
        ),
    ]


class NodeRegistrar:
    """Owns this agent's Node and Lease."""

    def __init__(self, settings: AgentSettings, kube: Kube, pod_cidr: str = "") -> None:
        self.settings = settings
        self.pod_cidr = pod_cidr or settings.pod_cidr
        self.kube = kube
        self.name = settings.node_name
        self.resources = node_resources(settings)
        self.node: Obj = {}

    def view(self) -> NodeView:
        spec = self.node.get("spec") or {}
        return NodeView(
            name=self.name,
            labels=(self.node.get("metadata") or {}).get("labels") or node_labels(self.settings),
            scheduler_name=self.settings.scheduler_name,
            namespaces=frozenset(self.settings.namespaces),
            unschedulable=bool(spec.get("unschedulable")),
            taints=tuple(spec.get("taints") or ()),
        )

    async def register(self) -> None:
        core = self.kube.core
        existing = await self.kube.get_optional(core.read_node, self.name)
        labels = node_labels(self.settings)
        if existing is None:
            body = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": self.name, "labels": labels},
                "spec": {"podCIDR": self.pod_cidr, "podCIDRs": [self.pod_cidr]},
            }
            self.node = await self.kube.call(core.create_node, body)
            log.info("registered node %s", self.name)
        else:
            self.node = await self.kube.call(
                core.patch_node, self.name, {"metadata": {"labels": labels}}, _content_type=MERGE
            )
            log.info("adopted existing node %s", self.name)
        await self.update_status(ready=True, message="kubetrain node agent is posting ready status")
        await self.clear_condition_taints()
        await self.renew_lease()

    async def clear_condition_taints(self) -> None:
        """Drop the not-ready/unreachable taints now that the node posts Ready.

        The NodeRestriction/TaintNodesByCondition admission puts `node.kubernetes.io/not-ready`
        on every new Node; in a full cluster the node lifecycle controller lifts it once
        the kubelet reports Ready. The local platform runs no such controller, so the agent
        does it for its own node (optimistically, guarded by resourceVersion).
        """
        meta = self.node.get("metadata") or {}
        taints = (self.node.get("spec") or {}).get("taints") or []
        keep = [t for t in taints if t.get("key") not in CONDITION_TAINTS]
        if len(keep) == len(taints):
            return
        body = {
            "metadata": {"resourceVersion": meta.get("resourceVersion")},
            "spec": {"taints": keep or None},
        }
        try:
            self.node = await self.kube.call(
                self.kube.core.patch_node, self.name, body, _content_type=MERGE
            )
            log.info("node %s: removed condition taints", self.name)
        except ApiError as exc:
            log.warning("node %s: could not remove condition taints: %s", self.name, exc)

    async def update_status(self, *, ready: bool, message: str) -> None:
        prior = (self.node.get("status") or {}).get("conditions") or []
        uname = os.uname()
        status = {
            "capacity": self.resources,
            "allocatable": self.resources,
            "conditions": _conditions(ready, message, prior),
            "addresses": [
                {"type": "InternalIP", "address": self.settings.host_ip},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": _machine_id(),
                "systemUUID": _machine_id(),
                "bootID": _boot_id(),
                "kernelVersion": uname.release,
                "osImage": f"{uname.sysname} (kubetrain node agent on {socket.gethostname()})",
                "containerRuntimeVersion": f"kubetrain-process://{AGENT_VERSION}",
                "kubeletVersion": AGENT_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": node_labels(self.settings)["kubernetes.io/arch"],
            },
        }
        self.node = await self.kube.call(
            self.kube.core.patch_node_status,
            self.name,
            {"status": status},
            _content_type=STRATEGIC,
        )

    async def renew_lease(self) -> None:
        coord = self.kube.coordination
        spec = {
            "holderIdentity": self.name,
            "leaseDurationSeconds": self.settings.lease_seconds,
            "renewTime": now_micro(),
        }
        try:
            await self.kube.call(
                coord.patch_namespaced_lease,
                self.name,
                LEASE_NAMESPACE,
                {"spec": spec},
                _content_type=MERGE,
            )
        except ApiError as exc:
            if exc.status != 404:
                raise
            uid = (self.node.get("metadata") or {}).get("uid")
            meta: Obj = {"name": self.name, "namespace": LEASE_NAMESPACE}
            if uid:
                meta["ownerReferences"] = [
                    {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": uid}
                ]
            await self.kube.call(
                coord.create_namespaced_lease,
                LEASE_NAMESPACE,
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": meta,
                    "spec": spec,
                },
            )

    async def heartbeat(self, stop: asyncio.Event) -> None:
        """Renew the Lease and refresh the Node status until `stop` is set."""
        loop = asyncio.get_running_loop()
        next_status = loop.time() + self.settings.node_status_seconds
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.settings.heartbeat_seconds)
                return
            except TimeoutError:
                pass
            try:
                await self.renew_lease()
                if loop.time() >= next_status:
                    await self.update_status(
                        ready=True, message="kubetrain node agent is posting ready status"
                    )
                    next_status = loop.time() + self.settings.node_status_seconds
                else:
                    self.node = await self.kube.call(self.kube.core.read_node, self.name)
                    await self.clear_condition_taints()
            except ApiError as exc:
                log.warning("node heartbeat failed: %s", exc)
                if exc.status == 404:
                    log.warning("node %s was deleted; registering it again", self.name)
                    try:
                        await self.register()
                    except ApiError as exc2:
                        log.warning("re-registering node failed: %s", exc2)

    async def unregister(self, delete: bool) -> None:
        try:
            if delete:
                for fn, args in (
                    (self.kube.coordination.delete_namespaced_lease, (self.name, LEASE_NAMESPACE)),
                    (self.kube.core.delete_node, (self.name,)),
                ):
                    try:
                        await self.kube.call(fn, *args)
                    except ApiError as exc:
                        if exc.status != 404:
                            raise
                log.info("deleted node %s", self.name)
            else:
                await self.update_status(ready=False, message="kubetrain node agent stopped")
                log.info("marked node %s NotReady", self.name)
        except ApiError as exc:
            log.warning("node %s: unregister failed: %s", self.name, exc)


def _read_first(paths: tuple[str, ...]) -> str:
    for p in paths:
        try:
            with open(p) as f:
                value = f.read().strip()
            if value:
                return value
        except OSError:
            continue
    return ""


def _machine_id() -> str:
    return _read_first(("/etc/machine-id", "/var/lib/dbus/machine-id")) or socket.gethostname()


def _boot_id() -> str:
    return _read_first(("/proc/sys/kernel/random/boot_id",))
