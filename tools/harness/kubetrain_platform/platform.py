"""The local platform: real etcd, kube-apiserver, controller-manager, MinIO and MLflow.

Design
------
Every server is a child process started with its own session (so `down` can kill the
whole process group), logging to `<state>/logs/<name>.log`. What was started, on which
ports and with which pid, is recorded in `<state>/platform.json`; that record is what
makes `up` idempotent (a component whose pid is alive *and* whose health check answers
is left alone) and what lets `down` stop exactly what `up` started.

Ports are chosen once per state directory and then kept, so kubeconfigs and URLs stay
valid across restarts. The demo uses fixed defaults; tests pass `ports="free"` and a
temporary state directory so a test run never collides with a running demo.

The contract with everything else is `<state>/platform.env`: a shell-sourceable file
with KUBECONFIG, KUBETRAIN_BIN, MINIO_ENDPOINT, MINIO_ACCESS_KEY, MINIO_SECRET_KEY,
MLFLOW_TRACKING_URI and a few more. It is written mode 0600 because it holds the
MinIO root credentials.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kubetrain_platform import nodeconf
from kubetrain_platform.certs import Pki, ensure_pki
from kubetrain_platform.node import LOCK, NodeError, NodeHost, pid_alive, read_lock
from kubetrain_platform.node import write_if_changed as node_write
from kubetrain_platform.nodeconf import NodeLayout

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_PORTS: dict[str, int] = {
    "etcd": 32379,
    "etcd-peer": 32380,
    "apiserver": 36443,
    "controller-manager": 30257,
    "scheduler": 30259,
    "minio": 39000,
    "minio-console": 39001,
    "mlflow": 35000,
    "registry": 35001,
    "kubelet": 30250,
    "kubelet-healthz": 30248,
    "proxy-healthz": 30256,
    "proxy-metrics": 30249,
    # Traefik (hostNetwork) serves the cluster's Ingresses here, and its ping/metrics next to it.
    "ingress": 38080,
    "ingress-admin": 38090,
}
#: Controllers the platform needs. The node-lifecycle controller lifts the not-ready taint
#: kubelet registers with; the taint-eviction controller is left out: with one node there is
#: nowhere to evict pods to, and a slow heartbeat on a busy 2-core VM must not kill them.
CONTROLLERS = (
    "node-lifecycle-controller",
    "persistentvolume-attach-detach-controller",
    "service-cidr-controller",
    "job-controller",
    "cronjob-controller",
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "namespace-controller",
    "pod-garbage-collector-controller",
    "ttl-after-finished-controller",
    "persistentvolume-binder-controller",
    "persistentvolume-protection-controller",
    "persistentvolumeclaim-protection-controller",
    "disruption-controller",
    "resourcequota-controller",
)
MLFLOW_BUCKET = "mlflow"
#: Images `up` needs before the node serves pods; the product's are built by the demo and tests.
PLATFORM_IMAGES = ("pause", "coredns", "traefik")
PRODUCT_IMAGES = ("operator", "trainer", "minio", "mlflow")
COMPONENT_ORDER = (
    "etcd",
    "apiserver",
    "controller-manager",
    "scheduler",
    "minio",
    "mlflow",
    "registry",
    "containerd",
    "kubelet",
    "kube-proxy",
)
NODE_COMPONENTS = ("scheduler", "registry", "containerd", "kubelet", "kube-proxy")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("KUBETRAIN_CACHE") or Path(base) / "kubetrain")


def default_bin_dir() -> Path:
    return cache_dir() / "bin" / "current"


def reclaim_stale_node(log: Callable[[str], None], state_dir: Path | None = None) -> None:
    """Tear down what a dead node of another state dir left on the host (bridge, chains,
    mounts, cgroups, sysctls), so a crash or a killed session never blocks the next `up`."""
    lock = read_lock()
    if lock is None or lock[1] or (state_dir is not None and lock[0] == str(state_dir)):
        return  # unlocked, alive (refused by take_lock), or our own (up's recovery cleans it)
    other = lock[0]
    if not (Path(other) / "platform.json").exists():
        log(f"  node: removing the lock of {other}, which no longer exists")
        LOCK.unlink(missing_ok=True)
        return
    dead = Platform(Path(other), log=log)
    left = dead.node_host.leftovers()
    log(f"  node: the node of {other} is dead; cleaning up what it left ({len(left)} items)")
    dead.node_host.teardown()
    dead.record.pids = {}
    dead._save_record()


def _free_net_index() -> int:
    """A network index whose bridge does not exist on this host (0 is the demo's)."""
    import random

    taken = {int(p.name[4:]) for p in Path("/sys/class/net").glob("ktbr*") if p.name[4:].isdigit()}
    choices = [i for i in range(1, 255) if i not in taken]
    if not choices:
        raise PlatformError("no free node network index: 254 ktbr* bridges exist")
    return random.choice(choices)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PlatformError(RuntimeError):
    """A component failed to start or a prerequisite is missing; the message says which."""


@dataclass
class Record:
    """What `up` persisted: ports, pids and generated credentials."""

    ports: dict[str, int]
    pids: dict[str, int] = field(default_factory=dict)
    minio_access_key: str = ""
    minio_secret_key: str = ""
    webhook: str = ""
    """MinIO webhook notification target (id KUBETRAIN); empty: none."""
    webhook_token: str = ""
    """Bearer token MinIO sends to the webhook; generated with the target."""
    fingerprints: dict[str, str] = field(default_factory=dict)
    """Hash of each running component's command line and environment: a changed
    configuration restarts the component on the next `up`."""
    node: bool = True
    """Whether this platform runs a node (containerd, kubelet, kube-proxy, scheduler, the
    registry, CoreDNS and Traefik). Without one, pods stay Pending."""
    pause_image: str = ""
    """Registry reference of the sandbox image containerd pins (content-tagged)."""
    net_index: int = -1
    """The node's network index (bridge ktbr<N>, pods 10.244.N.0/24, Services 10.96.N.0/24);
    0 for the demo's fixed ports, another free one for a platform on free ports."""


@dataclass(frozen=True)
class StatusRow:
    """One line of `kubetrain-platform status`."""

    name: str
    pid: int | None
    state: str
    url: str
    rss_bytes: int
    """Resident memory of the component's whole process group (workers included)."""


@dataclass(frozen=True)
class Component:
    name: str
    argv: list[str]
    env: dict[str, str]
    health: Callable[[], bool]
    url: str
    timeout: float = 60.0


class Platform:
    """One local platform rooted at a state directory."""

    def __init__(
        self,
        state_dir: Path,
        *,
        bin_dir: Path | None = None,
        ports: str | dict[str, int] = "default",
        webhook: str | None = None,
        node: bool | None = None,
        python_bin: Path | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.state = state_dir.resolve()
        self.bin = (bin_dir or default_bin_dir()).resolve()
        self.python_bin = python_bin or Path(sys.executable).parent
        self._log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.record = self._load_record(ports, webhook)
        if node is not None:
            self.record.node = node
        if self.record.net_index < 0:
            self.record.net_index = 0 if ports == "default" else _free_net_index()
        if self.record.webhook and not self.record.webhook_token:
            self.record.webhook_token = secrets.token_urlsafe(24)
        self.pki = Pki(self.state / "pki")

    # ---------------------------------------------------------------- paths
    @property
    def record_path(self) -> Path:
        return self.state / "platform.json"

    @property
    def env_path(self) -> Path:
        return self.state / "platform.env"

    @property
    def kubeconfig(self) -> Path:
        return self.state / "admin.kubeconfig"

    def log_path(self, name: str) -> Path:
        return self.state / "logs" / f"{name}.log"

    @property
    def layout(self) -> NodeLayout:
        p = self.record.ports
        return NodeLayout(
            root=self.state / "node",
            index=self.record.net_index,
            node_name=f"kubetrain-node-{self.record.net_index}",
            kubelet_port=p["kubelet"],
            kubelet_healthz_port=p["kubelet-healthz"],
            proxy_healthz_port=p["proxy-healthz"],
            proxy_metrics_port=p["proxy-metrics"],
            scheduler_port=p["scheduler"],
            registry=f"127.0.0.1:{p['registry']}",
            pause_image=self.record.pause_image,
        )

    @property
    def node_host(self) -> NodeHost:
        return NodeHost(self.layout, self.bin, self.state)

    def url(self, name: str) -> str:
        port = self.record.ports[name]
        return f"https://127.0.0.1:{port}" if name == "apiserver" else f"http://127.0.0.1:{port}"

    # ---------------------------------------------------------------- record
    def _load_record(self, ports: str | dict[str, int], webhook: str | None) -> Record:
        if self.record_path.exists():
            rec = Record(**json.loads(self.record_path.read_text()))
            for k, v in DEFAULT_PORTS.items():
                rec.ports.setdefault(k, free_port() if ports == "free" else v)
        else:
            if isinstance(ports, dict):
                chosen = {**DEFAULT_PORTS, **ports}
            elif ports == "free":
                chosen = {k: free_port() for k in DEFAULT_PORTS}
            else:
                chosen = dict(DEFAULT_PORTS)
            rec = Record(ports=chosen)
        if webhook is not None:
            rec.webhook = webhook
        if not rec.minio_access_key:
            rec.minio_access_key = "kubetrain-" + secrets.token_hex(4)
            rec.minio_secret_key = secrets.token_urlsafe(24)
        return rec

    def _save_record(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.record), indent=2))
        tmp.chmod(0o600)
        tmp.replace(self.record_path)

    # ---------------------------------------------------------------- health checks
    def _http_ok(
        self, url: str, *, tls: bool = False, client: str | None = None, verify: bool = True
    ) -> bool:
        ctx: ssl.SSLContext | None = None
        if tls:
            ctx = ssl.create_default_context(cafile=str(self.pki.ca_crt))
            if client:
                crt, key = self.pki.client(client)
                ctx.load_cert_chain(str(crt), str(key))
            if not verify:  # the controller-manager serves a self-signed cert; loopback only
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
        try:
            with urllib.request.urlopen(url, timeout=3, context=ctx) as resp:
                return 200 <= resp.status < 300
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return False

    def _apiserver_ready(self) -> bool:
        return self._http_ok(f"{self.url('apiserver')}/readyz", tls=True, client="admin")

    def _node_ready(self) -> bool:
        """kubelet answers /healthz and its Node is Ready."""
        lay = self.layout
        if not self._http_ok(f"http://127.0.0.1:{lay.kubelet_healthz_port}/healthz"):
            return False
        url = f"{self.url('apiserver')}/api/v1/nodes/{lay.node_name}"
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_crt))
        crt, key = self.pki.client("admin")
        ctx.load_cert_chain(str(crt), str(key))
        try:
            with urllib.request.urlopen(url, timeout=3, context=ctx) as resp:
                node = json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in node.get("status", {}).get("conditions", [])
        )

    def _controllers_ready(self) -> bool:
        port = self.record.ports["controller-manager"]
        if not self._http_ok(f"https://127.0.0.1:{port}/healthz", tls=True, verify=False):
            return False
        # The serviceaccount controller creating `default` proves controllers reconcile.
        return self._http_ok(
            f"{self.url('apiserver')}/api/v1/namespaces/default/serviceaccounts/default",
            tls=True,
            client="admin",
        )

    # ---------------------------------------------------------------- components
    def _binary(self, name: str) -> str:
        path = self.bin / name
        if not path.exists():
            raise PlatformError(
                f"{name} is not built ({path} missing): run tools/harness/platform/build.sh (make binaries)"
            )
        return str(path)

    def components(self) -> list[Component]:
        p = self.record.ports
        s = self.state
        pki = self.pki
        lay = self.layout
        node = self.record.node
        base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(Path.home())}
        etcd = Component(
            "etcd",
            [
                self._binary("etcd"),
                "--name=kubetrain",
                f"--data-dir={s / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{p['etcd']}",
                f"--advertise-client-urls=http://127.0.0.1:{p['etcd']}",
                f"--listen-peer-urls=http://127.0.0.1:{p['etcd-peer']}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{p['etcd-peer']}",
                f"--initial-cluster=kubetrain=http://127.0.0.1:{p['etcd-peer']}",
                "--unsafe-no-fsync",
                "--log-level=warn",
                "--quota-backend-bytes=4294967296",
            ],
            base_env,
            lambda: self._http_ok(f"http://127.0.0.1:{p['etcd']}/health"),
            f"http://127.0.0.1:{p['etcd']}",
        )
        apiserver = Component(
            "apiserver",
            [
                self._binary("kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{p['etcd']}",
                # With a node, pods reach the apiserver through the `kubernetes` Service, whose
                # endpoint must be a non-loopback address: the node's bridge address.
                f"--bind-address={'0.0.0.0' if node else '127.0.0.1'}",
                f"--advertise-address={lay.gateway if node else '127.0.0.1'}",
                f"--secure-port={p['apiserver']}",
                f"--cert-dir={s / 'pki'}",
                f"--tls-cert-file={pki.apiserver_crt}",
                f"--tls-private-key-file={pki.apiserver_key}",
                f"--client-ca-file={pki.ca_crt}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--service-cluster-ip-range={lay.service_cidr}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--kubelet-client-certificate={pki.client('apiserver-kubelet')[0]}",
                f"--kubelet-client-key={pki.client('apiserver-kubelet')[1]}",
                f"--kubelet-certificate-authority={pki.ca_crt}",
                "--kubelet-preferred-address-types=InternalIP",
                "--allow-privileged=true",
                "--profiling=false",
                "--enable-priority-and-fairness=false",
                "--v=0",
            ],
            base_env,
            self._apiserver_ready,
            self.url("apiserver"),
            timeout=90,
        )
        cm_kubeconfig = s / "controller-manager.kubeconfig"
        controller_manager = Component(
            "controller-manager",
            [
                self._binary("kube-controller-manager"),
                f"--kubeconfig={cm_kubeconfig}",
                f"--authentication-kubeconfig={cm_kubeconfig}",
                f"--authorization-kubeconfig={cm_kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={p['controller-manager']}",
                f"--cert-dir={s / 'pki' / 'controller-manager'}",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_crt}",
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                f"--controllers={','.join(CONTROLLERS)}",
                "--concurrent-job-syncs=5",
                # Busy 2-core VM: a late heartbeat is not a dead node.
                "--node-monitor-grace-period=2m",
                "--v=0",
            ],
            base_env,
            self._controllers_ready,
            f"https://127.0.0.1:{p['controller-manager']}",
        )
        minio_env = {
            **base_env,
            "MINIO_ROOT_USER": self.record.minio_access_key,
            "MINIO_ROOT_PASSWORD": self.record.minio_secret_key,
            "MINIO_UPDATE": "off",
            "MINIO_BROWSER": "on",
        }
        if self.record.webhook:
            # No queue dir: with one, MinIO replays events only every ~3 s. Events sent while
            # the operator is down are lost, which its periodic full listing repairs.
            minio_env.update(
                {
                    "MINIO_NOTIFY_WEBHOOK_ENABLE_KUBETRAIN": "on",
                    "MINIO_NOTIFY_WEBHOOK_ENDPOINT_KUBETRAIN": self.record.webhook,
                    "MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_KUBETRAIN": self.record.webhook_token,
                }
            )
        minio = Component(
            "minio",
            [
                self._binary("minio"),
                "server",
                str(s / "minio-data"),
                f"--address=127.0.0.1:{p['minio']}",
                f"--console-address=127.0.0.1:{p['minio-console']}",
                "--quiet",
            ],
            minio_env,
            lambda: self._http_ok(f"http://127.0.0.1:{p['minio']}/minio/health/ready"),
            f"http://127.0.0.1:{p['minio']}",
        )
        mlflow_bin = self.python_bin / "mlflow"
        if not mlflow_bin.exists():
            raise PlatformError(f"mlflow is not installed at {mlflow_bin}: run `make install`")
        mlflow = Component(
            "mlflow",
            [
                str(mlflow_bin),
                "server",
                f"--backend-store-uri=sqlite:///{s / 'mlflow' / 'mlflow.db'}",
                f"--artifacts-destination=s3://{MLFLOW_BUCKET}/artifacts",
                "--host=127.0.0.1",
                f"--port={p['mlflow']}",
                "--workers=1",
            ],
            {
                **base_env,
                "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{p['minio']}",
                "AWS_ACCESS_KEY_ID": self.record.minio_access_key,
                "AWS_SECRET_ACCESS_KEY": self.record.minio_secret_key,
                "AWS_DEFAULT_REGION": "us-east-1",
                "MLFLOW_SERVER_ALLOWED_HOSTS": f"localhost:{p['mlflow']},127.0.0.1:{p['mlflow']},localhost,127.0.0.1",
                "PYTHONUNBUFFERED": "1",
                # The GenAI job runner forks ~8 huey consumers (~250 MiB each) that
                # kubetrain never uses.
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            },
            lambda: self._http_ok(f"http://127.0.0.1:{p['mlflow']}/health"),
            f"http://127.0.0.1:{p['mlflow']}",
            timeout=120,
        )
        comps = [etcd, apiserver, controller_manager, minio, mlflow]
        if node:
            comps += self._node_components(base_env)
        return comps

    def _node_components(self, base_env: dict[str, str]) -> list[Component]:
        """kube-scheduler, the image registry, containerd, kubelet and kube-proxy."""
        p = self.record.ports
        lay = self.layout
        scheduler = Component(
            "scheduler",
            [
                self._binary("kube-scheduler"),
                f"--config={lay.scheduler_config}",
                f"--authentication-kubeconfig={self.state / 'kube-scheduler.kubeconfig'}",
                f"--authorization-kubeconfig={self.state / 'kube-scheduler.kubeconfig'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={p['scheduler']}",
                f"--cert-dir={self.state / 'pki' / 'kube-scheduler'}",
                "--v=0",
            ],
            base_env,
            lambda: self._http_ok(
                f"https://127.0.0.1:{p['scheduler']}/healthz", tls=True, verify=False
            ),
            f"https://127.0.0.1:{p['scheduler']}",
        )
        registry = Component(
            "registry",
            [self._binary("registry"), "serve", str(self.state / "registry" / "config.yml")],
            {**base_env, "OTEL_TRACES_EXPORTER": "none"},
            lambda: self._http_ok(f"http://127.0.0.1:{p['registry']}/v2/"),
            f"http://127.0.0.1:{p['registry']}",
        )
        containerd = Component(
            "containerd",
            [self._binary("containerd"), f"--config={lay.containerd_config}"],
            # containerd finds the shim on PATH: the cached binaries come first. The digest
            # makes a changed config file restart the daemon, as a changed flag does.
            {
                **base_env,
                "PATH": f"{self.bin}:{base_env['PATH']}",
                "KUBETRAIN_CONFIG_DIGEST": _file_digest(lay.containerd_config),
            },
            lambda: _unix_socket_ok(lay.containerd_socket),
            f"unix://{lay.containerd_socket}",
        )
        kubelet = Component(
            "kubelet",
            [
                self._binary("kubelet"),
                f"--config={lay.kubelet_config}",
                f"--kubeconfig={self.state / 'kubelet.kubeconfig'}",
                f"--root-dir={lay.kubelet_dir}",
                f"--node-ip={lay.gateway}",
                f"--hostname-override={lay.node_name}",
                "--v=0",
            ],
            {
                **base_env,
                "PATH": f"{self.bin}:{base_env['PATH']}",
                "KUBETRAIN_CONFIG_DIGEST": _file_digest(lay.kubelet_config),
            },
            self._node_ready,
            f"https://{lay.gateway}:{p['kubelet']}",
            timeout=90,
        )
        proxy = Component(
            "kube-proxy",
            [self._binary("kube-proxy"), f"--config={lay.proxy_config}", "--v=0"],
            {**base_env, "KUBETRAIN_CONFIG_DIGEST": _file_digest(lay.proxy_config)},
            lambda: self._http_ok(f"http://127.0.0.1:{p['proxy-healthz']}/healthz"),
            f"http://127.0.0.1:{p['proxy-metrics']}/metrics",
        )
        return [scheduler, registry, containerd, kubelet, proxy]

    # ---------------------------------------------------------------- process control
    @staticmethod
    def pid_alive(pid: int) -> bool:
        return pid_alive(pid)

    def running(self, name: str) -> bool:
        pid = self.record.pids.get(name)
        return bool(pid) and self.pid_alive(pid)  # type: ignore[arg-type]

    def _start(self, comp: Component) -> None:
        fingerprint = hashlib.sha256(
            json.dumps([comp.argv, comp.env], sort_keys=True).encode()
        ).hexdigest()[:16]
        known = self.record.fingerprints.get(comp.name)
        if self.running(comp.name) and known is not None and known != fingerprint:
            self._log(f"  {comp.name:<19} configuration changed: restarting")
            self._stop(comp.name)
        if self.running(comp.name) and comp.health():
            self._log(f"  {comp.name:<19} already running (pid {self.record.pids[comp.name]})")
            return
        if self.running(comp.name):
            self._log(f"  {comp.name:<19} running but unhealthy: restarting")
            self._stop(comp.name)
        log = self.log_path(comp.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with log.open("ab") as out:
            proc = subprocess.Popen(
                comp.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=comp.env,
                cwd=self.state,
                start_new_session=True,
            )
        self.record.pids[comp.name] = proc.pid
        self.record.fingerprints[comp.name] = fingerprint
        self._save_record()
        deadline = t0 + comp.timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise PlatformError(
                    f"{comp.name} exited with code {proc.returncode} during start-up; "
                    f"last log lines:\n{_tail(log)}"
                )
            if comp.health():
                self._log(f"  {comp.name:<19} ready in {time.monotonic() - t0:5.1f}s  {comp.url}")
                return
            time.sleep(0.25)
        raise PlatformError(
            f"{comp.name} not ready after {comp.timeout:.0f}s (log: {log}); last lines:\n{_tail(log)}"
        )

    def _stop(self, name: str, grace: float = 10.0) -> bool:
        pid = self.record.pids.get(name)
        if not pid or not self.pid_alive(pid):
            self.record.pids.pop(name, None)
            return False
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and self.pid_alive(pid):
                time.sleep(0.1)
            if not self.pid_alive(pid):
                break
        with contextlib.suppress(ChildProcessError):  # reap if it is our child
            os.waitpid(pid, os.WNOHANG)
        self.record.pids.pop(name, None)
        return True

    # ---------------------------------------------------------------- public API
    def up(self) -> float:
        """Start whatever is not running; return seconds to ready."""
        t0 = time.monotonic()
        self.state.mkdir(parents=True, exist_ok=True)
        for d in ("etcd", "minio-data", "mlflow", "logs"):
            (self.state / d).mkdir(parents=True, exist_ok=True)
        lay = self.layout
        clients: dict[str, tuple[str, str | None]] = {
            "admin": ("kubetrain-admin", "system:masters"),
            "controller-manager": ("system:kube-controller-manager", None),
        }
        if self.record.node:
            clients |= {
                "kubelet": (f"system:node:{lay.node_name}", "system:nodes"),
                "kube-proxy": ("system:kube-proxy", None),
                "kube-scheduler": ("system:kube-scheduler", None),
                "apiserver-kubelet": ("kube-apiserver-kubelet-client", "system:masters"),
            }
        ensure_pki(
            self.state / "pki",
            clients,
            apiserver_ips=[lay.gateway, lay.kubernetes_service_ip] if self.record.node else [],
            servers={"kubelet-serving": (lay.node_name, [lay.gateway, "127.0.0.1"])}
            if self.record.node
            else {},
        )
        for client in clients:
            name = "admin.kubeconfig" if client == "admin" else f"{client}.kubeconfig"
            self._write_kubeconfig(self.state / name, client)
        self._save_record()
        if self.record.node:
            self._prepare_node()
        comps = {c.name: c for c in self.components()}
        self.check_ports()
        self._log(f"platform: starting in {self.state}")
        for name in ("etcd", "apiserver", "controller-manager", "minio"):
            self._start(comps[name])
        self._ensure_bucket(MLFLOW_BUCKET)
        self._start(comps["mlflow"])
        if self.record.node:
            for name in ("scheduler", "registry"):
                self._start(comps[name])
            images = self.images(PLATFORM_IMAGES)
            self.record.pause_image = images["pause"]
            self._write_node_configs()
            comps = {c.name: c for c in self.components()}
            for name in ("containerd", "kubelet", "kube-proxy"):
                self._start(comps[name])
            self._start_addons(images)
        self._write_env()
        elapsed = time.monotonic() - t0
        self._log(f"platform: ready in {elapsed:.1f}s; env: {self.env_path}")
        return elapsed

    #: Which component owns which port (several own two); a port of a running component is its own.
    PORT_OWNERS = {
        "etcd-peer": "etcd",
        "minio-console": "minio",
        "kubelet-healthz": "kubelet",
        "proxy-healthz": "kube-proxy",
        "proxy-metrics": "kube-proxy",
        "ingress": "kube-proxy",  # Traefik's pod: up while the node runs
        "ingress-admin": "kube-proxy",
    }

    def check_ports(self) -> None:
        """One clear line per port another process holds, before anything starts (instead of
        a server dying in its log with `address already in use`)."""
        busy = []
        for name, port in sorted(self.record.ports.items()):
            owner = self.PORT_OWNERS.get(name, name)
            if not self.record.node and owner in NODE_COMPONENTS:
                continue
            if self.running(owner):
                continue
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    busy.append(f"port {port} ({name}) is in use by another process")
        if busy:
            raise PlatformError(
                "; ".join(busy)
                + ". Free it, or use another state dir with `kubetrain-platform --state-dir DIR "
                "up --ports free` (ports are kept per state dir in platform.json)."
            )

    def _prepare_node(self) -> None:
        """Host side of the node: recover from a crash, then bridge, sysctls, configs."""
        host = self.node_host
        try:
            host.check_prerequisites()
            reclaim_stale_node(self._log, self.state)
            host.take_lock()  # refuses at once, before anything changes, if another node runs
        except NodeError as exc:
            raise PlatformError(str(exc)) from exc
        if not any(self.running(n) for n in ("containerd", "kubelet", "kube-proxy")):
            left = host.leftovers()
            if left:
                self._log("  node: cleaning up after an earlier run that did not stop cleanly:")
                for line in left:
                    self._log(f"    {line}")
                host.teardown()
        from kubetrain_platform.images import write_registry_config

        (self.state / "registry").mkdir(exist_ok=True)
        write_registry_config(
            self.state / "registry" / "config.yml",
            port=self.record.ports["registry"],
            storage=self.state / "registry" / "data",
        )
        try:
            host.prepare()
        except NodeError as exc:
            raise PlatformError(str(exc)) from exc
        # The scheduler starts before images exist; its config does not name any.
        node_write(
            self.layout.scheduler_config,
            nodeconf.to_json(nodeconf.scheduler_config(self.state / "kube-scheduler.kubeconfig")),
        )

    def _write_node_configs(self) -> None:
        crt, key = self.pki.client("kubelet-serving")
        self.node_host.write_configs(
            kubelet_cert=crt,
            kubelet_key=key,
            ca=self.pki.ca_crt,
            kubeconfigs={
                n: self.state / f"{n}.kubeconfig" for n in ("kube-proxy", "kube-scheduler")
            },
        )

    def images(self, names: tuple[str, ...]) -> dict[str, str]:
        """Build (if changed) and push the named images; return name -> registry reference."""
        from kubetrain_platform.images import ImageBuilder

        builder = ImageBuilder(
            registry=self.layout.registry,
            cache_dir=cache_dir(),
            bin_dir=self.bin,
            repo_root=REPO_ROOT,
            log=self._log,
        )
        return builder.ensure(names)

    def _start_addons(self, images: dict[str, str]) -> None:
        from kubetrain_platform import addons

        t0 = time.monotonic()
        docs = addons.manifests(
            self.layout,
            images=images,
            ingress_port=self.record.ports["ingress"],
            ingress_admin_port=self.record.ports["ingress-admin"],
            volumes_dir=self.state / "volumes",
        )
        addons.prepare_volumes(self.state / "volumes")
        self.kubectl(["apply", "--server-side", "--force-conflicts", "-f", "-"], stdin=docs)
        for ns, kind, name in addons.WAIT_FOR:
            self.kubectl(["-n", ns, "rollout", "status", f"{kind}/{name}", "--timeout=120s"])
        self._log(
            f"  {'addons':<19} ready in {time.monotonic() - t0:5.1f}s  CoreDNS, Traefik, local volumes"
        )

    def kubectl(self, args: list[str], *, stdin: str | None = None, timeout: float = 180) -> str:
        proc = subprocess.run(
            [self._binary("kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise PlatformError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()[-2000:]}")
        return proc.stdout

    def down(self) -> list[str]:
        stopped = []
        # Reverse start order: the node first, so pods stop while the API still answers.
        for name in (
            *reversed(COMPONENT_ORDER),
            *self.record.pids,
        ):
            if name in self.record.pids and self._stop(name):
                stopped.append(name)
        if self.record.node and self.record.net_index >= 0:
            self.node_host.teardown()
        self._save_record()
        return stopped

    def leftovers(self) -> list[str]:
        """What of this platform is still on the host after `down`; [] when clean."""
        out = [
            f"{name} still running (pid {pid})"
            for name, pid in self.record.pids.items()
            if self.pid_alive(pid)
        ]
        if self.record.node and self.record.net_index >= 0:
            out += self.node_host.leftovers()
        return out

    def status(self) -> list[StatusRow]:
        rows = []
        try:
            comps = {c.name: c for c in self.components()}
        except PlatformError:
            comps = {}
        for name in COMPONENT_ORDER:
            if name in NODE_COMPONENTS and not self.record.node:
                continue
            pid = self.record.pids.get(name)
            comp = comps.get(name)
            if pid and self.pid_alive(pid):
                state = "ready" if comp and comp.health() else "running (not ready)"
                rows.append(
                    StatusRow(name, pid, state, comp.url if comp else "", group_rss_bytes(pid))
                )
            else:
                rows.append(StatusRow(name, None, "stopped", comp.url if comp else "", 0))
        if self.record.node:
            rows += self._pod_rows()
        return rows

    def _pod_rows(self) -> list[StatusRow]:
        """The node's pods (shim + containers), one row each, as `status` shows them."""
        host = self.node_host
        shims = host.shim_pids()
        rss = sum(group_rss_bytes(pid) for pid in shims)
        state = f"{len(shims)} pod sandboxes" if shims else "no pods"
        return [StatusRow("pods", shims[0] if shims else None, state, "", rss + host.pods_rss())]

    def env(self) -> dict[str, str]:
        """The variables written to platform.env."""
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "KUBETRAIN_BIN": str(self.bin),
            "KUBETRAIN_STATE_DIR": str(self.state),
            "MINIO_ENDPOINT": self.url("minio"),
            "MINIO_ACCESS_KEY": self.record.minio_access_key,
            "MINIO_SECRET_KEY": self.record.minio_secret_key,
            "MINIO_CONSOLE_URL": self.url("minio-console"),
            "MLFLOW_TRACKING_URI": self.url("mlflow"),
            "KUBETRAIN_INGRESS_URL": self.url("ingress"),
            "KUBETRAIN_REGISTRY": self.layout.registry,
            "KUBETRAIN_WEBHOOK_TOKEN": self.record.webhook_token,
        }

    # ---------------------------------------------------------------- helpers
    def _write_env(self) -> None:
        lines = ["# Written by `kubetrain-platform up`; source it: `. .kubetrain/platform.env`"]
        lines += [f"export {k}={_shell_quote(v)}" for k, v in self.env().items()]
        self.env_path.write_text("\n".join(lines) + "\n")
        self.env_path.chmod(0o600)

    def _write_kubeconfig(self, path: Path, client: str) -> None:
        crt, key = self.pki.client(client)
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kubetrain-local",
                    "cluster": {
                        "server": self.url("apiserver"),
                        "certificate-authority": str(self.pki.ca_crt),
                    },
                }
            ],
            "users": [
                {"name": client, "user": {"client-certificate": str(crt), "client-key": str(key)}}
            ],
            "contexts": [
                {
                    "name": "kubetrain-local",
                    "context": {"cluster": "kubetrain-local", "user": client},
                }
            ],
            "current-context": "kubetrain-local",
        }
        path.write_text(json.dumps(doc, indent=2))
        path.chmod(0o600)

    def _ensure_bucket(self, name: str) -> None:
        from minio import Minio

        client = Minio(
            f"127.0.0.1:{self.record.ports['minio']}",
            access_key=self.record.minio_access_key,
            secret_key=self.record.minio_secret_key,
            secure=False,
        )
        if not client.bucket_exists(name):
            client.make_bucket(name)


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return "missing"


def _unix_socket_ok(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(2)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def group_rss_bytes(pgid: int) -> int:
    """Sum the RSS of every process in a process group (servers fork workers)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # fields: state ppid pgrp ...
                total += int((stat.parent / "statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue  # the process exited while we looked
    return total


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def which_or_none(name: str) -> str | None:
    return shutil.which(name)
