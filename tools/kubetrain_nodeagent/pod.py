"""One pod on this node, from binding to deletion: the "pod worker".

Each pod bound to the node gets one `PodWorker` task (keyed by UID), with one supervisor
coroutine per regular container and one coroutine per probe. All of it runs on the
agent's event loop; blocking API calls go through the bounded `Kube` pool.

Lifecycle, as the kubelet does it:
1. sandbox: allocate a loopback pod IP, create `<node dir>/pods/<ns>_<name>_<uid8>/`
   (home, tmp, logs, volumes, one root per container with its mounts as symlinks and its
   termination-message file), materialise volumes. Failures keep the pod Pending with
   the reason on the containers (ContainerCreating) and are retried.
2. init containers one by one; a failed one is retried with back-off unless
   restartPolicy is Never, which fails the pod.
3. regular containers in parallel, each restarted per restartPolicy with exponential
   back-off (CrashLoopBackOff in between), startup/readiness/liveness probes driving
   `started`/`ready` and liveness kills.
4. once nothing will restart, the pod is Succeeded or Failed and its volumes are removed.
5. deletion (deletionTimestamp): SIGTERM every process group, SIGKILL after the grace
   period, write the terminal status, then delete the pod with grace 0 (UID precondition).

Status is recomputed from the container states on every change and written with a
strategic-merge patch of the status subresource by a single writer coroutine, which
skips writes that would not change anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from .kube import ApiError, ClusterInfo, Kube
from .podnet import HOST_SERVICES_IP
from .podspec import (
    ConfigError,
    PathMap,
    command_line,
    configmap_data,
    container_ports,
    decode_secret_data,
    normalise,
    pod_grace_seconds,
    referenced_objects,
    resolve_env,
    termination_path,
)
from .probes import ProbeTiming, run_probe
from .runtime import Process, StartError, read_termination_message, tail_log
from .settings import AgentSettings
from .status import (
    RUNNING,
    TERMINAL_PHASES,
    TERMINATED,
    WAITING,
    ContainerState,
    PodView,
    Terminated,
    exit_reason,
    now,
    pod_phase,
    pod_status,
    restore,
    will_restart,
)
from .volumes import VolumeBuilder, VolumeError, Volumes, next_refresh, remove_tree

log = logging.getLogger(__name__)

Obj = dict[str, Any]
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RETRY_SECONDS = 2.0

EventFn = Callable[[Obj, str, str, str], None]


class IPAllocator:
    """Unique loopback pod IPs from the node's range (see podnet.py).

    Every host address of the range except the network and broadcast addresses, the
    node's host IP and 127.0.0.1, where host services (apiserver, MinIO, MLflow, the
    ingress) listen: in the default 127.0.0.0/24 that is 127.0.0.2-254.

    Local reservations prevent two pods of this node sharing an IP; a field-selector
    lookup (`status.podIP=<ip>`) skips IPs that a live pod of another agent on the same
    apiserver already holds. Freed IPs go to the back of the line (round-robin cursor),
    so a just-deleted pod's IP is not reused while endpoints may still point at it.
    """

    def __init__(self, cidr: str, host_ip: str, kube: Kube | None) -> None:
        net = ipaddress.ip_network(cidr, strict=False)
        skip = {host_ip, HOST_SERVICES_IP}
        self.hosts = [str(h) for h in net.hosts() if str(h) not in skip]
        self.kube = kube
        self.in_use: dict[str, str] = {}
        self.cursor = 0

    def holder(self, ip: str) -> str | None:
        return self.in_use.get(ip)

    async def _taken_elsewhere(self, ip: str, uid: str) -> bool:
        if self.kube is None:
            return False
        try:
            doc = await self.kube.call(
                self.kube.core.list_pod_for_all_namespaces, field_selector=f"status.podIP={ip}"
            )
        except ApiError as exc:
            log.warning("pod IP check for %s failed (%s); assuming it is free", ip, exc)
            return False
        for p in doc.get("items") or []:
            if (p.get("metadata") or {}).get("uid") == uid:
                continue
            if (p.get("status") or {}).get("phase") not in TERMINAL_PHASES:
                return True
        return False

    async def allocate(self, uid: str, preferred: str = "") -> str:
        for ip, holder in self.in_use.items():
            if holder == uid:
                return ip
        if preferred in self.hosts and preferred not in self.in_use:
            self.in_use[preferred] = uid
            if not await self._taken_elsewhere(preferred, uid):
                return preferred
            del self.in_use[preferred]
        for _ in range(len(self.hosts)):
            ip = self.hosts[self.cursor % len(self.hosts)]
            self.cursor += 1
            if ip in self.in_use:
                continue
            self.in_use[ip] = uid
            if await self._taken_elsewhere(ip, uid):
                del self.in_use[ip]
                continue
            return ip
        raise VolumeError(
            f"no free pod IP left in the node's pod range ({len(self.hosts)} addresses)"
        )

    def release(self, uid: str) -> None:
        for ip in [ip for ip, holder in self.in_use.items() if holder == uid]:
            del self.in_use[ip]


@dataclass
class NodeContext:
    """What all pod workers of a node share."""

    settings: AgentSettings
    kube: Kube
    allocatable: dict[str, str]
    session: aiohttp.ClientSession
    ips: IPAllocator
    event: EventFn
    cluster: ClusterInfo


def _volume_has_token(vol: Obj) -> bool:
    sources = (vol.get("projected") or {}).get("sources") or []
    return any(s.get("serviceAccountToken") for s in sources)


class PodWorker:
    """Runs one pod; see the module docstring."""

    def __init__(self, ctx: NodeContext, pod: Obj) -> None:
        self.ctx = ctx
        self.pod = pod
        meta = pod.get("metadata") or {}
        self.ns = str(meta.get("namespace", ""))
        self.name = str(meta.get("name", ""))
        self.uid = str(meta.get("uid", ""))
        spec = pod.get("spec") or {}
        self.restart_policy = str(spec.get("restartPolicy") or "Always")
        self.dir = ctx.settings.node_dir / "pods" / f"{self.ns}_{self.name}_{self.uid[:8]}"
        status = pod.get("status") or {}
        prior_init = {c.get("name"): c for c in status.get("initContainerStatuses") or []}
        prior = {c.get("name"): c for c in status.get("containerStatuses") or []}
        self.init_specs: list[Obj] = list(spec.get("initContainers") or [])
        self.specs: list[Obj] = list(spec.get("containers") or [])
        self.init = [
            restore(c["name"], str(c.get("image", "")), prior_init.get(c["name"]))
            for c in self.init_specs
        ]
        self.regular = [
            restore(c["name"], str(c.get("image", "")), prior.get(c["name"])) for c in self.specs
        ]
        self.view = PodView(
            restart_policy=self.restart_policy,
            pod_ip=str(status.get("podIP") or ""),
            host_ip=ctx.settings.host_ip,
            start_time=str(status.get("startTime") or now()),
            prior_conditions=list(status.get("conditions") or []),
            readiness_gates=[
                str(g.get("conditionType", "")) for g in spec.get("readinessGates") or []
            ],
        )
        self.adopted_phase = str(status.get("phase") or "")
        self.procs: dict[str, Process] = {}
        self.pathmaps: dict[str, PathMap] = {}
        self.kubeconfigs: dict[str, str] = {}
        self.volumes = Volumes()
        self.backoff_step: dict[str, int] = {}
        self.stopping = False
        self.stop_reason = ""
        self._stop_event = asyncio.Event()
        self._dirty = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self.last_written: Obj | None = None
        self.task: asyncio.Task[None] | None = None
        self._bg: set[asyncio.Task[None]] = set()
        self.instance_env: dict[str, tuple[dict[str, str], str]] = {}
        self._write_error = ""

    # ------------------------------------------------------------------ agent API
    @property
    def key(self) -> str:
        return f"{self.ns}/{self.name}"

    @property
    def phase(self) -> str:
        return str(self._status().get("phase"))

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=f"pod-{self.key}")

    def update(self, pod: Obj) -> None:
        """A newer version of the pod from the watch."""
        self.pod = pod
        ours = {"PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready"}
        mine = [c for c in self.view.prior_conditions if c.get("type") in ours]
        theirs = [
            c
            for c in (pod.get("status") or {}).get("conditions") or []
            if c.get("type") not in ours
        ]
        self.view.prior_conditions = mine + theirs
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            self.request_stop("deleted")
        elif self.view.readiness_gates:
            self.mark_dirty()

    def request_stop(self, reason: str) -> None:
        """ "deleted" (graceful API deletion), "gone" (removed from the API), "shutdown"."""
        if self.stop_reason in ("gone", "shutdown"):
            return
        self.stop_reason = reason
        self._stop_event.set()

    def mark_dirty(self) -> None:
        self._dirty.set()

    # ------------------------------------------------------------------ main
    async def run(self) -> None:
        writer = asyncio.create_task(self._status_writer(), name=f"status-{self.key}")
        life: asyncio.Task[None] | None = None
        try:
            if (self.pod.get("metadata") or {}).get("deletionTimestamp"):
                self.request_stop("deleted")
            if self.adopted_phase not in TERMINAL_PHASES and not self._stop_event.is_set():
                life = asyncio.create_task(self._lifecycle(), name=f"life-{self.key}")
                stopper = asyncio.create_task(self._stop_event.wait())
                await asyncio.wait({life, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
            await self._stop_event.wait()
            await self._stop(life)
        except asyncio.CancelledError:
            self.stopping = True
            await self._kill_all(0)
            raise
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            self._cleanup()
            self.ctx.ips.release(self.uid)

    async def _stop(self, life: asyncio.Task[None] | None) -> None:
        self.stopping = True
        reason = self.stop_reason
        grace = float(pod_grace_seconds(self.pod))
        if reason == "shutdown":
            grace = min(grace, self.ctx.settings.shutdown_grace)
        if self.procs:
            if reason == "deleted":
                self.ctx.event(self.pod, "Normal", "Killing", "Stopping all containers")
            log.info("pod %s: stopping (%s), grace %.0fs", self.key, reason, grace)
        if reason != "shutdown":
            started = time.monotonic()
            await self._pre_stop(grace)
            # As the kubelet does: at least 2 s between the hooks and SIGKILL.
            grace = max(grace - (time.monotonic() - started), 2.0)
        await self._kill_all(grace)
        if life is not None and not life.done():
            # Supervisors see `stopping`, record the exits and return.
            _, pending = await asyncio.wait({life}, timeout=5)
            if pending:
                life.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await life
        if reason != "deleted":
            return
        status = self._status()
        if status.get("phase") not in TERMINAL_PHASES:
            ok = all(c.succeeded for c in self.regular) and bool(self.regular)
            self.view.phase_override = "Succeeded" if ok else "Failed"
        await self._flush()
        try:
            await self.ctx.kube.delete_pod_now(self.ns, self.name, self.uid)
            log.info("pod %s: deleted", self.key)
        except ApiError as exc:
            log.warning("pod %s: final delete failed: %s", self.key, exc)

    async def _lifecycle(self) -> None:
        try:
            if not await self._sandbox():
                return
            self._start_token_refresh()
            for spec, state in zip(self.init_specs, self.init, strict=True):
                if state.succeeded:
                    continue
                if not await self._run_init(spec, state):
                    return
            await asyncio.gather(
                *(
                    self._supervise(spec, st)
                    for spec, st in zip(self.specs, self.regular, strict=True)
                )
            )
            if self.stopping:
                return
            await self._flush()
            phase = self.phase
            log.info("pod %s: %s", self.key, phase)
            if phase in TERMINAL_PHASES:
                self._cleanup(keep_logs=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not kill the agent; say it where users look
            log.exception("pod %s: internal error", self.key)
            for c in self.init + self.regular:
                if c.state == WAITING:
                    c.set_waiting("CreateContainerError", f"kubetrain node agent error: {exc}")
            self.mark_dirty()

    # ------------------------------------------------------------------ sandbox
    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopping; True if a stop was requested."""
        if self.stopping:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), timeout=max(seconds, 0))
        return self.stopping or self._stop_event.is_set()

    def _set_all_waiting(self, reason: str, message: str) -> None:
        for c in self.init + self.regular:
            if c.state == WAITING:
                c.set_waiting(reason, message)
        self.mark_dirty()

    async def _sandbox(self) -> bool:
        warned = ""
        while not self.stopping:
            try:
                await self._setup_sandbox()
                self.view.sandbox_ready = True
                self.mark_dirty()
                return True
            except (VolumeError, ConfigError, ApiError, OSError) as exc:
                msg = str(exc)
                if msg != warned:
                    log.warning("pod %s: sandbox not ready: %s", self.key, msg)
                    self.ctx.event(self.pod, "Warning", "FailedMount", msg)
                    warned = msg
                self._set_all_waiting("ContainerCreating", msg)
                if await self._sleep(RETRY_SECONDS):
                    return False
        return False

    async def _setup_sandbox(self) -> None:
        s = self.ctx.settings
        ip = await self.ctx.ips.allocate(self.uid, self.view.pod_ip)
        self.view.pod_ip = ip
        for sub in ("home", "tmp", "logs", "containers"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.volumes = await VolumeBuilder(
            self.ctx.kube,
            self.pod,
            self.dir,
            pod_ip=ip,
            host_ip=s.host_ip,
            node_name=s.node_name,
            allocatable=self.ctx.allocatable,
        ).build()
        vols = {v.get("name"): v for v in (self.pod.get("spec") or {}).get("volumes") or []}
        ca = self.dir / "ca.crt"
        if self.ctx.cluster.ca_file and not ca.exists():
            ca.write_bytes(Path(self.ctx.cluster.ca_file).read_bytes())
        for spec in self.init_specs + self.specs:
            cname = spec["name"]
            root = self.dir / "containers" / cname / "root"
            root.mkdir(parents=True, exist_ok=True)
            paths: list[str] = []
            for vm in spec.get("volumeMounts") or []:
                vname = vm.get("name", "")
                if vname not in self.volumes.dirs:
                    raise VolumeError(f"container {cname}: volumeMount {vname!r} has no volume")
                target = self.volumes.dirs[vname]
                if vm.get("subPath"):
                    target = target / str(vm["subPath"]).lstrip("/")
                    if not target.exists():
                        target.mkdir(parents=True, exist_ok=True)
                mount = str(vm.get("mountPath", ""))
                link = Path(PathMap.build(str(root), []).host_path(mount))
                link.parent.mkdir(parents=True, exist_ok=True)
                if link.is_symlink() or link.is_file():
                    link.unlink()
                elif link.is_dir():
                    remove_tree(link)
                link.symlink_to(target)
                paths.append(mount)
                if normalise(mount) == SA_MOUNT and _volume_has_token(vols.get(vname) or {}):
                    self.kubeconfigs[cname] = self._write_kubeconfig(cname, link)
            term = termination_path(spec)
            paths.append(term)
            pm = PathMap.build(str(root), paths)
            term_file = Path(pm.host_path(term))
            term_file.parent.mkdir(parents=True, exist_ok=True)
            term_file.touch()
            self.pathmaps[cname] = pm

    def _write_kubeconfig(self, cname: str, sa_dir: Path) -> str:
        """A kubeconfig for the pod's service account (its projected token), so in-cluster
        clients that fall back to $KUBECONFIG reach the apiserver with the pod's own RBAC."""
        path = self.dir / "containers" / cname / "kubeconfig"
        ca = self.dir / "ca.crt"
        cluster: Obj = {"server": self.ctx.cluster.server}
        if ca.exists():
            cluster["certificate-authority"] = str(ca)
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": cluster}],
            "users": [{"name": "sa", "user": {"tokenFile": str(sa_dir / "token")}}],
            "contexts": [
                {"name": "pod", "context": {"cluster": "local", "user": "sa", "namespace": self.ns}}
            ],
            "current-context": "pod",
        }
        path.write_text(json.dumps(doc, indent=1))
        os.chmod(path, 0o600)
        return str(path)

    def _start_token_refresh(self) -> None:
        if not self.volumes.tokens:
            return

        async def refresh() -> None:
            builder = VolumeBuilder(
                self.ctx.kube,
                self.pod,
                self.dir,
                pod_ip=self.view.pod_ip,
                host_ip=self.ctx.settings.host_ip,
                node_name=self.ctx.settings.node_name,
                allocatable=self.ctx.allocatable,
            )
            while not self.stopping:
                when = next_refresh(self.volumes.tokens, time.time()) or time.time() + 3600
                if await self._sleep(when - time.time()):
                    return
                for tok in self.volumes.tokens:
                    try:
                        await builder.write_token(tok)
                    except VolumeError as exc:
                        log.warning("pod %s: token refresh failed: %s", self.key, exc)
                        tok.expires_at = time.time() + 60

        self._spawn(refresh(), "token-refresh")

    def _spawn(self, coro: Awaitable[None], what: str) -> asyncio.Task[None]:
        async def wrapped() -> None:
            await coro

        task = asyncio.create_task(wrapped(), name=f"{what}-{self.key}")
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)
        return task

    # ------------------------------------------------------------------ containers
    async def _fetch(
        self, spec: Obj
    ) -> tuple[dict[str, dict[str, str] | None], dict[str, dict[str, str] | None]]:
        cm_names, secret_names = referenced_objects(spec)
        k = self.ctx.kube
        cms: dict[str, dict[str, str] | None] = {}
        secrets: dict[str, dict[str, str] | None] = {}
        for n in cm_names:
            obj = await k.get_optional(k.core.read_namespaced_config_map, n, self.ns)
            cms[n] = configmap_data(obj) if obj is not None else None
        for n in secret_names:
            obj = await k.get_optional(k.core.read_namespaced_secret, n, self.ns)
            secrets[n] = decode_secret_data(obj) if obj is not None else None
        return cms, secrets

    def _base_env(self, cname: str) -> dict[str, str]:
        s = self.ctx.settings
        spec = self.pod.get("spec") or {}
        env = {
            "PATH": f"{s.venv_bin}:{SYSTEM_PATH}",
            "VIRTUAL_ENV": str(Path(s.venv_bin).parent),
            "HOME": str(self.dir / "home"),
            "TMPDIR": str(self.dir / "tmp"),
            "HOSTNAME": str(spec.get("hostname") or self.name),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "POD_IP": self.view.pod_ip,
        }
        server = self.ctx.cluster.server.split("://", 1)[-1]
        host, _, port = server.rpartition(":")
        if host:
            env.update(
                KUBERNETES_SERVICE_HOST=host.strip("[]"),
                KUBERNETES_SERVICE_PORT=port,
                KUBERNETES_SERVICE_PORT_HTTPS=port,
            )
        if cname in self.kubeconfigs:
            env["KUBECONFIG"] = self.kubeconfigs[cname]
        for name in s.pass_env:
            if name in os.environ:
                env[name] = os.environ[name]
        return env

    async def _prepare(self, spec: Obj) -> tuple[list[str], dict[str, str], str, PathMap]:
        """argv, env, cwd and path map of the next instance of a container."""
        cname = spec["name"]
        pm = self.pathmaps[cname]
        cms, secrets = await self._fetch(spec)
        base = self._base_env(cname)
        own = resolve_env(
            self.pod,
            spec,
            configmaps=cms,
            secrets=secrets,
            pod_ip=self.view.pod_ip,
            host_ip=self.ctx.settings.host_ip,
            node_name=self.ctx.settings.node_name,
            node_allocatable=self.ctx.allocatable,
        )
        env = dict(base)
        env.update({k: pm.rewrite(v) for k, v in own.items()})
        env.update(
            KUBETRAIN_PATH_PREFIX=pm.root,
            KUBETRAIN_MOUNTS=pm.mounts_env(),
            KUBETRAIN_TERMINATION_LOG=pm.host_path(termination_path(spec)),
            KUBETRAIN_POD_IP=self.view.pod_ip,
            KUBETRAIN_NODE_NAME=self.ctx.settings.node_name,
            KUBETRAIN_POD_DIR=str(self.dir),
        )
        argv = [pm.rewrite(a) for a in command_line(spec, env)]
        cwd = pm.root
        wd = spec.get("workingDir")
        if wd:
            if pm.covers(normalise(wd)):
                cwd = pm.host_path(wd)
            elif os.path.isdir(wd):
                cwd = wd
            else:
                cwd = pm.host_path(wd)
                os.makedirs(cwd, exist_ok=True)
        return argv, env, cwd, pm

    async def _run_init(self, spec: Obj, c: ContainerState) -> bool:
        """Run an init container until it succeeds; False if the pod fails or stops."""
        while not self.stopping:
            if c.state == TERMINATED and c.terminated is not None:
                if self.restart_policy == "Never":
                    self.view.init_failed = True
                    self.mark_dirty()
                    return False
                if not await self._backoff(spec, c):
                    return False
            await self._run_instance(spec, c)
            if c.succeeded:
                return True
        return False

    async def _supervise(self, spec: Obj, c: ContainerState) -> None:
        """Run a regular container and restart it per restartPolicy until told to stop."""
        while not self.stopping:
            if c.state == TERMINATED and c.terminated is not None:
                if not will_restart(self.restart_policy, c.terminated.exit_code):
                    return
                if not await self._backoff(spec, c):
                    return
            await self._run_instance(spec, c)

    async def _backoff(self, spec: Obj, c: ContainerState) -> bool:
        """Wait the restart back-off; False if stopping. Bumps restartCount."""
        s = self.ctx.settings
        step = self.backoff_step.get(c.name, 0)
        t = c.terminated
        if t is not None and t.started_at and t.finished_at:
            ran = _seconds_between(t.started_at, t.finished_at)
            if ran is not None and ran >= s.backoff_reset_seconds:
                step = 0
        delay = (
            0.0 if step == 0 else min(s.restart_backoff * 2 ** (step - 1), s.restart_backoff_max)
        )
        self.backoff_step[c.name] = step + 1
        if delay > 0:
            msg = (
                f"back-off {delay:g}s restarting failed container={c.name} "
                f"pod={self.name}_{self.ns}({self.uid})"
            )
            c.set_waiting("CrashLoopBackOff", msg)
            self.mark_dirty()
            self.ctx.event(
                self.pod, "Warning", "BackOff", "Back-off restarting failed container " + c.name
            )
            if await self._sleep(delay):
                return False
        c.restart_count += 1
        return True

    async def _run_instance(self, spec: Obj, c: ContainerState) -> None:
        """Start one instance, supervise its probes, record how it ended."""
        warned = ""
        while True:
            if self.stopping:
                return
            try:
                argv, env, cwd, pm = await self._prepare(spec)
                break
            except (ConfigError, ApiError) as exc:
                msg = str(exc)
                if msg != warned:
                    log.warning("pod %s container %s: %s", self.key, c.name, msg)
                    self.ctx.event(self.pod, "Warning", "Failed", f"Error: {msg}")
                    warned = msg
                c.set_waiting("CreateContainerConfigError", msg)
                self.mark_dirty()
                if await self._sleep(RETRY_SECONDS):
                    return
        self.instance_env[c.name] = (env, cwd)
        term_file = Path(pm.host_path(termination_path(spec)))
        term_file.parent.mkdir(parents=True, exist_ok=True)
        term_file.write_bytes(b"")
        log_path = self.dir / "logs" / c.name / f"{c.restart_count}.log"
        cid = f"kubetrain://{self.uid}/{c.name}/{c.restart_count}"
        try:
            proc = Process.start(argv, env, cwd, log_path)
        except StartError as exc:
            log.warning("pod %s container %s: %s", self.key, c.name, exc)
            self.ctx.event(self.pod, "Warning", "Failed", f"Error: {exc}")
            c.set_terminated(Terminated(128, "StartError", "", now(), str(exc), container_id=cid))
            self.mark_dirty()
            return
        self.procs[c.name] = proc
        c.set_running(now(), cid)
        startup = spec.get("startupProbe")
        c.started = not startup
        c.ready = c.started and not spec.get("readinessProbe")
        self.mark_dirty()
        log.info(
            "pod %s container %s: started pid %d: %s",
            self.key,
            c.name,
            proc.pid,
            " ".join(argv)[:300],
        )
        self.ctx.event(self.pod, "Normal", "Started", f"Started container {c.name}")
        probes: list[asyncio.Task[None]] = []
        if self.view.pod_ip and (
            startup or spec.get("readinessProbe") or spec.get("livenessProbe")
        ):
            probes.append(asyncio.create_task(self._probes(spec, c, proc, env, cwd)))
        try:
            rc = await proc.wait()
        finally:
            for p in probes:
                p.cancel()
            for p in probes:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await p
            self.procs.pop(c.name, None)
        message = read_termination_message(term_file)
        if (
            not message
            and rc != 0
            and spec.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        ):
            message = tail_log(log_path)
        c.set_terminated(
            Terminated(
                rc,
                exit_reason(rc),
                c.started_at,
                now(),
                message.strip() if message.strip() else "",
                container_id=cid,
            )
        )
        log.info("pod %s container %s: exited %d", self.key, c.name, rc)
        self.mark_dirty()

    async def _probes(
        self, spec: Obj, c: ContainerState, proc: Process, env: dict[str, str], cwd: str
    ) -> None:
        startup = spec.get("startupProbe")
        if startup and not await self._probe_loop("startup", startup, spec, c, proc, env, cwd):
            return
        loops = [
            self._probe_loop(kind, spec[field], spec, c, proc, env, cwd)
            for kind, field in (("readiness", "readinessProbe"), ("liveness", "livenessProbe"))
            if spec.get(field)
        ]
        await asyncio.gather(*loops)

    async def _probe_loop(
        self,
        kind: str,
        probe: Obj,
        spec: Obj,
        c: ContainerState,
        proc: Process,
        env: dict[str, str],
        cwd: str,
    ) -> bool:
        """Run one probe for one container instance; True when a startup probe passed."""
        t = ProbeTiming.of(probe)
        await asyncio.sleep(t.initial_delay)
        successes = failures = 0
        ports = container_ports(spec)
        while c.state == RUNNING and c.name in self.procs:
            ok, msg = await run_probe(
                probe,
                pod_ip=self.view.pod_ip,
                ports=ports,
                env=env,
                cwd=cwd,
                session=self.ctx.session,
            )
            if self.procs.get(c.name) is not proc:
                return False
            if ok:
                successes, failures = successes + 1, 0
            else:
                successes, failures = 0, failures + 1
                log.debug("pod %s container %s: %s probe failed: %s", self.key, c.name, kind, msg)
                if failures == 1 or failures >= t.failure_threshold:
                    self.ctx.event(
                        self.pod, "Warning", "Unhealthy", f"{kind.capitalize()} probe failed: {msg}"
                    )
            if kind == "startup":
                if ok:
                    c.started = True
                    c.ready = not spec.get("readinessProbe")
                    self.mark_dirty()
                    return True
                if failures >= t.failure_threshold:
                    self._probe_kill(c, proc, probe, f"Startup probe failed: {msg}")
                    return False
            elif kind == "readiness":
                if ok and successes >= t.success_threshold and not c.ready:
                    c.ready = True
                    self.mark_dirty()
                    log.info("pod %s container %s: ready", self.key, c.name)
                elif not ok and failures >= t.failure_threshold and c.ready:
                    c.ready = False
                    self.mark_dirty()
                    log.info("pod %s container %s: not ready: %s", self.key, c.name, msg)
            elif failures >= t.failure_threshold:
                self._probe_kill(c, proc, probe, f"Liveness probe failed: {msg}")
                return False
            await asyncio.sleep(t.period)
        return False

    def _probe_kill(self, c: ContainerState, proc: Process, probe: Obj, why: str) -> None:
        grace = probe.get("terminationGracePeriodSeconds")
        if grace is None:
            grace = (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        log.info("pod %s container %s: %s; killing it (grace %ss)", self.key, c.name, why, grace)
        self.ctx.event(
            self.pod, "Normal", "Killing", f"Container {c.name} {why.lower()}, will be restarted"
        )
        self._spawn(_discard(proc.terminate(float(grace or 0))), "kill")

    async def _pre_stop(self, grace: float) -> None:
        """Run the running containers' preStop hooks (sleep, exec, httpGet) within `grace`."""
        hooks = []
        for spec in self.specs:
            hook = (spec.get("lifecycle") or {}).get("preStop")
            if hook and spec["name"] in self.procs:
                hooks.append(self._hook(spec, hook, grace))
        if hooks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*hooks, return_exceptions=True), timeout=grace
                )

    async def _hook(self, spec: Obj, hook: Obj, grace: float) -> None:
        name = spec["name"]
        if hook.get("sleep"):
            await asyncio.sleep(float(hook["sleep"].get("seconds") or 0))
            return
        env, cwd = self.instance_env.get(name, ({}, str(self.dir)))
        ok, msg = await run_probe(
            {**hook, "timeoutSeconds": max(grace, 1)},
            pod_ip=self.view.pod_ip,
            ports=container_ports(spec),
            env=env,
            cwd=cwd,
            session=self.ctx.session,
        )
        if not ok:
            log.warning("pod %s container %s: preStop hook failed: %s", self.key, name, msg)
            self.ctx.event(self.pod, "Warning", "FailedPreStopHook", f"PreStopHook failed: {msg}")

    async def _kill_all(self, grace: float) -> None:
        procs = list(self.procs.values())
        if procs:
            await asyncio.gather(*(p.terminate(grace) for p in procs), return_exceptions=True)

    # ------------------------------------------------------------------ status
    def _status(self) -> Obj:
        status = pod_status(self.view, self.init, self.regular)
        self.view.prior_conditions = status["conditions"] + [
            c
            for c in self.view.prior_conditions
            if c.get("type") not in {x["type"] for x in status["conditions"]}
        ]
        return status

    async def _status_writer(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(0.05)  # coalesce bursts of changes into one write
            self._dirty.clear()
            if self.stop_reason in ("gone", "shutdown"):
                continue
            await self._flush()

    async def _flush(self) -> None:
        async with self._write_lock:
            status = self._status()
            if status == self.last_written:
                return
            try:
                await self.ctx.kube.patch_pod_status(self.ns, self.name, status)
                self.last_written = status
            except ApiError as exc:
                if exc.status == 404:
                    self.request_stop("gone")
                    return
                if str(exc) != self._write_error:
                    log.warning("pod %s: status write failed: %s; retrying", self.key, exc)
                    self._write_error = str(exc)
                # Transient errors retry soon; a rejected status (4xx) only slowly.
                delay = 10.0 if 400 <= exc.status < 500 and exc.status not in (409, 429) else 1.0
                asyncio.get_running_loop().call_later(delay, self.mark_dirty)

    def _cleanup(self, keep_logs: bool = True) -> None:
        """Remove volumes (they may hold secrets) and container roots; keep logs."""
        for task in list(self._bg):
            task.cancel()
        remove_tree(self.dir / "volumes")
        remove_tree(self.dir / "containers")
        remove_tree(self.dir / "tmp")
        if not keep_logs:
            remove_tree(self.dir)


async def _discard(aw: Awaitable[Any]) -> None:
    with contextlib.suppress(Exception):
        await aw


def _seconds_between(a: str, b: str) -> float | None:
    try:
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        return (datetime.strptime(b, fmt) - datetime.strptime(a, fmt)).total_seconds()
    except ValueError:
        return None


__all__ = ["IPAllocator", "NodeContext", "PodWorker", "pod_phase"]
