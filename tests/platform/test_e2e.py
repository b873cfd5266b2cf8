"""End to end: upload -> training Job -> MLflow/Bento -> rollout -> predictions through the Ingress.

One long scenario on the session platform's real node (kubelet + containerd run kubetrain's
own images, built with buildah), with the chart's bundled MinIO and MLflow as pods, driven
only through the product's public surfaces (helm, `kubectl port-forward` + kubetrain-data,
the Kubernetes API, HTTP through Traefik). Asserts, in order:
0. `helm test` passes; every pod is admitted under Pod Security `restricted`, has a real pod
   IP that its EndpointSlice holds, and answers `kubectl logs`, `exec` and `port-forward`;
1. the first model version is served through the Ingress, with sane accuracy;
2. 200 changes to a label trigger nothing, the 201st triggers a retrain;
3. the operator pod deleted mid-training recovers without a second Job;
4. the new version is served, and a client polling /predict saw no failed request;
5. a training failure (an impossible deadline) leaves the old model serving, status Failed.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubetrain_platform.e2e import Flow, FlowConfig, FlowError, PortForward
from kubetrain_platform.platform import PRODUCT_IMAGES, Platform

from tests.conftest import PlatformInfo

pytestmark = [pytest.mark.platform, pytest.mark.slow, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def flow(platform: PlatformInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flow]:
    plat = Platform(platform.state_dir, log=print)
    cfg = FlowConfig(
        namespace="e2e",
        epochs=3,
        holdout=200,
        work_dir=tmp_path_factory.mktemp("e2e-work"),
    )
    flow = Flow(plat, cfg, log=print)
    try:
        yield flow
    finally:
        flow.close()
        # The release's operator watches every namespace: left running, it would act on the
        # DatasetWatches of the tests that come after this one.
        flow.uninstall()


class Poller:
    """Calls /predict through the Ingress every 100 ms; records every failure."""

    def __init__(self, flow: Flow, png: bytes) -> None:
        self.flow, self.png = flow, png
        self.ok = 0
        self.failures: list[str] = []
        self.versions: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        deadline = time.monotonic() + 1800  # bounded even if the test forgets to stop it
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                got = self.flow.predict_one(self.png, timeout=10)
                self.ok += 1
                v = str(got.get("model_version"))
                if not self.versions or self.versions[-1] != v:
                    self.versions.append(v)
            except FlowError as exc:
                self.failures.append(str(exc))
            self._stop.wait(0.1)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _label_changes(flow: Flow, label: str) -> int:
    labels = flow.status().get("labels") or {}
    return int((labels.get(label) or {}).get("changes", 0))


def _pods_are_real(flow: Flow) -> None:
    """Every pod of the release: Running, a pod IP on the node's bridge, in its EndpointSlices."""
    pods = flow.core.list_namespaced_pod(flow.cfg.namespace).items
    running = [p for p in pods if p.status.phase == "Running"]
    assert running, "no running pod in the release namespace"
    prefix = flow.plat.layout.pod_cidr.rsplit(".", 2)[0]
    for pod in running:
        assert pod.status.pod_ip and pod.status.pod_ip.startswith(prefix), pod.metadata.name
        assert pod.spec.security_context.run_as_non_root, pod.metadata.name
    ips = {p.status.pod_ip for p in running}
    from kubernetes import client

    slices = client.DiscoveryV1Api(flow.api).list_namespaced_endpoint_slice(flow.cfg.namespace)
    addrs = {a for s in slices.items for e in (s.endpoints or []) for a in e.addresses}
    assert addrs and addrs <= ips, (addrs, ips)
    for pod in running:
        name = pod.metadata.name
        assert flow.plat.kubectl(["-n", flow.cfg.namespace, "logs", name, "--tail=5"]).strip()
        # exec: the container's own program answers --help (MinIO's image has nothing else).
        container = pod.spec.containers[0]
        program = (container.command or ["sh"])[0]
        flow.plat.kubectl(["-n", flow.cfg.namespace, "exec", name, "--", program, "--help"])
        # port-forward: a TCP connection through the kubelet reaches the container's port.
        port = container.ports[0].container_port
        fwd = PortForward(
            flow.bin / "kubectl", flow.env["KUBECONFIG"], flow.cfg.namespace, f"pod/{name}", port
        )
        try:
            with socket.create_connection(("127.0.0.1", fwd.local_port), timeout=5) as conn:
                conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
                assert conn.recv(16), f"nothing came back through port-forward to {name}:{port}"
        finally:
            fwd.close()


def test_upload_to_served_prediction(flow: Flow) -> None:
    flow.stage("building images and installing the chart")
    images = flow.plat.images(PRODUCT_IMAGES)
    flow.install_chart(images)
    ns = flow.core.read_namespace(flow.cfg.namespace)
    assert ns.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    flow.helm_test()
    _pods_are_real(flow)
    held = flow.prepare_dataset()
    flow.upload()
    flow.apply_watch()

    # 1. The first model is trained and served through the Ingress.
    first = flow.wait_served(None, timeout=1500)
    acc, version, pairs = flow.evaluate(held)
    flow.stage(f"first model {first}: accuracy {acc:.3f} on {len(pairs)} held-out digits")
    assert version == first
    assert len(pairs) == 200
    assert acc >= 0.8, f"served model accuracy {acc:.3f} on held-out digits"
    assert flow.training_jobs() == [f"{flow.cfg.watch}-train-1"]

    # 2. Exactly 200 changes: nothing. The 201st: a retrain.
    assert len(flow.mutate("3", 200, seed=7)) == 200
    flow.wait("200 changes counted on label 3", lambda: _label_changes(flow, "3") == 200, 120)
    time.sleep(15)  # debounce 3s + cooldown 5s + a resync margin: a Job would exist by now
    assert flow.training_jobs() == [f"{flow.cfg.watch}-train-1"]
    assert _label_changes(flow, "3") == 200

    png = held[0][1]
    with Poller(flow, png) as poller:
        added = flow.mutate("3", 1, seed=8, action="add")
        assert len(added) == 1
        second_job = f"{flow.cfg.watch}-train-2"
        flow.wait("the retrain Job", lambda: second_job in flow.training_jobs(), 180)

        # 3. Kill the operator mid-training: it comes back and adopts the running Job.
        pods = flow.core.list_namespaced_pod(
            flow.cfg.namespace, label_selector="app.kubernetes.io/component=operator"
        ).items
        assert len(pods) == 1
        old_pod = pods[0].metadata.name
        flow.core.delete_namespaced_pod(old_pod, flow.cfg.namespace)
        flow.wait(
            "a new operator pod",
            lambda: any(
                p.metadata.name != old_pod and p.status.phase == "Running"
                for p in flow.core.list_namespaced_pod(
                    flow.cfg.namespace, label_selector="app.kubernetes.io/component=operator"
                ).items
            ),
            180,
        )

        # 4. The new version is rolled out; the poller never saw a failed request.
        second = flow.wait_served(first, timeout=1500)
        time.sleep(2)
    assert second != first
    assert flow.training_jobs() == [f"{flow.cfg.watch}-train-1", second_job]
    assert poller.ok > 20
    assert poller.failures == [], poller.failures[:5]
    assert poller.versions[0] == first and poller.versions[-1] == second
    assert _label_changes(flow, "3") == 0  # counted against the new baseline

    # 5. A training failure keeps the old model serving and says Failed.
    flow.patch_training({"activeDeadlineSeconds": 1})
    flow.mutate("5", 201, seed=9)
    third_job = f"{flow.cfg.watch}-train-3"
    flow.wait("the third Job", lambda: third_job in flow.training_jobs(), 180)
    flow.wait(
        "the failed run in status",
        lambda: (flow.status().get("lastRun") or {}).get("result") == "Failed",
        300,
    )
    st = flow.status()
    assert st["phase"] == "Failed"
    assert st["lastRun"].get("message")
    assert flow.served_version() == second
    assert _label_changes(flow, "5") == 201  # the failed run did not move the baseline


def test_demo_entrypoint_help() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "kubetrain_platform.demo", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    assert "--epochs" in out
