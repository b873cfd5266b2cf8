"""MinIO and MLflow from the platform are real and wired together."""

from __future__ import annotations

import io
import threading

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
    done = threading.Event()

    def listen() -> None:
        # minio-py opens the stream lazily on the first next(), so the listener cannot
        # signal "subscribed"; the writer below retries instead, and only the first
        # received record is checked.
        with minio.listen_bucket_notification(bucket, events=["s3:ObjectCreated:*"]) as events:
            for event in events:
                got.extend(event.get("Records", []))
                if got:
                    done.set()
                    return

    threading.Thread(target=listen, daemon=True).start()
    for i in range(30):  # bounded: at most 30 puts over ~15 s
        minio.put_object(bucket, f"7/x{i}.png", io.BytesIO(b"png"), 3)
        if done.wait(0.5):
            break
    assert got, "no notification received within 15s"
    rec = got[0]
    assert rec["eventName"] == "s3:ObjectCreated:Put"
    assert rec["s3"]["object"]["key"].startswith("7/x")
    assert rec["s3"]["bucket"]["name"] == bucket
    assert rec["s3"]["object"]["size"] == 3


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
