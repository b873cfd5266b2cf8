"""`mutate`: simulate dataset change in MinIO for demos and tests.

Only objects of one label are touched: keys under `PREFIX<label>/` (label = the first
path segment under the prefix, as `kubetrain_contract.label_of` defines it).
A label starting with "." is refused, so `.kubetrain/` (operator state, snapshots,
Bentos) can never be hit.

- `--add N`: N new images, each a small random affine transform (rotation within 12
  degrees, scale 0.9-1.1, shear within 0.15, shift within 2 px, bilinear) of an existing
  PNG of the label, so they stay plausible digits. Keys are content-named like
  csv-to-images (`<pixel hash>.png`); a draw whose key already exists is redrawn.
- `--modify N`: N existing PNGs (seeded choice) are overwritten at the same key with a
  visibly different version: a rotation of 10-25 degrees plus a 1-3 px shift, redrawn
  until at least 5% of the pixels change by more than 48 levels (a blank image is
  inverted instead). The new bytes differ, so the ETag changes.
- `--delete N`: N objects (seeded choice) are removed.

Everything random comes from one `random.Random(seed)`, drawn in a fixed order before any
request is made, so the same seed on the same bucket content touches the same keys with
the same content. Without `--seed` a seed is drawn and printed. All inputs are checked
(enough objects, enough decodable images) before the first write; then requests run in
parallel, each with retries. Exactly the keys that changed are printed (`--json`: one
document); keys that failed are named and the exit code is non-zero.
"""

from __future__ import annotations

import io
import math
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from kubetrain_contract import label_of, normalize_etag
from minio import Minio
from PIL import Image

from kubetrain_data import s3util
from kubetrain_data.csvformat import clean_label
from kubetrain_data.errors import DataError
from kubetrain_data.pngio import SIDE, content_digest, encode_png, file_name, to_gray28
from kubetrain_data.settings import MutateOptions

ACTIONS = ("add", "modify", "delete")
"""What mutate can do."""
MAX_SOURCES = 64
"""--add draws from at most this many downloaded source images."""
MIN_CHANGED_FRACTION = 0.05
"""--modify: share of pixels that must change by more than CHANGE_LEVEL."""
CHANGE_LEVEL = 48
"""--modify: a pixel counts as changed when it moves by more than this many levels."""


@dataclass
class MutateResult:
    """What mutate did."""

    action: str
    """add, modify or delete."""
    seed: int
    """The seed used (given or drawn)."""
    touched: list[str] = field(default_factory=list)
    """Keys written or deleted, in a stable order."""
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(key, reason) of requests that failed after retries."""

    def to_json(self, opts: MutateOptions) -> dict[str, Any]:
        return {
            "action": self.action,
            "bucket": opts.target.bucket,
            "prefix": opts.target.prefix,
            "label": opts.label,
            "requested": opts.count,
            "seed": self.seed,
            "touched": self.touched,
            "failed": [{"key": k, "error": e} for k, e in self.failed],
        }


def affine(
    pixels: bytes,
    rng: random.Random,
    *,
    rotate: tuple[float, float],
    scale: tuple[float, float],
    shear: float,
    shift: tuple[float, float],
) -> bytes:
    """Transform a 28x28 image about its centre; ranges are (min, max) magnitudes.

    rotate/shift magnitudes are drawn in [min, max] with a random sign; the output keeps
    28x28 and fills uncovered pixels with 0 (background).
    """
    angle = math.radians(rng.uniform(*rotate) * rng.choice((-1, 1)))
    s = rng.uniform(*scale)
    sh = rng.uniform(-shear, shear)
    tx = rng.uniform(*shift) * rng.choice((-1, 1))
    ty = rng.uniform(*shift) * rng.choice((-1, 1))
    cos, sin = math.cos(angle), math.sin(angle)
    # forward: p' = c + M (p - c) + t with M = s * R(angle) @ [[1, sh], [0, 1]]
    m = s * np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, sh], [0.0, 1.0]])
    inv = np.linalg.inv(m)
    centre = np.array([SIDE / 2, SIDE / 2])
    offset = centre - inv @ (centre + np.array([tx, ty]))
    data = (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1])
    img = Image.frombytes("L", (SIDE, SIDE), pixels)
    out = img.transform(
        (SIDE, SIDE), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR, fillcolor=0
    )
    return out.tobytes()


def small_variation(pixels: bytes, rng: random.Random) -> bytes:
    """--add: a plausible new sample of the same digit."""
    return affine(pixels, rng, rotate=(0, 12), scale=(0.9, 1.1), shear=0.15, shift=(0, 2))


def changed_enough(old: bytes, new: bytes) -> bool:
    diff = np.abs(np.frombuffer(old, np.uint8).astype(np.int16) - np.frombuffer(new, np.uint8))
    return int((diff > CHANGE_LEVEL).sum()) >= MIN_CHANGED_FRACTION * len(old)


def visible_change(pixels: bytes, rng: random.Random) -> bytes:
    """--modify: a clearly different version of the image."""
    for _ in range(10):
        new = affine(pixels, rng, rotate=(10, 25), scale=(1.0, 1.0), shear=0.0, shift=(1, 3))
        if changed_enough(pixels, new):
            return new
    return bytes(255 - b for b in pixels)  # blank or near-blank: invert


def _label_keys(mc: Minio, opts: MutateOptions) -> dict[str, str]:
    base = opts.target.prefix + opts.label + "/"

    def listing() -> dict[str, str]:
        return {
            str(o.object_name): normalize_etag(o.etag or "")
            for o in mc.list_objects(opts.target.bucket, prefix=base, recursive=True)
            if label_of(str(o.object_name), opts.target.prefix) == opts.label
        }

    try:
        return s3util.with_retries(listing, opts.retries)
    except Exception as exc:
        raise DataError(
            f"cannot list s3://{opts.target.bucket}/{base}: {s3util.describe(exc)}"
        ) from None


def _download(mc: Minio, bucket: str, key: str, retries: int) -> bytes:
    def get() -> bytes:
        response = mc.get_object(bucket, key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    return s3util.with_retries(get, retries)


def _decodable(
    mc: Minio, opts: MutateOptions, keys: list[str], wanted: int
) -> list[tuple[str, bytes]]:
    """The first WANTED keys of KEYS (in order) that are readable images, as 28x28 pixels."""
    found: list[tuple[str, bytes]] = []
    with ThreadPoolExecutor(max_workers=max(1, opts.workers)) as pool:
        start = 0
        while len(found) < wanted and start < len(keys):
            batch = keys[start : start + max(wanted - len(found), opts.workers)]
            start += len(batch)
            try:
                blobs = list(
                    pool.map(lambda k: _download(mc, opts.target.bucket, k, opts.retries), batch)
                )
            except Exception as exc:
                raise DataError(
                    f"cannot download from s3://{opts.target.bucket}: {s3util.describe(exc)}"
                ) from None
            for key, blob in zip(batch, blobs, strict=True):
                pixels = to_gray28(blob)
                if pixels is not None and len(found) < wanted:
                    found.append((key, pixels))
    return found


def _run_parallel(opts: MutateOptions, jobs: list[tuple[str, Any]], result: MutateResult) -> None:
    """Run (key, thunk) jobs; record each key as touched or failed."""

    def run(job: tuple[str, Any]) -> tuple[str, str]:
        key, thunk = job
        try:
            s3util.with_retries(thunk, opts.retries)
        except Exception as exc:
            return key, s3util.describe(exc)
        return key, ""

    with ThreadPoolExecutor(max_workers=max(1, opts.workers)) as pool:
        for key, error in pool.map(run, jobs):
            if error:
                result.failed.append((key, error))
            else:
                result.touched.append(key)


def _put(mc: Minio, bucket: str, key: str, data: bytes) -> Any:
    return lambda: mc.put_object(bucket, key, io.BytesIO(data), len(data), content_type="image/png")


def mutate(opts: MutateOptions) -> MutateResult:
    """Run mutate; raises DataError (nothing touched) when the request cannot be met."""
    if opts.action not in ACTIONS:
        raise DataError(f"unknown action {opts.action!r}")
    label, reason = clean_label(opts.label.encode())
    if label is None or label != opts.label:
        raise DataError(f"--label {opts.label!r}: {reason or 'surrounding spaces or quotes'}")
    if opts.count < 1:
        raise DataError("the count must be at least 1")
    seed = opts.seed if opts.seed is not None else random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    result = MutateResult(action=opts.action, seed=seed)
    mc = s3util.client(opts.s3, opts.workers)
    s3util.ensure_bucket(mc, opts.s3, opts.target.bucket, create=False, retries=opts.retries)
    keys = _label_keys(mc, opts)
    where = f"s3://{opts.target.bucket}/{opts.target.prefix}{opts.label}/"
    bucket = opts.target.bucket

    if opts.action == "delete":
        if opts.count > len(keys):
            raise DataError(f"{where} has {len(keys)} objects; cannot delete {opts.count}")
        chosen = sorted(rng.sample(sorted(keys), opts.count))
        _run_parallel(opts, [(k, _remover(mc, bucket, k)) for k in chosen], result)
    elif opts.action == "modify":
        candidates = sorted(keys)
        rng.shuffle(candidates)
        images = _decodable(mc, opts, candidates, opts.count)
        if len(images) < opts.count:
            raise DataError(
                f"{where} has {len(images)} readable images; cannot modify {opts.count}"
            )
        images.sort()
        jobs = [(k, _put(mc, bucket, k, encode_png(visible_change(px, rng)))) for k, px in images]
        _run_parallel(opts, jobs, result)
    else:
        candidates = sorted(keys)
        rng.shuffle(candidates)
        sources = _decodable(mc, opts, candidates, min(MAX_SOURCES, len(candidates)))
        if not sources:
            raise DataError(f"{where} has no readable images to derive new ones from")
        taken = {k.rsplit("/", 1)[-1] for k in keys}
        base = opts.target.prefix + opts.label + "/"
        new: list[tuple[str, bytes]] = []
        for _ in range(opts.count):
            for _attempt in range(20):
                _src_key, src = sources[rng.randrange(len(sources))]
                pixels = small_variation(src, rng)
                digest = content_digest(pixels)
                name = file_name(digest)
                if pixels != src and name not in taken:
                    break
            else:
                raise DataError(f"could not derive {opts.count} distinct new images from {where}")
            taken.add(name)
            new.append((base + name, encode_png(pixels)))
        _run_parallel(opts, [(k, _put(mc, bucket, k, data)) for k, data in new], result)
    result.touched.sort()
    result.failed.sort()
    return result


def _remover(mc: Minio, bucket: str, key: str) -> Any:
    return lambda: mc.remove_object(bucket, key)
