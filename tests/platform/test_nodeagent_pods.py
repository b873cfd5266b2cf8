"""The node agent against the real apiserver and controller-manager.

Each test starts its own agent subprocess (unique node name, scheduler name, namespace
and pod range) and always stops it. Pods carry the test's schedulerName, so an agent
running elsewhere on the same platform never takes them. Pod ranges are random /24s inside
127.0.0.0/8: on this machine traffic may only go to loopback addresses.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest
from kubernetes import client

pytestmark = pytest.mark.platform

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")
Obj = dict[str, Any]


@dataclass
class Agent:
    node: str
    scheduler: str
    state_dir: Path
    log: Path
    proc: subprocess.Popen[bytes]
    ingress_port: int
    pod_cidr: str

    def owns_ip(self, ip: str) -> bool:
        """`ip` is a host address of this agent's (loopback) pod range, not 127.0.0.1."""
        addr = ipaddress.ip_address(ip)
        net = ipaddress.ip_network(self.pod_cidr, strict=False)
        return addr.is_loopback and addr in set(net.hosts()) and ip != "127.0.0.1"

    def pod_dir(self, ns: str, name: str, uid: str) -> Path:
        return self.state_dir / self.node / "pods" / f"{ns}_{name}_{uid[:8]}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def wait_for(
    what: str, fn: Callable[[], T | None], timeout: float = 90.0, agent: Agent | None = None
) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.5)
    tail = "\n".join(agent.log_text().splitlines()[-40:]) if agent else ""
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what}\nagent log tail:\n{tail}"
    )


@contextlib.contextmanager
def running_agent(
    kubeconfig: str, namespace: str, tmp_path: Path, pod_cidr: str = ""
) -> Iterator[Agent]:
    """Start a node agent subprocess serving only `namespace` and a unique scheduler name;
    stop it (SIGTERM, then SIGKILL) however the block ends."""
    tag = uuid.uuid4().hex[:6]
    # A random loopback /24 (never 127.0.0.0/24, the default of a shared agent), so agents of
    # parallel test runs on other platforms of this machine are unlikely to share pod IPs.
    pod_cidr = pod_cidr or f"127.{random.randint(16, 250)}.{random.randint(0, 255)}.0/24"
    node = f"kt-node-{tag}"
    scheduler = f"kt-sched-{tag}"
    log = tmp_path / f"agent-{tag}.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tools"), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    cmd = [
        sys.executable,
        "-m",
        "kubetrain_nodeagent.cli",
        "run",
        "--kubeconfig",
        kubeconfig,
        "--node-name",
        node,
        "--scheduler-name",
        scheduler,
        "--namespace",
        namespace,
        "--state-dir",
        str(tmp_path / "state"),
        "--pod-cidr",
        pod_cidr,
        "--restart-backoff",
        "1",
        "--shutdown-grace",
        "3",
        "--delete-node-on-exit",
        "--ingress-port",
        "0",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        handle = Agent(node, scheduler, tmp_path / "state", log, proc, 0, pod_cidr)

        def ready() -> int | None:
            if proc.poll() is not None:
                raise AssertionError(f"agent exited with {proc.returncode}:\n{handle.log_text()}")
            m = re.search(r"ingress listening on http://127\.0\.0\.1:(\d+)", handle.log_text())
            return (
                int(m.group(1))
                if m and "node agent " + node + " ready" in handle.log_text()
                else None
            )

        handle.ingress_port = wait_for("the agent to be ready", ready, timeout=60)
        yield handle
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(name="agent")
def agent_fixture(platform: Any, namespace: str, tmp_path: Path) -> Iterator[Agent]:
    """A node agent for this test (see `running_agent`)."""
    with running_agent(platform.kubeconfig, namespace, tmp_path) as handle:
        yield handle


def pod_spec(agent: Agent, containers: list[Obj], **extra: Any) -> Obj:
    spec: Obj = {
        "schedulerName": agent.scheduler,
        "containers": containers,
        "terminationGracePeriodSeconds": 3,
    }
    spec.update(extra)
    return spec


def job(name: str, spec: Obj, backoff: int = 0) -> Obj:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": backoff, "template": {"spec": spec}},
    }


def job_condition(batch: client.BatchV1Api, ns: str, name: str) -> str | None:
    j = batch.read_namespaced_job(name, ns)
    for c in j.status.conditions or []:
        if c.status == "True" and c.type in ("Complete", "Failed"):
            return str(c.type)
    return None


def job_pods(core: client.CoreV1Api, ns: str, name: str) -> list[client.V1Pod]:
    return list(core.list_namespaced_pod(ns, label_selector=f"job-name={name}").items)


def test_job_runs_to_completion(kube: client.ApiClient, namespace: str, agent: Agent) -> None:
    core, batch = client.CoreV1Api(kube), client.BatchV1Api(kube)
    spec = pod_spec(
        agent,
        [
            {
                "name": "main",
                "image": "ignored:latest",
                "command": ["python", "-c", "import sys; print('hello from', sys.prefix)"],
            }
        ],
        restartPolicy="Never",
    )
    batch.create_namespaced_job(namespace, job("ok", spec))
    assert (
        wait_for("Job ok to finish", lambda: job_condition(batch, namespace, "ok"), agent=agent)
        == "Complete"
    )
    [pod] = job_pods(core, namespace, "ok")
    assert pod.spec.node_name == agent.node
    assert pod.status.phase == "Succeeded"
    term = pod.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason) == (0, "Completed")
    assert agent.owns_ip(pod.status.pod_ip), (pod.status.pod_ip, agent.pod_cidr)
    assert pod.status.pod_ips[0].ip == pod.status.pod_ip
    log = agent.pod_dir(namespace, pod.metadata.name, pod.metadata.uid) / "logs" / "main" / "0.log"
    assert f"hello from {sys.prefix}" in log.read_text()  # ran in the project venv
    node = core.read_node(agent.node)
    ready = [c for c in node.status.conditions if c.type == "Ready"]
    assert ready and ready[0].status == "True"
    assert node.status.allocatable["pods"] == "110"
    lease = client.CoordinationV1Api(kube).read_namespaced_lease(agent.node, "kube-node-lease")
    assert lease.spec.holder_identity == agent.node


def test_failed_job_carries_termination_message(
    kube: client.ApiClient, namespace: str, agent: Agent
) -> None:
    core, batch = client.CoreV1Api(kube), client.BatchV1Api(kube)
    # The termination path is given as an argument: the agent rewrites it to the pod's file.
    script = "import sys; open(sys.argv[1], 'w').write('bad input: label 7'); sys.exit(2)"
    spec = pod_spec(
        agent,
        [
            {
                "name": "main",
                "image": "x",
                "command": ["python", "-c", script, "/dev/termination-log"],
            }
        ],
        restartPolicy="Never",
    )
    batch.create_namespaced_job(namespace, job("bad", spec))
    spec2 = pod_spec(
        agent,
        [
            {
                "name": "main",
                "image": "x",
                "command": [
                    "python",
                    "-c",
                    "import sys; print('traceback: boom', file=sys.stderr); sys.exit(75)",
                ],
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
        restartPolicy="Never",
    )
    batch.create_namespaced_job(namespace, job("logs", spec2))
    assert (
        wait_for("Job bad to fail", lambda: job_condition(batch, namespace, "bad"), agent=agent)
        == "Failed"
    )
    assert (
        wait_for("Job logs to fail", lambda: job_condition(batch, namespace, "logs"), agent=agent)
        == "Failed"
    )
    [pod] = job_pods(core, namespace, "bad")
    term = pod.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason, term.message) == (2, "Error", "bad input: label 7")
    assert pod.status.phase == "Failed"
    [pod2] = job_pods(core, namespace, "logs")
    term2 = pod2.status.container_statuses[0].state.terminated
    assert term2.exit_code == 75 and "traceback: boom" in term2.message


def test_env_volumes_and_service_account(
    kube: client.ApiClient, namespace: str, agent: Agent
) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_secret(
        namespace,
        {"metadata": {"name": "creds"}, "stringData": {"accessKey": "AK", "secretKey": "SK"}},
    )
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "cfg"}, "data": {"mode": "fast", "app.yaml": "a: 1\n"}}
    )
    script = r"""
import json, os, sys
from pathlib import Path
out = {k: os.environ.get(k) for k in
       ["ACCESS", "MODE", "IP", "POD", "NS", "NODE", "CPU", "secretKey", "CFG_mode", "POD_IP", "SCRATCH_FILE"]}
out["cfg_file"] = Path(sys.argv[1]).read_text()
out["secret_file"] = Path(sys.argv[2]).read_text()
Path(os.environ["SCRATCH_FILE"]).write_text("scratch")
Path(os.environ["KUBETRAIN_PATH_PREFIX"] + "/claim/kept.txt").write_text("persisted")
out["scratch"] = Path(os.environ["SCRATCH_FILE"]).read_text()
prefix = os.environ["KUBETRAIN_PATH_PREFIX"]
sa = Path(prefix + "/var/run/secrets/kubernetes.io/serviceaccount")
out["sa_namespace"] = (sa / "namespace").read_text()
out["sa_has_token"] = len((sa / "token").read_text()) > 100
from kubernetes import client, config
config.load_config()
try:
    client.CoreV1Api().list_namespaced_secret(out["NS"])
    out["sa_api"] = "allowed"
except client.ApiException as exc:
    out["sa_api"] = exc.status
Path(os.environ["KUBETRAIN_TERMINATION_LOG"]).write_text(json.dumps(out))
"""
    container = {
        "name": "main",
        "image": "x",
        "command": ["python", "-c", script, "/etc/cfg/app.yaml", "/etc/sec/secretKey"],
        "env": [
            {
                "name": "ACCESS",
                "valueFrom": {"secretKeyRef": {"name": "creds", "key": "accessKey"}},
            },
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {"name": "SCRATCH_FILE", "value": "/scratch/out.txt"},
        ],
        "envFrom": [
            {"secretRef": {"name": "creds"}},
            {"configMapRef": {"name": "cfg"}, "prefix": "CFG_"},
        ],
        "resources": {"limits": {"cpu": "1500m", "memory": "256Mi"}},
        "volumeMounts": [
            {"name": "cfg", "mountPath": "/etc/cfg"},
            {"name": "sec", "mountPath": "/etc/sec", "readOnly": True},
            {"name": "scratch", "mountPath": "/scratch"},
            {"name": "claim", "mountPath": "/claim"},
        ],
    }
    spec = pod_spec(
        agent,
        [container],
        restartPolicy="Never",
        volumes=[
            {"name": "cfg", "configMap": {"name": "cfg"}},
            {"name": "sec", "secret": {"secretName": "creds"}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "claim", "persistentVolumeClaim": {"claimName": "data"}},
        ],
    )
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": "data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    core.create_namespaced_pod(namespace, {"metadata": {"name": "envpod"}, "spec": spec})

    def finished() -> client.V1Pod | None:
        p = core.read_namespaced_pod("envpod", namespace)
        return p if p.status.phase in ("Succeeded", "Failed") else None

    pod = wait_for("envpod to finish", finished, agent=agent)
    term = pod.status.container_statuses[0].state.terminated
    assert pod.status.phase == "Succeeded", term.message
    out = json.loads(term.message)
    assert out["ACCESS"] == "AK" and out["secretKey"] == "SK"
    assert out["MODE"] == "fast" and out["CFG_mode"] == "fast"
    assert out["IP"] == out["POD_IP"] == pod.status.pod_ip
    assert (out["POD"], out["NS"], out["NODE"]) == ("envpod", namespace, agent.node)
    assert out["CPU"] == "2"
    assert out["cfg_file"] == "a: 1\n" and out["secret_file"] == "SK"
    assert out["scratch"] == "scratch"
    assert out["SCRATCH_FILE"].endswith("/root/scratch/out.txt")  # rewritten to the pod's dir
    assert out["sa_namespace"] == namespace and out["sa_has_token"] is True
    assert out["sa_api"] == 403  # authenticated as the pod's service account, which has no RBAC
    claim = agent.state_dir / agent.node / "claims" / namespace / "data" / "kept.txt"
    assert claim.read_text() == "persisted"  # a claim's directory outlives the pod
    # Volumes (they may hold secrets) are removed once the pod is finished.
    assert not (agent.pod_dir(namespace, "envpod", pod.metadata.uid) / "volumes").exists()


def test_restarts_init_containers_and_backoff(
    kube: client.ApiClient, namespace: str, agent: Agent
) -> None:
    core, batch = client.CoreV1Api(kube), client.BatchV1Api(kube)
    # OnFailure: the first run fails, the restart (same emptyDir) succeeds -> Job Complete.
    flaky = (
        "import os, sys; p = '/work/attempted'\n"
        "if os.path.exists(p): sys.exit(0)\n"
        "open(p, 'w').write('1'); sys.exit(1)"
    )
    spec = pod_spec(
        agent,
        [
            {
                "name": "main",
                "image": "x",
                "command": [
                    "python",
                    "-c",
                    flaky.replace("'/work/attempted'", "os.environ['MARK']"),
                ],
                "env": [{"name": "MARK", "value": "/work/attempted"}],
                "volumeMounts": [{"name": "w", "mountPath": "/work"}],
            }
        ],
        restartPolicy="OnFailure",
        initContainers=[
            {
                "name": "init",
                "image": "x",
                "command": [
                    "python",
                    "-c",
                    "import sys; open(sys.argv[1], 'w').write('i')",
                    "/work/init-done",
                ],
                "volumeMounts": [{"name": "w", "mountPath": "/work"}],
            }
        ],
        volumes=[{"name": "w", "emptyDir": {}}],
    )
    batch.create_namespaced_job(namespace, job("flaky", spec, backoff=2))
    assert (
        wait_for(
            "Job flaky to finish", lambda: job_condition(batch, namespace, "flaky"), agent=agent
        )
        == "Complete"
    )
    [pod] = job_pods(core, namespace, "flaky")
    st = pod.status.container_statuses[0]
    assert st.restart_count == 1
    assert st.last_state.terminated.exit_code == 1
    assert pod.status.init_container_statuses[0].state.terminated.exit_code == 0

    # Always: a crashing container keeps restarting with back-off; restartCount grows.
    crash = pod_spec(
        agent, [{"name": "c", "image": "x", "command": ["python", "-c", "raise SystemExit(3)"]}]
    )
    core.create_namespaced_pod(namespace, {"metadata": {"name": "crash"}, "spec": crash})

    def restarted_twice() -> client.V1ContainerStatus | None:
        p = core.read_namespaced_pod("crash", namespace)
        cs = (p.status.container_statuses or [None])[0]
        return cs if cs is not None and cs.restart_count >= 2 else None

    cs = wait_for("crash to restart twice", restarted_twice, timeout=60, agent=agent)
    assert cs.last_state.terminated.exit_code == 3
    p = core.read_namespaced_pod("crash", namespace)
    assert p.status.phase == "Running"

    # A failing liveness probe kills the container (SIGTERM) and it is restarted.
    unlive = pod_spec(
        agent,
        [
            {
                "name": "c",
                "image": "x",
                "command": ["python", "-c", "import time; time.sleep(600)"],
                "livenessProbe": {
                    "tcpSocket": {"port": 9},
                    "periodSeconds": 1,
                    "failureThreshold": 2,
                },
            }
        ],
        terminationGracePeriodSeconds=1,
    )
    core.create_namespaced_pod(namespace, {"metadata": {"name": "unlive"}, "spec": unlive})

    def killed_by_probe() -> client.V1ContainerStatus | None:
        p = core.read_namespaced_pod("unlive", namespace)
        cs = (p.status.container_statuses or [None])[0]
        return cs if cs is not None and cs.restart_count >= 1 and cs.last_state.terminated else None

    cs = wait_for("the liveness probe to restart unlive", killed_by_probe, timeout=60, agent=agent)
    assert cs.last_state.terminated.exit_code == 128 + 15


def test_pod_deletion_kills_process_group(
    kube: client.ApiClient, namespace: str, agent: Agent
) -> None:
    core = client.CoreV1Api(kube)
    script = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "open(sys.argv[1], 'w').write(f'{os.getpid()} {child.pid}')\n"
        "time.sleep(600)"
    )
    spec = pod_spec(
        agent,
        [
            {
                "name": "main",
                "image": "x",
                "command": ["python", "-c", script, "/pids/pids"],
                "volumeMounts": [{"name": "pids", "mountPath": "/pids"}],
            }
        ],
        volumes=[{"name": "pids", "emptyDir": {}}],
    )
    created = core.create_namespaced_pod(namespace, {"metadata": {"name": "sleeper"}, "spec": spec})
    pidfile = (
        agent.pod_dir(namespace, "sleeper", created.metadata.uid) / "volumes" / "pids" / "pids"
    )
    text = wait_for(
        "the pod to write its pids", lambda: pidfile.exists() and pidfile.read_text(), agent=agent
    )
    pids = [int(x) for x in str(text).split()]
    assert all(psutil.pid_exists(p) for p in pids)
    core.delete_namespaced_pod("sleeper", namespace, grace_period_seconds=5)

    def gone() -> bool:
        try:
            core.read_namespaced_pod("sleeper", namespace)
            return False
        except client.ApiException as exc:
            return exc.status == 404

    wait_for("the pod to be deleted", gone, timeout=30, agent=agent)

    def dead(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    assert all(dead(p) for p in pids), pids


def http_get(url: str, host: str, timeout: float = 10.0) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def answer(url: str, host: str, want: int) -> tuple[int, str] | None:
    got = http_get(url, host)
    return got if got[0] == want else None


def test_deployment_service_and_ingress(
    kube: client.ApiClient, namespace: str, agent: Agent
) -> None:
    """A Deployment's pod behind a Service and an Ingress. The pod's loopback IP cannot be
    in an EndpointSlice (the API refuses loopback there), so the ingress resolves the
    Service's selector against Ready pods itself."""
    core, apps = client.CoreV1Api(kube), client.AppsV1Api(kube)
    net = client.NetworkingV1Api(kube)
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "site"}, "data": {"index.html": "model v1\n"}}
    )
    container = {
        "name": "web",
        "image": "x",
        "command": [
            "python",
            "-m",
            "http.server",
            "--bind",
            "$(POD_IP)",
            "8000",
            "--directory",
            "/site",
        ],
        "ports": [{"name": "http", "containerPort": 8000}],
        "readinessProbe": {"httpGet": {"path": "/index.html", "port": "http"}, "periodSeconds": 1},
        "livenessProbe": {
            "tcpSocket": {"port": 8000},
            "periodSeconds": 2,
            "initialDelaySeconds": 1,
        },
        "volumeMounts": [{"name": "site", "mountPath": "/site"}],
    }
    labels = {"app": "web"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": pod_spec(
                        agent,
                        [container],
                        volumes=[{"name": "site", "configMap": {"name": "site"}}],
                    ),
                },
            },
        },
    )
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {
                "selector": labels,
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
        },
    )
    net.create_namespaced_ingress(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {
                "rules": [
                    {
                        "host": f"web.{namespace}.local",
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": "web", "port": {"number": 80}}},
                                }
                            ]
                        },
                    }
                ]
            },
        },
    )

    def available() -> bool:
        d = apps.read_namespaced_deployment("web", namespace)
        return (d.status.available_replicas or 0) >= 1

    wait_for("the Deployment to be available", available, agent=agent)
    [pod] = core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert agent.owns_ip(pod.status.pod_ip), (pod.status.pod_ip, agent.pod_cidr)
    base = f"http://127.0.0.1:{agent.ingress_port}"
    host = f"web.{namespace}.local"
    status, body = wait_for(
        "the ingress to route",
        lambda: answer(f"{base}/index.html", host, 200),
        timeout=30,
        agent=agent,
    )
    assert body == "model v1\n"
    status, body = http_get(f"{base}/index.html", "unknown.local")
    assert status == 404 and "no Ingress rule matches" in body

    apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 0}})
    status, body = wait_for(
        "the ingress to answer 503",
        lambda: answer(f"{base}/", host, 503),
        timeout=60,
        agent=agent,
    )
    assert "no ready endpoints for service" in body and f"{namespace}/web" in body
