"""MinIO and MLflow from the platform are real and wired together."""

from __future__ import annotations

import io
import threading
import time

import pytest

pytestmark = pytest.mark.platform


def test_minio_bucket_put_get_delete(minio, bucket: str) -> None:  # type: ignore[no-untyped-def]
    data = b"kubetrain" * 100
    minio.put_object(bucket, "3/a.png", io.BytesIO(data), len(data))
    resp = minio.get_object(bucket, "3/a.png")
    try:
        assert resp.read() == data
    finally:
        resp.close()
        resp.release_conn()
    assert [o.object_name for o in minio.list_objects(bucket, prefix="3/")] == ["3/a.png"]
    minio.remove_object(bucket, "3/a.png")
    assert list(minio.list_objects(bucket, recursive=True)) == []


def test_minio_listen_notification_sees_put(minio, bucket: str) -> None:  # type: ignore[no-untyped-def]
    got: list[dict] = []  # type: ignore[type-arg]
    ready = threading.Event()

    def listen() -> None:
        with minio.listen_bucket_notification(bucket, events=["s3:ObjectCreated:*"]) as events:
            ready.set()
            for event in events:
                got.extend(event.get("Records", []))
                if got:
                    return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert ready.wait(10)
    time.sleep(0.5)  # the subscription is registered server-side after the response starts
    minio.put_object(bucket, "7/x.png", io.BytesIO(b"png"), 3)
    t.join(timeout=15)
    assert got, "no notification received within 15s"
    rec = got[0]
    assert rec["eventName"].startswith("s3:ObjectCreated:")
    assert rec["s3"]["object"]["key"] == "7/x.png"
    assert rec["s3"]["bucket"]["name"] == bucket


def test_mlflow_run_artifact_lands_in_minio(platform, minio, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(platform.mlflow_uri)
    exp = mlflow.set_experiment(f"platform-test-{tmp_path.name}")
    art = tmp_path / "note.txt"
    art.write_text("hello from the platform test")
    with mlflow.start_run(experiment_id=exp.experiment_id) as run:
        mlflow.log_metric("accuracy", 0.5)
        mlflow.log_artifact(str(art))
    c = MlflowClient(platform.mlflow_uri)
    got = c.get_run(run.info.run_id)
    assert got.data.metrics["accuracy"] == 0.5
    assert [a.path for a in c.list_artifacts(run.info.run_id)] == ["note.txt"]
    keys = [
        o.object_name
        for o in minio.list_objects("mlflow", recursive=True)
        if run.info.run_id in o.object_name
    ]
    assert any(k.endswith("/note.txt") for k in keys), keys
    obj = next(k for k in keys if k.endswith("/note.txt"))
    resp = minio.get_object("mlflow", obj)
    try:
        assert resp.read() == b"hello from the platform test"
    finally:
        resp.close()
        resp.release_conn()
