"""kubetrain-data upload against the real MinIO: layout kept, unchanged files skipped."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.data import run, run_json

pytestmark = pytest.mark.platform


def _remote(minio: Any, bucket: str, prefix: str = "") -> dict[str, tuple[str, Any]]:
    return {
        o.object_name: (o.etag.strip('"'), o.last_modified)
        for o in minio.list_objects(bucket, prefix=prefix, recursive=True)
    }


def _local(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in root.rglob("*.png")
    }


def test_upload_then_reupload_skips_everything(
    minio: Any,
    bucket: str,
    dataset: Path,
    s3env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, doc, err = run_json(
        capsys, "upload", str(dataset), f"s3://{bucket}/mnist", "--workers", "4"
    )
    assert code == 0, err
    assert doc["totals"] == {"files": 60, "unchanged": 0, "uploaded": 60, "failed": 0}
    local = _local(dataset)
    first = _remote(minio, bucket)
    assert {k: v[0] for k, v in first.items()} == {f"mnist/{k}": md5 for k, md5 in local.items()}
    assert s3env["MINIO_SECRET_KEY"] not in err

    code, doc, err = run_json(capsys, "upload", str(dataset), f"s3://{bucket}/mnist")
    assert code == 0, err
    assert doc["totals"] == {"files": 60, "unchanged": 60, "uploaded": 0, "failed": 0}
    assert _remote(minio, bucket) == first  # same ETags and Last-Modified: nothing was re-sent


def test_changed_and_new_files_only_are_sent_and_dry_run_sends_nothing(
    minio: Any,
    bucket: str,
    dataset: Path,
    s3env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(capsys, "upload", str(dataset), f"s3://{bucket}/", "--quiet")[0] == 0
    before = _remote(minio, bucket)
    changed = sorted((dataset / "4").iterdir())[0]
    changed.write_bytes((dataset / "5" / sorted(os.listdir(dataset / "5"))[0]).read_bytes())
    (dataset / "new-label").mkdir()
    (dataset / "new-label" / "x.png").write_bytes(changed.read_bytes())
    (dataset / ".hidden").mkdir()
    (dataset / ".hidden" / "y.png").write_bytes(b"never uploaded")
    (dataset / "top-level.txt").write_text("not in a label dir")

    code, doc, err = run_json(capsys, "upload", str(dataset), f"s3://{bucket}", "--dry-run")
    assert code == 0, err
    assert doc["planned"] == [
        {"key": f"4/{changed.name}", "why": "changed"},
        {"key": "new-label/x.png", "why": "new"},
    ]
    assert _remote(minio, bucket) == before

    code, doc, err = run_json(capsys, "upload", str(dataset), f"s3://{bucket}")
    assert code == 0, err
    assert doc["totals"]["uploaded"] == 2 and doc["totals"]["unchanged"] == 59
    assert doc["ignoredTopLevel"] == 1
    after = _remote(minio, bucket)
    assert set(after) == set(before) | {"new-label/x.png"}
    assert [k for k in before if after[k] != before[k]] == [f"4/{changed.name}"]
    assert not any(".hidden" in k or "top-level" in k for k in after)


def test_create_bucket(
    minio: Any, dataset: Path, s3env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"t-new-{uuid.uuid4().hex[:8]}"
    code, _, err = run(capsys, "upload", str(dataset), f"s3://{name}/x")
    assert code == 1 and "does not exist" in err and "--create-bucket" in err
    assert not minio.bucket_exists(name)
    code, doc, err = run_json(
        capsys, "upload", str(dataset), f"s3://{name}/x", "--create-bucket", "--dry-run"
    )
    assert code == 0 and len(doc["planned"]) == 60 and not minio.bucket_exists(name)
    try:
        code, doc, err = run_json(
            capsys, "upload", str(dataset), f"s3://{name}/x", "--create-bucket"
        )
        assert code == 0, err
        assert len(list(minio.list_objects(name, recursive=True))) == 60
    finally:
        for obj in minio.list_objects(name, recursive=True):
            minio.remove_object(name, obj.object_name)
        minio.remove_bucket(name)


def test_one_failing_file_does_not_stop_the_others(
    minio: Any,
    bucket: str,
    dataset: Path,
    s3env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    broken = dataset / "3" / "dangling.png"
    broken.symlink_to(dataset / "does-not-exist.png")
    code, _out, err = run(capsys, "upload", str(dataset), f"s3://{bucket}/d")
    assert code == 1
    assert "failed: 3/dangling.png: cannot read: No such file or directory" in err
    assert "1 of 61 files failed to upload" in err
    assert "Traceback" not in err
    remote = _remote(minio, bucket)
    assert len(remote) == 60 and "d/3/dangling.png" not in remote


def test_wrong_secret_is_refused_without_printing_it(
    bucket: str,
    dataset: Path,
    s3env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MINIO_SECRET_KEY", "wrong-secret-value")
    code, out, err = run(capsys, "upload", str(dataset), f"s3://{bucket}/x", "--retries", "1")
    assert code == 1
    assert f"MinIO at {s3env['MINIO_ENDPOINT']} refused access to bucket" in err
    assert "wrong-secret-value" not in out + err and s3env["MINIO_SECRET_KEY"] not in out + err
    assert len(err.strip().splitlines()) == 1
