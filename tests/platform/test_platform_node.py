"""The session platform's real node behaves like any cluster's: scheduling, pod IPs, Services,
DNS, `kubectl logs/exec/port-forward`, Ingress through Traefik, missing images, no way out."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubetrain_platform.platform import Platform

from tests.conftest import PlatformInfo

pytestmark = [pytest.mark.platform, pytest.mark.timeout(1200)]

SERVER = (
    "import http.server, socket\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = socket.gethostname().encode()\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers(); self.wfile.write(body)\n"
    "http.server.ThreadingHTTPServer(('0.0.0.0', 8000), H).serve_forever()\n"
)


@pytest.fixture(scope="module")
def plat(platform: PlatformInfo) -> Platform:
    return Platform(platform.state_dir, log=print)


@pytest.fixture(scope="module")
def python_image(plat: Platform) -> str:
    """The operator image: the smallest kubetrain image with a Python interpreter."""
    return plat.images(("operator",))["operator"]


def _restricted(container: dict[str, Any]) -> dict[str, Any]:
    container["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return container


def _apply(plat: Platform, docs: list[dict[str, Any]]) -> None:
    plat.kubectl(["apply", "-f", "-"], stdin="\n".join(json.dumps(d) for d in docs))


@pytest.fixture(scope="module")
def web(plat: Platform, python_image: str) -> Iterator[str]:
    """A namespace under PSA `restricted` with a 2-replica Python web server, Service, Ingress."""
    ns = f"node-web-{uuid.uuid4().hex[:6]}"
    labels = {"app": "web"}
    _apply(
        plat,
        [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": ns,
                    "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
                },
            },
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web", "namespace": ns},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "containers": [
                                _restricted(
                                    {
                                        "name": "web",
                                        "image": python_image,
                                        "command": ["python", "-c", SERVER],
                                        "ports": [{"containerPort": 8000}],
                                        "readinessProbe": {
                                            "httpGet": {"path": "/", "port": 8000},
                                            "periodSeconds": 1,
                                        },
                                    }
                                )
                            ]
                        },
                    },
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web", "namespace": ns},
                "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8000}]},
            },
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {"name": "web", "namespace": ns},
                "spec": {
                    "ingressClassName": "traefik",
                    "rules": [
                        {
                            "host": "web.node.test",
                            "http": {
                                "paths": [
                                    {
                                        "path": "/",
                                        "pathType": "Prefix",
                                        "backend": {
                                            "service": {"name": "web", "port": {"number": 80}}
                                        },
                                    }
                                ]
                            },
                        }
                    ],
                },
            },
        ],
    )
    plat.kubectl(["-n", ns, "rollout", "status", "deploy/web", "--timeout=180s"])
    yield ns
    plat.kubectl(["delete", "namespace", ns, "--wait=false"])


def _pods(plat: Platform, ns: str, selector: str = "app=web") -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(
        plat.kubectl(["-n", ns, "get", "pods", "-l", selector, "-o", "json"])
    )["items"]
    return items


def test_pods_get_real_ips_that_endpointslices_hold(plat: Platform, web: str) -> None:
    pods = _pods(plat, web)
    ips = sorted(p["status"]["podIP"] for p in pods)
    prefix = plat.layout.pod_cidr.rsplit(".", 1)[0] + "."
    assert len(ips) == 2 and all(ip.startswith(prefix) for ip in ips), ips
    slices = json.loads(
        plat.kubectl(
            [
                "-n",
                web,
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web",
                "-o",
                "json",
            ]
        )
    )
    held = sorted(a for s in slices["items"] for e in s["endpoints"] for a in e["addresses"])
    assert held == ips
    # The host reaches a pod by its IP and the Service by its ClusterIP.
    assert _get(f"http://{ips[0]}:8000/") in {p["metadata"]["name"] for p in pods}
    svc = json.loads(plat.kubectl(["-n", web, "get", "svc", "web", "-o", "json"]))
    assert _get(f"http://{svc['spec']['clusterIP']}/") in {p["metadata"]["name"] for p in pods}


def _get(url: str, *, host: str | None = None, within: float = 10.0) -> str:
    """GET with retries for a few seconds: a just-Ready pod can refuse the very first
    connection from the host (seen once in a few runs right after readiness)."""
    deadline = time.monotonic() + within
    while True:
        req = urllib.request.Request(url, headers={"Host": host} if host else {})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                body: str = r.read().decode()
                return body
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_ingress_through_traefik_on_loopback(plat: Platform, web: str) -> None:
    url = plat.env()["KUBETRAIN_INGRESS_URL"]
    names = {p["metadata"]["name"] for p in _pods(plat, web)}
    seen = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and seen != names:
        req = urllib.request.Request(url + "/", headers={"Host": "web.node.test"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                seen.add(r.read().decode())
        except OSError:
            time.sleep(0.5)  # Traefik picks the Ingress up within a second or two
    assert seen == names, f"Traefik reached {seen}, pods are {names}"


def _python_in(plat: Platform, ns: str, pod: str, code: str) -> str:
    """`kubectl exec` a Python snippet in POD; its stdout."""
    return plat.kubectl(["-n", ns, "exec", pod, "--", "python", "-c", code])


def test_logs_exec_and_port_forward(plat: Platform, web: str) -> None:
    pod = _pods(plat, web)[0]["metadata"]["name"]
    # exec: DNS resolves a Service name, and the pod has no default route.
    out = _python_in(
        plat,
        web,
        pod,
        f"import socket;print(socket.gethostbyname('web.{web}.svc.cluster.local'));"
        "print(open('/proc/net/route').read())",
    )
    lines = out.splitlines()
    svc = json.loads(plat.kubectl(["-n", web, "get", "svc", "web", "-o", "json"]))
    assert lines[0] == svc["spec"]["clusterIP"]
    routes = [ln.split()[1] for ln in lines[2:] if ln.strip()]
    assert "00000000" not in routes, f"a default route in the pod: {lines[1:]}"
    # pod -> Service -> pod (possibly itself) through kube-proxy.
    got = _python_in(
        plat,
        web,
        pod,
        "import urllib.request;print(urllib.request.urlopen('http://web', timeout=5).read().decode())",
    )
    assert got.strip() in {p["metadata"]["name"] for p in _pods(plat, web)}
    # port-forward
    proc = subprocess.Popen(
        [
            str(plat.bin / "kubectl"),
            f"--kubeconfig={plat.kubeconfig}",
            "-n",
            web,
            "port-forward",
            f"pod/{pod}",
            ":8000",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = int(line.split("->")[0].rsplit(":", 1)[1])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert r.read().decode() == pod
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert plat.kubectl(["-n", web, "logs", pod]) is not None


def test_missing_image_shows_pull_backoff(plat: Platform, web: str) -> None:
    missing = f"{plat.layout.registry}/kubetrain-does-not-exist:1"
    _apply(
        plat,
        [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "missing", "namespace": web},
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                    "containers": [_restricted({"name": "c", "image": missing})],
                },
            }
        ],
    )
    reason = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and reason not in ("ErrImagePull", "ImagePullBackOff"):
        pod = json.loads(plat.kubectl(["-n", web, "get", "pod", "missing", "-o", "json"]))
        statuses = pod["status"].get("containerStatuses") or [{}]
        reason = (statuses[0].get("state", {}).get("waiting") or {}).get("reason", "")
        time.sleep(1)
    assert reason in ("ErrImagePull", "ImagePullBackOff")
    described = plat.kubectl(["-n", web, "describe", "pod", "missing"])
    assert "kubetrain-does-not-exist" in described
    assert "ErrImagePull" in described or "ImagePullBackOff" in described or "Failed" in described


def test_restricted_namespace_refuses_a_privileged_pod(plat: Platform, web: str) -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged", "namespace": web},
        "spec": {
            "containers": [{"name": "c", "image": "x", "securityContext": {"privileged": True}}]
        },
    }
    with pytest.raises(Exception, match="violates PodSecurity"):
        _apply(plat, [doc])
