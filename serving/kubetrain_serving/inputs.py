"""Turning request values into model input, with errors a client can act on.

Pure functions (no BentoML, no TensorFlow), so they are unit-tested directly. Every
failure is a `ValueError` whose message says what is wrong; the service adds where
(`data`, `images[3]`). Decoding itself is `kubetrain_serving.preprocess`, the very
function the trainer uses, so serving sees pixels exactly as training did.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import numpy as np
from numpy.typing import NDArray

from kubetrain_serving import preprocess

_DATA_URL = re.compile(r"^data:[\w.+/-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)
_B64_CHARS = re.compile(rb"^[A-Za-z0-9+/]*={0,2}$")


def b64decode_image(text: str) -> bytes:
    """Strict base64 -> bytes. Accepts the standard and URL-safe alphabets, missing
    padding, line breaks, and a `data:image/...;base64,` prefix; nothing else."""
    text = _DATA_URL.sub("", text.strip(), count=1)
    compact = "".join(text.split())  # line-wrapped base64 (e.g. the `base64` CLI) is common
    if not compact:
        raise ValueError("empty string: expected a base64-encoded image")
    compact = compact.replace("-", "+").replace("_", "/")
    raw = compact.encode("ascii", "replace")
    if not _B64_CHARS.match(raw) or len(compact.rstrip("=")) % 4 == 1:
        raise ValueError("malformed base64: not a base64-encoded image")
    try:
        return base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("malformed base64: not a base64-encoded image") from None


def decode_image(value: Any) -> NDArray[np.float32]:
    """A base64 string (or raw bytes) -> the model's (28, 28) float32 input in [0, 1]."""
    if isinstance(value, str):
        data = b64decode_image(value)
    elif isinstance(value, bytes | bytearray):
        data = bytes(value)
    else:
        raise ValueError(f"expected a base64-encoded image string, got {type(value).__name__}")
    return preprocess.image_bytes_to_array(data)


def check_count(value: Any, limit: int) -> Any:
    """Refuse a list of more than `limit` images before decoding any of them."""
    if isinstance(value, list) and len(value) > limit:
        raise ValueError(f"too many images: {len(value)} in one request, the limit is {limit}")
    return value
