"""Typed settings of the node agent and the ingress, built once from the command line."""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import podnet
from .podspec import DEFAULT_SCHEDULER


def default_venv_bin() -> str:
    """The bin directory of the running interpreter's environment (the project venv)."""
    return str(Path(sys.prefix) / "bin")


@dataclass(frozen=True)
class IngressSettings:
    """The local ingress proxy."""

    port: int = 8081
    """TCP port on `address` to serve HTTP on."""
    address: str = "127.0.0.1"
    """Listen address (loopback only by default)."""
    ingress_class: str = ""
    """Serve only Ingresses of this class (spec.ingressClassName); empty serves all."""
    namespaces: tuple[str, ...] = ()
    """Only these namespaces' Ingresses; empty means all namespaces."""
    upstream_timeout: float = 300.0
    """Seconds a proxied request may take end to end."""
    connect_timeout: float = 5.0
    """Seconds to connect to one endpoint before trying the next."""
    max_body: int = 64 * 1024 * 1024
    """Largest request body accepted, in bytes."""


@dataclass(frozen=True)
class AgentSettings:
    """The node agent."""

    node_name: str = field(default_factory=lambda: f"kubetrain-{socket.gethostname()}".lower())
    """Name of the Node object this agent registers and runs pods for."""
    kubeconfig: str | None = None
    """Admin kubeconfig of the platform (default: $KUBECONFIG, then ~/.kube/config)."""
    state_dir: Path = Path(".kubetrain/nodeagent")
    """Per-node state: pod directories, volumes, logs (under <state_dir>/<node_name>)."""
    pod_cidr: str = "auto"
    """Range pod IPs are taken from (see podnet.py): "auto" = 127.0.0.0/24, or any /16../30
    inside 127.0.0.0/8 (loopback only); 127.0.0.1 (host services) is never handed out."""
    host_ip: str = "127.0.0.1"
    """The node's address (status.hostIP)."""
    cpu: str = field(default_factory=lambda: str(os.cpu_count() or 1))
    """Node capacity/allocatable cpu."""
    memory: str = ""
    """Node capacity/allocatable memory (default: physical memory)."""
    max_pods: int = 110
    """Node capacity/allocatable pods."""
    scheduler_name: str = DEFAULT_SCHEDULER
    """Bind only pods whose spec.schedulerName is this."""
    namespaces: tuple[str, ...] = ()
    """Bind only pods in these namespaces; empty means all namespaces."""
    labels: tuple[tuple[str, str], ...] = ()
    """Extra Node labels (key, value)."""
    venv_bin: str = field(default_factory=default_venv_bin)
    """Directory put first on every container's PATH (the project venv's bin)."""
    pass_env: tuple[str, ...] = ()
    """Names of agent environment variables passed through to containers."""
    heartbeat_seconds: float = 10.0
    """How often the node Lease is renewed."""
    lease_seconds: int = 40
    """Lease duration written to the node Lease."""
    node_status_seconds: float = 60.0
    """How often the Node status (conditions' heartbeat time) is refreshed."""
    restart_backoff: float = 10.0
    """First container restart back-off in seconds (doubles per crash)."""
    restart_backoff_max: float = 300.0
    """Back-off cap in seconds."""
    backoff_reset_seconds: float = 600.0
    """A container that ran this long resets its back-off (kubelet: 10 minutes)."""
    shutdown_grace: float = 10.0
    """On agent shutdown, seconds between SIGTERM and SIGKILL for pod processes."""
    delete_node_on_exit: bool = False
    """Delete the Node (and its Lease) when the agent stops (tests); otherwise mark NotReady."""
    api_workers: int = 8
    """Threads (and pooled connections) for API calls."""
    ingress: IngressSettings | None = None
    """Also run the local ingress in this process."""

    @property
    def node_dir(self) -> Path:
        return self.state_dir / self.node_name

    def validate(self) -> None:
        """Raise ValueError naming the bad setting."""
        if self.pod_cidr != podnet.AUTO:
            podnet.check_range(self.pod_cidr)  # PodNetworkError is a ValueError
        if not self.node_name or len(self.node_name) > 253:
            raise ValueError("--node-name must be a DNS subdomain")
        if not Path(self.venv_bin).is_dir():
            raise ValueError(f"--venv-bin {self.venv_bin!r} is not a directory")
        if self.max_pods < 1:
            raise ValueError("--max-pods must be at least 1")
