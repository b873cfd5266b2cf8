"""kubetrain-data mutate against the real MinIO: exactly N keys of label L change."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from kubetrain_data.pngio import decode_gray28

from tests.support.data import run

pytestmark = pytest.mark.platform


def _listing(minio: Any, bucket: str) -> dict[str, str]:
    return {o.object_name: o.etag.strip('"') for o in minio.list_objects(bucket, recursive=True)}


@pytest.fixture
def seeded(
    minio: Any,
    bucket: str,
    dataset: Path,
    s3env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> dict[str, str]:
    """Bucket with 6 digits per label under data/, plus reserved objects that must never change."""
    assert run(capsys, "upload", str(dataset), f"s3://{bucket}/data", "--quiet")[0] == 0
    for key in (
        "data/.kubetrain/snapshots/x.json",
        ".kubetrain/bentos/m.bento",
        "other/3/keep.png",
    ):
        minio.put_object(bucket, key, io.BytesIO(b"{}"), 2)
    return _listing(minio, bucket)


def _mutate(
    capsys: pytest.CaptureFixture[str], bucket: str, *args: str
) -> tuple[int, dict[str, Any], str]:
    code, out, err = run(capsys, "mutate", f"s3://{bucket}/data", "--json", *args)
    return code, (json.loads(out) if out.strip() else {}), err


def _get(minio: Any, bucket: str, key: str) -> bytes:
    resp = minio.get_object(bucket, key)
    try:
        return bytes(resp.read())
    finally:
        resp.close()
        resp.release_conn()


def test_add(
    minio: Any, bucket: str, seeded: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc, err = _mutate(capsys, bucket, "--label", "3", "--add", "4", "--seed", "1")
    assert code == 0, err
    after = _listing(minio, bucket)
    added = sorted(set(after) - set(seeded))
    assert doc["touched"] == added and len(added) == 4 and doc["failed"] == []
    assert all(k.startswith("data/3/") for k in added)
    assert {k: after[k] for k in seeded} == seeded  # nothing else changed
    for key in added:
        assert decode_gray28(_get(minio, bucket, key)) is not None  # a 28x28 grayscale PNG


def test_modify(
    minio: Any, bucket: str, seeded: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc, err = _mutate(capsys, bucket, "--label", "7", "--modify", "3", "--seed", "2")
    assert code == 0, err
    after = _listing(minio, bucket)
    assert set(after) == set(seeded)
    modified = sorted(k for k in seeded if after[k] != seeded[k])
    assert doc["touched"] == modified and len(modified) == 3
    assert all(k.startswith("data/7/") for k in modified)


def test_delete(
    minio: Any, bucket: str, seeded: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc, err = _mutate(capsys, bucket, "--label", "0", "--delete", "5", "--seed", "3")
    assert code == 0, err
    after = _listing(minio, bucket)
    deleted = sorted(set(seeded) - set(after))
    assert doc["touched"] == deleted and len(deleted) == 5
    assert all(k.startswith("data/0/") for k in deleted)
    assert {k: after[k] for k in after} == {k: seeded[k] for k in after}


def test_text_output_names_every_key(
    minio: Any, bucket: str, seeded: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "mutate", f"s3://{bucket}/data", "--label", "9", "--delete", "2")
    assert code == 0, err
    lines = out.strip().splitlines()
    deleted = sorted(set(seeded) - set(_listing(minio, bucket)))
    assert lines[:2] == [f"deleted s3://{bucket}/{k}" for k in deleted]
    assert lines[2].startswith("label 9: deleted 2 of 2 objects") and "(seed " in lines[2]


def test_same_seed_same_result(
    minio: Any, bucket: str, seeded: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, first, err = _mutate(capsys, bucket, "--label", "5", "--add", "3", "--seed", "11")
    assert code == 0, err
    first_etags = {k: v for k, v in _listing(minio, bucket).items() if k in first["touched"]}
    for key in first["touched"]:  # back to the seeded content
        minio.remove_object(bucket, key)
    assert _listing(minio, bucket) == seeded
    code, second, err = _mutate(capsys, bucket, "--label", "5", "--add", "3", "--seed", "11")
    assert code == 0, err
    assert second["touched"] == first["touched"]
    assert {
        k: v for k, v in _listing(minio, bucket).items() if k in second["touched"]
    } == first_etags


def test_too_many_is_refused_and_touches_nothing(
    minio: Any, bucket: str, seeded: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    for action in ("--delete", "--modify"):
        code, _, err = _mutate(capsys, bucket, "--label", "2", action, "7")
        assert code == 1 and "has 6" in err and "cannot" in err, err
    code, _, err = _mutate(capsys, bucket, "--label", "nolabel", "--add", "1")
    assert code == 1 and "no readable images" in err
    assert _listing(minio, bucket) == seeded
