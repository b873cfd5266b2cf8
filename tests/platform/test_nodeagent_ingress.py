"""The local ingress with real controllers: round-robin over ready pods, and a rolling
update of a Deployment with a client polling through the Ingress the whole time."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from .test_nodeagent_pods import (
    Agent,
    agent_fixture,  # noqa: F401  (the `agent` fixture)
    pod_spec,
    wait_for,
)

pytestmark = pytest.mark.platform

SERVER = """
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{os.environ['VERSION']} {os.environ['HOSTNAME']}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((os.environ["POD_IP"], 8000), H).serve_forever()
"""


def get(url: str, host: str) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def deployment(agent: Agent, version: str) -> dict[str, Any]:
    container = {
        "name": "srv",
        "image": "x",
        "command": ["python", "-c", SERVER],
        "env": [{"name": "VERSION", "value": version}],
        "ports": [{"name": "http", "containerPort": 8000}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
        # Give the ingress time to drop a terminating pod before it gets SIGTERM.
        "lifecycle": {"preStop": {"sleep": {"seconds": 2}}},
    }
    return {
        "metadata": {"name": "srv"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "srv"}},
            "strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": {"app": "srv"}},
                "spec": pod_spec(agent, [container], terminationGracePeriodSeconds=10),
            },
        },
    }


def test_round_robin_and_rollout_without_failed_requests(
    kube: client.ApiClient, namespace: str, agent: Agent, tmp_path: Path
) -> None:
    core, apps, net = client.CoreV1Api(kube), client.AppsV1Api(kube), client.NetworkingV1Api(kube)
    apps.create_namespaced_deployment(namespace, deployment(agent, "v1"))
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "srv"},
            "spec": {
                "selector": {"app": "srv"},
                "ports": [{"name": "web", "port": 80, "targetPort": "http"}],
            },
        },
    )
    net.create_namespaced_ingress(
        namespace,
        {
            "metadata": {"name": "srv"},
            "spec": {
                "rules": [
                    {
                        "http": {
                            "paths": [
                                {
                                    "path": "/predict",
                                    "pathType": "Prefix",
                                    "backend": {
                                        "service": {"name": "srv", "port": {"name": "web"}}
                                    },
                                }
                            ]
                        }
                    }
                ]
            },
        },
    )
    url = f"http://127.0.0.1:{agent.ingress_port}/predict"
    host = f"srv.{namespace}.local"

    def both_pods_answer() -> set[str] | None:
        seen = {body for status, body in (get(url, host) for _ in range(6)) if status == 200}
        return seen if len(seen) == 2 else None

    seen = wait_for("both replicas behind the ingress", both_pods_answer, agent=agent)
    assert all(s.startswith("v1 srv-") for s in seen)

    results: list[tuple[int, str]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            results.append(get(url, host))
            time.sleep(0.02)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        apps.patch_namespaced_deployment(
            "srv",
            namespace,
            {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [
                                {"name": "srv", "env": [{"name": "VERSION", "value": "v2"}]}
                            ]
                        }
                    }
                }
            },
        )

        def rolled_out() -> bool:
            d = apps.read_namespaced_deployment("srv", namespace)
            st = d.status
            done = (
                st.observed_generation >= d.metadata.generation
                and st.updated_replicas == 2
                and st.available_replicas == 2
                and (st.replicas or 0) == 2
            )
            pods = core.list_namespaced_pod(namespace, label_selector="app=srv").items
            return done and len(pods) == 2

        wait_for("the rollout to finish", rolled_out, timeout=120, agent=agent)
        time.sleep(1.0)
    finally:
        stop.set()
        poller.join(timeout=15)
    failures = [r for r in results if r[0] != 200]
    print(f"rollout: {len(results)} requests through the ingress, {len(failures)} failed")
    versions = [body.split()[0] for status, body in results if status == 200]
    assert len(results) > 50, len(results)
    assert not failures, (
        f"{len(failures)} of {len(results)} requests failed during the rollout: {failures[:5]}"
    )
    assert versions[0] == "v1" and versions[-1] == "v2"


def test_endpointslices_refuse_loopback_so_the_ingress_reads_pods(
    kube: client.ApiClient, namespace: str, agent: Agent
) -> None:
    """Why the ingress does not use EndpointSlices, and what it does instead: the API
    refuses loopback addresses in EndpointSlices; the ingress routes a numeric targetPort
    and a defaultBackend to the Ready loopback pod; a Ready pod whose IP is not loopback
    (a fake one written into its status, TEST-NET-1, never contacted) is refused."""
    core, apps, net = client.CoreV1Api(kube), client.AppsV1Api(kube), client.NetworkingV1Api(kube)
    disc = client.DiscoveryV1Api(kube)
    with pytest.raises(client.ApiException) as refused:
        disc.create_namespaced_endpoint_slice(
            namespace,
            {
                "metadata": {"name": "manual"},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["127.0.0.2"]}],
                "ports": [{"name": "", "port": 8000}],
            },
        )
    assert refused.value.status == 422
    assert "may not be in the loopback range" in str(refused.value.body)

    d = deployment(agent, "v1")
    d["spec"]["replicas"] = 1
    apps.create_namespaced_deployment(namespace, d)
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "srv"},
            "spec": {"selector": {"app": "srv"}, "ports": [{"port": 80, "targetPort": 8000}]},
        },
    )
    net.create_namespaced_ingress(
        namespace,
        {
            "metadata": {"name": "srv"},
            "spec": {"defaultBackend": {"service": {"name": "srv", "port": {"number": 80}}}},
        },
    )
    url = f"http://127.0.0.1:{agent.ingress_port}/anything"

    def answered() -> str | None:
        status, body = get(url, f"srv.{namespace}.local")
        return body if status == 200 else None

    body = wait_for("the ingress to route to the loopback pod", answered, agent=agent)
    assert body.startswith("v1 srv-")
    [pod] = core.list_namespaced_pod(namespace, label_selector="app=srv").items
    assert agent.owns_ip(pod.status.pod_ip), (pod.status.pod_ip, agent.pod_cidr)

    # A pod bound to a node no agent runs, marked Ready with a non-loopback IP by hand.
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "fake", "labels": {"app": "fake"}},
            "spec": {
                "nodeName": f"{agent.node}-absent",
                "containers": [{"name": "c", "image": "x", "command": ["true"]}],
            },
        },
    )
    core.patch_namespaced_pod_status(
        "fake",
        namespace,
        {
            "status": {
                "phase": "Running",
                "podIP": "192.0.2.7",
                "podIPs": [{"ip": "192.0.2.7"}],
                "conditions": [{"type": "Ready", "status": "True"}],
            }
        },
    )
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "fake"},
            "spec": {"selector": {"app": "fake"}, "ports": [{"port": 80}]},
        },
    )
    net.create_namespaced_ingress(
        namespace,
        {
            "metadata": {"name": "fake"},
            "spec": {
                "rules": [
                    {
                        "host": "fake.local",
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {
                                        "service": {"name": "fake", "port": {"number": 80}}
                                    },
                                }
                            ]
                        },
                    }
                ]
            },
        },
    )

    def refused_fake() -> str | None:
        status, body = get(url, "fake.local")
        return body if status == 503 and "192.0.2.7" in body else None

    body = wait_for("the ingress to refuse the non-loopback pod", refused_fake, agent=agent)
    assert "not loopback addresses and this ingress only connects to 127.0.0.0/8" in body
