"""The kubelet's status rules, as pure functions over a small container-state model.

`ContainerState` is what the pod worker mutates as processes start and exit; `pod_status`
turns the pod's container states into the `status` the Job and ReplicaSet controllers
(and the ingress's endpoint resolution) read. The phase logic mirrors kubelet's `getPhase`:

* Pending while init containers have not all succeeded, or any regular container has
  never started (waiting without a previous termination);
* Running while any container runs (or all stopped but restartPolicy will restart them);
* Succeeded when all stopped with exit 0 and nothing restarts; Failed when all stopped,
  at least one failed, and restartPolicy is Never (or an init container failed under Never).

Conditions keep their lastTransitionTime unless their status flips, so repeated writes of
an unchanged pod are byte-identical and the worker can skip them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

WAITING = "waiting"
RUNNING = "running"
TERMINATED = "terminated"

PENDING = "Pending"
RUNNING_PHASE = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
TERMINAL_PHASES = (SUCCEEDED, FAILED)


def now() -> str:
    """RFC 3339 UTC with seconds, the format of Kubernetes `Time` fields."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    """RFC 3339 UTC with microseconds (`MicroTime`, e.g. Lease renewTime)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Terminated:
    """One finished container instance."""

    exit_code: int
    reason: str
    started_at: str
    finished_at: str
    message: str = ""
    signal: int | None = None
    container_id: str = ""

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": self.started_at or None,
            "finishedAt": self.finished_at,
        }
        if self.message:
            out["message"] = self.message
        if self.signal:
            out["signal"] = self.signal
        if self.container_id:
            out["containerID"] = self.container_id
        return out

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> Terminated:
        return cls(
            exit_code=int(d.get("exitCode", 0)),
            reason=str(d.get("reason") or ""),
            started_at=str(d.get("startedAt") or ""),
            finished_at=str(d.get("finishedAt") or ""),
            message=str(d.get("message") or ""),
            signal=d.get("signal"),
            container_id=str(d.get("containerID") or ""),
        )


def exit_reason(exit_code: int) -> str:
    return "Completed" if exit_code == 0 else "Error"


@dataclass
class ContainerState:
    """A container's current state as the node sees it."""

    name: str
    image: str
    restart_count: int = 0
    state: str = WAITING
    reason: str = "ContainerCreating"
    message: str = ""
    started_at: str = ""
    terminated: Terminated | None = None
    last_terminated: Terminated | None = None
    ready: bool = False
    started: bool = False
    container_id: str = ""

    def set_waiting(self, reason: str, message: str = "") -> None:
        if self.state == TERMINATED and self.terminated is not None:
            self.last_terminated = self.terminated
        self.state, self.reason, self.message = WAITING, reason, message
        self.terminated = None
        self.ready = self.started = False

    def set_running(self, started_at: str, container_id: str) -> None:
        if self.state == TERMINATED and self.terminated is not None:
            self.last_terminated = self.terminated
        self.state, self.reason, self.message = RUNNING, "", ""
        self.started_at = started_at
        self.container_id = container_id
        self.terminated = None
        self.ready = self.started = False

    def set_terminated(self, t: Terminated) -> None:
        self.state = TERMINATED
        self.terminated = t
        self.reason, self.message = t.reason, t.message
        self.ready = self.started = False

    @property
    def succeeded(self) -> bool:
        return (
            self.state == TERMINATED
            and self.terminated is not None
            and self.terminated.exit_code == 0
        )

    def to_api(self) -> dict[str, Any]:
        if self.state == RUNNING:
            state: dict[str, Any] = {"running": {"startedAt": self.started_at}}
        elif self.state == TERMINATED and self.terminated is not None:
            state = {"terminated": self.terminated.to_api()}
        else:
            waiting: dict[str, Any] = {"reason": self.reason}
            if self.message:
                waiting["message"] = self.message
            state = {"waiting": waiting}
        out: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": f"kubetrain-local://{self.image}",
            "ready": self.ready,
            "started": self.started and self.state == RUNNING,
            "restartCount": self.restart_count,
            "state": state,
            "lastState": (
                {"terminated": self.last_terminated.to_api()} if self.last_terminated else {}
            ),
        }
        if self.container_id:
            out["containerID"] = self.container_id
        return out


def restore(name: str, image: str, api_status: Mapping[str, Any] | None) -> ContainerState:
    """Rebuild a container's state from a status the agent wrote before it restarted.

    A container that was running when the agent stopped has lost its process (the agent
    kills all processes on shutdown), so it becomes terminated with exit 137.
    """
    c = ContainerState(name=name, image=image)
    if not api_status:
        return c
    c.restart_count = int(api_status.get("restartCount") or 0)
    last = (api_status.get("lastState") or {}).get("terminated")
    if last:
        c.last_terminated = Terminated.from_api(last)
    st = api_status.get("state") or {}
    if st.get("terminated"):
        c.set_terminated(Terminated.from_api(st["terminated"]))
    elif st.get("running"):
        c.set_terminated(
            Terminated(
                exit_code=137,
                reason="Error",
                started_at=str(st["running"].get("startedAt") or ""),
                finished_at=now(),
                message="process lost: the kubetrain node agent restarted",
                container_id=str(api_status.get("containerID") or ""),
            )
        )
    return c


def will_restart(restart_policy: str, exit_code: int) -> bool:
    if restart_policy == "Always":
        return True
    if restart_policy == "OnFailure":
        return exit_code != 0
    return False


def pod_phase(
    restart_policy: str,
    init: Sequence[ContainerState],
    regular: Sequence[ContainerState],
    *,
    init_failed: bool = False,
) -> str:
    """kubelet's getPhase for a pod whose init containers run before the regular ones.

    `init_failed` means an init container failed and will not be retried (Never).
    """
    if init_failed:
        return FAILED
    if not all(c.succeeded for c in init):
        return PENDING
    waiting = running = stopped = succeeded = 0
    for c in regular:
        if c.state == RUNNING:
            running += 1
        elif c.state == TERMINATED:
            stopped += 1
            if c.succeeded:
                succeeded += 1
        elif c.last_terminated is not None:
            stopped += 1
        else:
            waiting += 1
    if waiting > 0:
        return PENDING
    if running > 0:
        return RUNNING_PHASE
    if stopped > 0:
        if restart_policy == "Always":
            return RUNNING_PHASE
        if stopped == succeeded:
            return SUCCEEDED
        if restart_policy == "Never":
            return FAILED
        return RUNNING_PHASE
    return PENDING


def _condition(
    ctype: str,
    ok: bool,
    prior: Mapping[str, Mapping[str, Any]],
    reason: str = "",
    message: str = "",
) -> dict[str, Any]:
    status = "True" if ok else "False"
    old = prior.get(ctype)
    ltt = old.get("lastTransitionTime") if old and old.get("status") == status else None
    # reason/message are always present: null deletes a stale value in the strategic
    # merge of the status patch (conditions merge by type, field by field).
    return {
        "type": ctype,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": ltt or now(),
        "reason": reason if not ok and reason else None,
        "message": message if not ok and reason and message else None,
    }


@dataclass
class PodView:
    """Everything `pod_status` needs besides the container states."""

    restart_policy: str
    pod_ip: str
    host_ip: str
    start_time: str
    prior_conditions: list[dict[str, Any]] = field(default_factory=list)
    sandbox_ready: bool = False
    readiness_gates: list[str] = field(default_factory=list)
    init_failed: bool = False
    phase_override: str = ""
    """A terminal phase decided outside the container states (pod deletion)."""


def pod_status(
    view: PodView, init: Sequence[ContainerState], regular: Sequence[ContainerState]
) -> dict[str, Any]:
    """The pod `status` object the kubelet would write for these states."""
    phase = view.phase_override or pod_phase(
        view.restart_policy, init, regular, init_failed=view.init_failed
    )
    prior = {c.get("type", ""): c for c in view.prior_conditions}
    terminal = phase in TERMINAL_PHASES
    init_done = all(c.succeeded for c in init)
    pending_init = [c.name for c in init if not c.succeeded]
    unready = [c.name for c in regular if not c.ready]
    gates_ok = all((prior.get(g) or {}).get("status") == "True" for g in view.readiness_gates)
    if terminal:
        containers_ready, why = False, "PodCompleted"
    else:
        containers_ready, why = not unready and bool(regular), "ContainersNotReady"
    ready_msg = (
        f"containers with unready status: [{' '.join(unready)}]" if unready and not terminal else ""
    )
    conditions = [
        _condition("PodReadyToStartContainers", view.sandbox_ready and not terminal, prior),
        _condition(
            "Initialized",
            init_done,
            prior,
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(pending_init)}]",
        ),
        _condition("ContainersReady", containers_ready, prior, why, ready_msg),
        _condition(
            "Ready",
            containers_ready and gates_ok,
            prior,
            why if not containers_ready else "ReadinessGatesNotReady",
            ready_msg,
        ),
    ]
    # PodScheduled (set by the binding) and other writers' conditions stay as they are:
    # the status patch is a strategic merge keyed by condition type.
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": view.host_ip,
        "hostIPs": [{"ip": view.host_ip}],
        "startTime": view.start_time,
        "containerStatuses": [c.to_api() for c in regular],
    }
    if view.pod_ip:
        status["podIP"] = view.pod_ip
        status["podIPs"] = [{"ip": view.pod_ip}]
    if init:
        status["initContainerStatuses"] = [c.to_api() for c in init]
    return status
