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

from kubetrain_platform.certs import Pki, ensure_pki

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PORTS: dict[str, int] = {
    "etcd": 32379,
    "etcd-peer": 32380,
    "apiserver": 36443,
    "controller-manager": 30257,
    "minio": 39000,
    "minio-console": 39001,
    "mlflow": 35000,
    "ingress": 38080,
    # The operator pod of the demo/e2e release binds these (pods share the host's ports).
    "operator-health": 38081,
    "operator-metrics": 38082,
    "operator-webhook": 38083,
}
#: Controllers the platform needs (pods are run by the node agent, so no node
#: lifecycle controller that would evict them between heartbeats).
CONTROLLERS = (
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
)
MLFLOW_BUCKET = "mlflow"
COMPONENT_ORDER = ("etcd", "apiserver", "controller-manager", "minio", "mlflow", "nodeagent")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("KUBETRAIN_CACHE") or Path(base) / "kubetrain")


def default_bin_dir() -> Path:
    return cache_dir() / "bin" / "current"


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
    node: bool = False
    """Whether this platform runs the node agent (pods as processes) and the local ingress."""


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
        if self.record.node and not self.record.webhook:
            # The operator pod of the local release receives bucket events on this port.
            port = self.record.ports["operator-webhook"]
            self.record.webhook = f"http://127.0.0.1:{port}/minio/events"
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
        """The ingress answers HTTP (any status) and the agent's Node is Ready."""
        try:
            urllib.request.urlopen(f"{self.url('ingress')}/", timeout=3).close()
        except urllib.error.HTTPError:
            pass  # 404 from the ingress is an answer
        except (urllib.error.URLError, OSError):
            return False
        url = f"{self.url('apiserver')}/api/v1/nodes?labelSelector=kubetrain.dev%2Fnode-agent"
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_crt))
        crt, key = self.pki.client("admin")
        ctx.load_cert_chain(str(crt), str(key))
        try:
            with urllib.request.urlopen(url, timeout=3, context=ctx) as resp:
                nodes = json.loads(resp.read())["items"]
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            return False
        return any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for n in nodes
            for c in n.get("status", {}).get("conditions", [])
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
                f"{name} is not built ({path} missing): run tools/platform/build.sh (make binaries)"
            )
        return str(path)

    def components(self) -> list[Component]:
        p = self.record.ports
        s = self.state
        pki = self.pki
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
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={p['apiserver']}",
                f"--cert-dir={s / 'pki'}",
                f"--tls-cert-file={pki.apiserver_crt}",
                f"--tls-private-key-file={pki.apiserver_key}",
                f"--client-ca-file={pki.ca_crt}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=RBAC",
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
        if self.record.node:
            agent_bin = self.python_bin / "kubetrain-nodeagent"
            if not agent_bin.exists():
                raise PlatformError(
                    f"kubetrain-nodeagent is not installed at {agent_bin}: run `make install`"
                )
            comps.append(
                Component(
                    "nodeagent",
                    [
                        str(agent_bin),
                        "run",
                        f"--kubeconfig={self.kubeconfig}",
                        f"--state-dir={s / 'nodeagent'}",
                        f"--ingress-port={p['ingress']}",
                        # Requests are not enforced on a node of processes; advertising twice
                        # the cores lets the operator, a training pod and two serving pods
                        # (mid-rollout) fit, as they would on a laptop cluster.
                        f"--cpu={2 * (os.cpu_count() or 1)}",
                    ],
                    {
                        **base_env,
                        # Pods run in the project's environment: the venv first on PATH.
                        "PATH": f"{self.python_bin}:{base_env['PATH']}",
                        "PYTHONUNBUFFERED": "1",
                    },
                    self._node_ready,
                    f"http://127.0.0.1:{p['ingress']} (ingress)",
                )
            )
        return comps

    # ---------------------------------------------------------------- process control
    @staticmethod
    def pid_alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        try:  # a zombie is not alive
            stat = Path(f"/proc/{pid}/stat").read_text()
            return stat.rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

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
        ensure_pki(
            self.state / "pki",
            {
                "admin": ("kubetrain-admin", "system:masters"),
                "controller-manager": ("system:kube-controller-manager", None),
            },
        )
        self._write_kubeconfig(self.kubeconfig, "admin")
        self._write_kubeconfig(self.state / "controller-manager.kubeconfig", "controller-manager")
        self._save_record()
        comps = {c.name: c for c in self.components()}
        self._log(f"platform: starting in {self.state}")
        for name in ("etcd", "apiserver", "controller-manager", "minio"):
            self._start(comps[name])
        self._ensure_bucket(MLFLOW_BUCKET)
        self._start(comps["mlflow"])
        if "nodeagent" in comps:
            self._start(comps["nodeagent"])
        self._write_env()
        elapsed = time.monotonic() - t0
        self._log(f"platform: ready in {elapsed:.1f}s; env: {self.env_path}")
        return elapsed

    def down(self) -> list[str]:
        stopped = []
        # Reverse start order: the node agent first, so pods stop while the API still answers.
        for name in (
            *reversed(COMPONENT_ORDER),
            *self.record.pids,
        ):
            if name in self.record.pids and self._stop(name):
                stopped.append(name)
        self._save_record()
        return stopped

    def status(self) -> list[StatusRow]:
        rows = []
        try:
            comps = {c.name: c for c in self.components()}
        except PlatformError:
            comps = {}
        for name in COMPONENT_ORDER:
            if name == "nodeagent" and not self.record.node:
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
        return rows

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
