"""Deterministic train/validation/test split by a hash of the object key.

An image's split depends only on its key, never on which other images exist or on a
random seed, so an image keeps its split across retrainings: a digit that was ever
in the test split was never trained on by any version, and comparing versions on the
test split stays honest as the dataset grows. SHA-256 of the key (not Python's
`hash()`, which is salted per process) gives a uniform bucket in [0, 10000).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Literal

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")

#: Per-mille boundaries: [0, 8000) train, [8000, 9000) validation, [9000, 10000) test.
TRAIN_UNTIL = 8000
VAL_UNTIL = 9000
BUCKETS = 10000


def bucket_of(key: str) -> int:
    """A stable bucket in [0, 10000) for an object key."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def split_of(key: str) -> Split:
    """train (80%), val (10%) or test (10%), from the key alone."""
    b = bucket_of(key)
    if b < TRAIN_UNTIL:
        return "train"
    if b < VAL_UNTIL:
        return "val"
    return "test"


def split_keys(keys: Iterable[str]) -> dict[Split, list[str]]:
    """Group keys by split, each group sorted (the order is deterministic too)."""
    out: dict[Split, list[str]] = {s: [] for s in SPLITS}
    for key in keys:
        out[split_of(key)].append(key)
    for group in out.values():
        group.sort()
    return out
