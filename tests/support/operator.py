"""Support for the operator's platform tests (no tests here; imported by test_operator_*.py).

- `crds`: applies charts/kubetrain/crds/*.yaml to the real apiserver (server-side apply) and
  waits until they are Established.
- `OperatorProcess`: the real `kubetrain-operator` console script as a subprocess against
  the platform's kubeconfig, so a test can SIGKILL it at any moment and start another.
- `PrivateMinio` / `s3`: a MinIO server of the test's own (the platform's binary) whose
  webhook notification target posts to this test's operator, and which a test may kill and
  restart. (The shared platform MinIO has no webhook target, and one target URL can only
  reach one operator.)
- `stub` (tests/support/stub.py): the training Jobs run the scripted stub image on the real
  node; a test ends a run with the exit code and termination message it chooses, through
  `kubectl exec`, and the real Job controller completes or fails the Job.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubetrain_contract as contract
import pytest
import yaml
from kubetrain_operator.kube import Kube, KubeError
from kubetrain_platform.minio_server import StandaloneMinio
from kubetrain_platform.platform import free_port

from tests.support.stub import StubWorkload
from tests.support.wait import wait_for as support_wait_for

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "charts" / "kubetrain" / "crds"
OPERATOR_BIN = Path(sys.executable).parent / "kubetrain-operator"
GROUP_PATH = "/apis/kubetrain.dev/v1alpha1"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """tests.support.wait.wait_for, reading through objects and fields not there yet."""
    return support_wait_for(
        predicate, timeout, what, interval=interval, retry_on=(KubeError, KeyError, TypeError)
    )


@pytest.fixture(scope="session")
def k8s(kube: Any) -> Kube:
    return Kube(kube)


@pytest.fixture(scope="session")
def crds(k8s: Kube) -> None:
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            name = doc["metadata"]["name"]
            k8s.request(
                "PATCH",
                f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}",
                body=doc,
                query={"fieldManager": "kubetrain-operator-tests", "force": "true"},
                content_type="application/apply-patch+yaml",
            )

            def established(name: str = name) -> bool:
                crd = k8s.request(
                    "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
                )
                return any(
                    c["type"] == "Established" and c["status"] == "True"
                    for c in crd.get("status", {}).get("conditions", [])
                )

            wait_for(established, 30, f"CRD {name} Established")
    # Discovery of a freshly created CRD can lag a moment behind Established.
    wait_for(lambda: k8s.request("GET", GROUP_PATH), 30, "kubetrain.dev discovery")


def make_secret(k8s: Kube, namespace: str, name: str, access: str, secret: str) -> None:
    k8s.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/secrets",
        body={
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "stringData": {"accessKey": access, "secretKey": secret},
        },
    )


def watch_body(
    name: str,
    *,
    endpoint: str,
    bucket: str,
    image: str = "kubetrain-trainer:never-runs",
    prefix: str = "",
    **spec: Any,
) -> dict[str, Any]:
    """A DatasetWatch; IMAGE is the trainer's (the default is for watches that never train)."""
    trigger = {"threshold": 200, "debounce": "0s", "cooldown": "0s", "initialTraining": False}
    trigger.update(spec.pop("trigger", {}))
    detection = {"resyncInterval": "5m"}
    detection.update(spec.pop("detection", {}))
    return {
        "apiVersion": "kubetrain.dev/v1alpha1",
        "kind": "DatasetWatch",
        "metadata": {"name": name},
        "spec": {
            "source": {
                "endpoint": endpoint,
                "bucket": bucket,
                "prefix": prefix,
                "include": "*.png",
                "credentialsSecretRef": {"name": "minio-creds"},
            },
            "trigger": trigger,
            "detection": detection,
            "training": {"image": image, **spec.pop("training", {})},
            **spec,
        },
    }


def create_watch(k8s: Kube, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    return k8s.request("POST", f"{GROUP_PATH}/namespaces/{namespace}/datasetwatches", body=body)


def get_status(k8s: Kube, namespace: str, name: str) -> dict[str, Any]:
    return dict(k8s.get_watch(namespace, name).get("status") or {})


def label_counts(k8s: Kube, namespace: str, name: str, label: str) -> dict[str, int]:
    return dict((get_status(k8s, namespace, name).get("labels") or {}).get(label) or {})


def jobs_of(k8s: Kube, namespace: str, watch: str) -> list[dict[str, Any]]:
    return k8s.list_jobs(namespace, f"kubetrain.dev/watch={watch}")


def events_of(k8s: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    doc = k8s.request(
        "GET",
        f"/api/v1/namespaces/{namespace}/events",
        query={"fieldSelector": f"involvedObject.name={name},involvedObject.kind=DatasetWatch"},
    )
    return list(doc.get("items") or [])


def event_reasons(k8s: Kube, namespace: str, name: str) -> list[str]:
    return [e.get("reason", "") for e in events_of(k8s, namespace, name)]


def png_bytes(tag: str) -> bytes:
    """Distinct bytes per tag (the operator only sees keys and ETags)."""
    return b"\x89PNG\r\n\x1a\n" + tag.encode()


def put(minio: Any, bucket: str, key: str, data: bytes) -> None:
    minio.put_object(bucket, key, io.BytesIO(data), len(data))


def put_many(minio: Any, bucket: str, items: list[tuple[str, bytes]], workers: int = 8) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda kv: put(minio, bucket, kv[0], kv[1]), items))


class OperatorProcess:
    """`kubetrain-operator` for one namespace, as a real process."""

    def __init__(
        self,
        kubeconfig: str,
        namespace: str,
        log_dir: Path,
        *extra: str,
        webhook_port: int = 0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.metrics_port = free_port()
        self.args = [
            str(OPERATOR_BIN),
            "--namespace",
            namespace,
            "--standalone",
            "--health-port",
            "0",
            "--metrics-port",
            str(self.metrics_port),
            "--metrics-host",
            "127.0.0.1",
            "--tick-seconds",
            "0.1",
            "--status-interval-seconds",
            "0.3",
            "--job-poll-seconds",
            "0.5",
            "--listen-ping-seconds",
            "1",
            "--listen-read-timeout-seconds",
            "4",
            "--listen-backoff-max-seconds",
            "2",
            "--source-probe-seconds",
            "1",
            "--webhook-host",
            "127.0.0.1",
            "--webhook-port",
            str(webhook_port),
            "--log-level",
            "DEBUG",
            *extra,
        ]
        self.env = {**os.environ, "KUBECONFIG": kubeconfig, **(env or {})}
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"operator-{self.starts}.log"

    def start(self) -> OperatorProcess:
        self.starts += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                self.args, stdout=out, stderr=subprocess.STDOUT, env=self.env
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def logs(self) -> str:
        return "\n".join(
            (self.log_dir / f"operator-{i}.log").read_text(errors="replace")
            for i in range(1, self.starts + 1)
            if (self.log_dir / f"operator-{i}.log").exists()
        )

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as resp:
            return str(resp.read().decode())


@pytest.fixture
def webhook_port() -> int:
    """The port this test's operators receive MinIO webhook events on."""
    return free_port()


@pytest.fixture
def operators(
    platform: Any, namespace: str, tmp_path: Path, k8s: Kube, crds: None, webhook_port: int
) -> Iterator[Callable[..., OperatorProcess]]:
    """Factory of operator processes for the test's namespace; cleans watches up after."""
    made: list[OperatorProcess] = []

    def factory(
        *extra: str, start: bool = True, env: dict[str, str] | None = None
    ) -> OperatorProcess:
        op = OperatorProcess(
            platform.kubeconfig,
            namespace,
            tmp_path / f"op{len(made)}",
            *extra,
            webhook_port=webhook_port,
            env=env,
        )
        made.append(op)
        return op.start() if start else op

    yield factory
    try:
        # Delete watches, then drop the operator's finalizer ourselves: whether or not an
        # operator is still running, the namespace must be deletable after the test.
        path = f"{GROUP_PATH}/namespaces/{namespace}/datasetwatches"
        for item in k8s.request("GET", path).get("items", []):
            name = item["metadata"]["name"]
            try:
                k8s.request("DELETE", f"{path}/{name}")
                k8s.request(
                    "PATCH",
                    f"{path}/{name}",
                    body={"metadata": {"finalizers": None}},
                    content_type="application/merge-patch+json",
                )
            except KubeError as exc:
                if not exc.not_found:
                    raise
    finally:
        for op in made:
            op.stop()
        if any(op.starts for op in made):
            print("\n==== operator logs (last 200 lines) ====")
            print("\n".join(made[-1].logs().splitlines()[-200:]))


PrivateMinio = StandaloneMinio
"""The tests' name for it: a MinIO of the test's own whose KUBETRAIN webhook target posts to
the test's operator; a test may kill (SIGKILL) and start it again."""


@pytest.fixture
def private_minio(platform: Any, tmp_path: Path, webhook_port: int) -> Iterator[PrivateMinio]:
    server = StandaloneMinio(
        Path(platform.bin_dir),
        tmp_path / "minio-data",
        "kubetrain-test",
        "kubetrain-test-secret",
        {"KUBETRAIN": f"http://127.0.0.1:{webhook_port}/minio/events"},
    ).start()
    yield server
    server.kill()


@pytest.fixture
def s3(private_minio: PrivateMinio) -> Any:
    """Client of the test's private MinIO."""
    return private_minio.client()


@pytest.fixture(scope="session")
def stub(platform: Any, k8s: Kube) -> StubWorkload:
    """The scripted workload image (built and pushed once) and its `kubectl exec` driver."""
    from kubetrain_platform.platform import Platform

    image = Platform(platform.state_dir, log=print).images(("stub",))["stub"]
    return StubWorkload(
        image=image,
        kubectl=platform.tool("kubectl"),
        kubeconfig=platform.kubeconfig,
        kube=k8s,
    )


@pytest.fixture
def source(
    k8s: Kube, namespace: str, private_minio: PrivateMinio, s3: Any, stub: StubWorkload
) -> dict[str, str]:
    """watch_body's keywords for a watch that can run: a bucket on the private MinIO, the
    credentials Secret for it, and the stub image as the trainer."""
    make_secret(k8s, namespace, "minio-creds", private_minio.user, private_minio.password)
    s3.make_bucket("dataset")
    return {"endpoint": private_minio.endpoint, "bucket": "dataset", "image": stub.image}


def result_message(**fields: Any) -> str:
    return contract.TrainResult(**fields).to_message()


def manifest_from_bucket(minio: Any, bucket: str, key: str) -> contract.SnapshotManifest:
    resp = minio.get_object(bucket, key)
    try:
        return contract.SnapshotManifest.from_json(resp.read())
    finally:
        resp.close()
        resp.release_conn()


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)[:4000]
