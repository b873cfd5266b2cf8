"""Load exactly one snapshot: the manifest, then every object it names, verified.

The manifest (contract.SnapshotManifest) maps object keys to the ETags they had when
the operator froze the snapshot. Objects are fetched in parallel with a conditional
GET (`If-Match: <etag>`), so the bytes trained on are the bytes the manifest names —
never a newer version uploaded in between — and the returned ETag header is checked
again. Per object the outcome is one of:

- `ok`       downloaded, ETag verified, decoded (converted to 28x28 grayscale if needed);
- `changed`  the key exists with another ETag now (412 Precondition Failed);
- `vanished` the key no longer exists (NoSuchKey);
- `corrupt`  the bytes were verified but are not a decodable image;
- `unlabeled` the key has no label segment under the prefix (should not be in a manifest).

Anything not `ok` is skipped, counted and listed (never fatal). The *verified*
objects (ok + corrupt: the bytes the run actually read, with their ETags) form the
dataset manifest the run records; its digest is the run's `datasetDigest`. When it
differs from the snapshot (something changed or vanished) the trainer stores it next
to the snapshot, content-addressed, so the operator can diff against exactly what the
model saw. Network failures that survive the client's retries abort the run as
`Transient`; a missing manifest or bucket, or denied access, is `BadInput`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import urllib3
from kubetrain_contract import (
    SnapshotManifest,
    label_of,
    manifest_digest,
    normalize_etag,
)
from kubetrain_contract.s3 import S3Connection
from kubetrain_serving.preprocess import IMAGE_SIZE, image_bytes_to_array
from minio import Minio
from minio.error import S3Error
from numpy.typing import NDArray

from kubetrain_trainer.errors import BadInput, Transient

#: S3 error codes that mean "this will not get better by retrying the Job".
_BAD_INPUT_CODES = {"NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


@dataclass(frozen=True)
class Skipped:
    key: str
    reason: str
    """changed | vanished | corrupt | unlabeled"""
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"key": self.key, "reason": self.reason, "detail": self.detail}


@dataclass
class LoadedDataset:
    """The decoded images of one snapshot plus the bookkeeping of what was used."""

    snapshot: SnapshotManifest
    keys: list[str]
    """Keys of the decoded images, sorted; row i of `images` is keys[i]."""
    labels: list[str]
    images: NDArray[np.float32]
    """(N, 28, 28) float32 in [0, 1]."""
    verified: dict[str, str]
    """Key -> ETag of every object whose bytes were read and verified (ok + corrupt)."""
    skipped: list[Skipped] = field(default_factory=list)
    bytes_read: int = 0
    seconds: float = 0.0

    @property
    def digest(self) -> str:
        """Digest of the verified objects: the dataset this run actually used."""
        return manifest_digest(self.verified)

    def dataset_manifest(self) -> SnapshotManifest:
        return SnapshotManifest(
            watch=self.snapshot.watch,
            bucket=self.snapshot.bucket,
            prefix=self.snapshot.prefix,
            objects=dict(self.verified),
            created_at=self.snapshot.created_at,
        )

    def skipped_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for s in self.skipped:
            counts[s.reason] = counts.get(s.reason, 0) + 1
        return counts

    @property
    def images_per_second(self) -> float:
        return len(self.keys) / self.seconds if self.seconds > 0 else 0.0


def make_client(conn: S3Connection, pool_size: int = 16) -> Minio:
    """A MinIO client with bounded timeouts and retries (a stalled socket must not hang a Job).

    The trainer's only MinIO client constructor.
    """
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=10.0, read=60.0),
        maxsize=max(pool_size, 4),
        retries=urllib3.Retry(
            total=4, backoff_factor=0.5, status_forcelist=(500, 502, 503, 504), allowed_methods=None
        ),
    )
    return Minio(**conn.minio_kwargs(), http_client=http)


def _classify_s3(exc: S3Error, what: str) -> Exception:
    if exc.code in _BAD_INPUT_CODES:
        return BadInput(f"{what}: {exc.code}: {exc.message}")
    return Transient(f"{what}: {exc.code}: {exc.message}")


def read_manifest(client: Minio, bucket: str, key: str) -> SnapshotManifest:
    """Fetch and parse the manifest; missing or malformed is bad input."""
    where = f"s3://{bucket}/{key}"
    try:
        resp = client.get_object(bucket, key)
        try:
            data = resp.read()
        finally:
            resp.close()
            resp.release_conn()
    except S3Error as exc:
        if exc.code == "NoSuchKey":
            raise BadInput(f"snapshot manifest {where} does not exist") from exc
        raise _classify_s3(exc, f"reading snapshot manifest {where}") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise Transient(f"reading snapshot manifest {where}: {exc}") from exc
    try:
        manifest = SnapshotManifest.from_json(data)
    except ValueError as exc:
        raise BadInput(f"snapshot manifest {where}: {exc}") from exc
    if not manifest.bucket:
        manifest = SnapshotManifest(
            watch=manifest.watch,
            bucket=bucket,
            prefix=manifest.prefix,
            objects=manifest.objects,
            created_at=manifest.created_at,
        )
    return manifest


_Outcome = tuple[str, str, NDArray[np.float32] | None, str, int]
"""(key, status, image or None, detail, bytes)"""


def _fetch_one(client: Minio, bucket: str, key: str, etag: str) -> _Outcome:
    try:
        resp = client.get_object(bucket, key, request_headers={"If-Match": f'"{etag}"'})
        try:
            data = resp.read()
            got = normalize_etag(resp.headers.get("ETag", ""))
        finally:
            resp.close()
            resp.release_conn()
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NoSuchVersion"):
            return key, "vanished", None, "object no longer exists", 0
        if exc.code == "PreconditionFailed":
            return key, "changed", None, f"ETag is no longer {etag}", 0
        raise _classify_s3(exc, f"downloading s3://{bucket}/{key}") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise Transient(f"downloading s3://{bucket}/{key}: {exc}") from exc
    if got and got != etag:
        # A server that ignores If-Match: the header still tells the truth.
        return key, "changed", None, f"ETag {got} != manifest {etag}", len(data)
    try:
        return key, "ok", image_bytes_to_array(data), "", len(data)
    except ValueError as exc:
        return key, "corrupt", None, str(exc), len(data)


def load_snapshot(
    client: Minio,
    manifest: SnapshotManifest,
    workers: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> LoadedDataset:
    """Download, verify and decode every object of the manifest in parallel."""
    start = time.perf_counter()
    skipped: list[Skipped] = []
    todo: list[tuple[str, str, str]] = []
    for key in sorted(manifest.objects):
        label = label_of(key, manifest.prefix)
        if label is None:
            skipped.append(Skipped(key, "unlabeled", f"no label folder under {manifest.prefix!r}"))
            continue
        todo.append((key, label, manifest.objects[key]))
    label_by_key = {k: lab for k, lab, _ in todo}

    results: dict[str, _Outcome] = {}
    total = len(todo)
    step = max(1, total // 10)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch") as pool:
        futures = [pool.submit(_fetch_one, client, manifest.bucket, k, e) for k, _, e in todo]
        try:
            for i, fut in enumerate(futures, 1):
                outcome = fut.result()
                results[outcome[0]] = outcome
                if progress and (i % step == 0 or i == total):
                    progress(i, total)
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    keys: list[str] = []
    labels: list[str] = []
    arrays: list[NDArray[np.float32]] = []
    verified: dict[str, str] = {}
    bytes_read = 0
    for key, _label, etag in todo:
        _, status, image, detail, nbytes = results[key]
        bytes_read += nbytes
        if status in ("ok", "corrupt"):
            verified[key] = etag
        if status == "ok" and image is not None:
            keys.append(key)
            labels.append(label_by_key[key])
            arrays.append(image)
        else:
            skipped.append(Skipped(key, status, detail))
    images = np.stack(arrays) if arrays else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    skipped.sort(key=lambda s: s.key)
    return LoadedDataset(
        snapshot=manifest,
        keys=keys,
        labels=labels,
        images=images,
        verified=verified,
        skipped=skipped,
        bytes_read=bytes_read,
        seconds=time.perf_counter() - start,
    )


def store_dataset_manifest(client: Minio, snapshot_key: str, dataset: LoadedDataset) -> str:
    """Store the verified-objects manifest next to the snapshot (content-addressed).

    Returns its key. Idempotent: the key is derived from the content.
    """
    import io

    folder = snapshot_key.rsplit("/", 1)[0] if "/" in snapshot_key else ""
    key = f"{folder}/{dataset.digest.removeprefix('sha256:')}.json".lstrip("/")
    body = dataset.dataset_manifest().to_json().encode()
    try:
        client.put_object(
            dataset.snapshot.bucket,
            key,
            io.BytesIO(body),
            len(body),
            content_type="application/json",
        )
    except S3Error as exc:
        raise _classify_s3(
            exc, f"storing dataset manifest s3://{dataset.snapshot.bucket}/{key}"
        ) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise Transient(f"storing dataset manifest: {exc}") from exc
    return key
