"""Batch and array helpers over `kubetrain_serving.preprocess`, used by the tests only.

The product decodes one image at a time (`image_bytes_to_array`: the trainer per object,
serving per request); these build batches and normalise in-memory arrays the same way so
tests can compare against the shared preprocessing rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from kubetrain_serving.preprocess import IMAGE_SIZE, image_bytes_to_array
from numpy.typing import NDArray

INPUT_SHAPE = (IMAGE_SIZE, IMAGE_SIZE)


def array_to_input(arr: NDArray[np.generic]) -> NDArray[np.float32]:
    """Normalise an in-memory 28x28 array (uint8 0..255 or float 0..1) to model input.

    Raises ValueError on a wrong shape, a non-numeric dtype or non-finite pixels.
    """
    a = np.asarray(arr)
    if a.shape == (IMAGE_SIZE * IMAGE_SIZE,):
        a = a.reshape(INPUT_SHAPE)
    if a.shape == (IMAGE_SIZE, IMAGE_SIZE, 1):
        a = a[..., 0]
    if a.shape != INPUT_SHAPE:
        raise ValueError(f"expected a 28x28 array (or 784 values), got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"expected numeric pixels, got dtype {a.dtype}")
    out = a.astype(np.float32)
    if not np.all(np.isfinite(out)):
        raise ValueError("pixels must be finite numbers")
    if out.max(initial=0.0) > 1.0:
        out = out / np.float32(255.0)
    return np.clip(out, 0.0, 1.0)


def images_to_batch(items: Iterable[bytes]) -> NDArray[np.float32]:
    """Decode several image files into one (N, 28, 28) float32 batch.

    Raises ValueError naming the index of the first bad item.
    """
    arrays = []
    for i, data in enumerate(items):
        try:
            arrays.append(image_bytes_to_array(data))
        except ValueError as exc:
            raise ValueError(f"item {i}: {exc}") from exc
    if not arrays:
        return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    return np.stack(arrays)


def decode_many(
    items: Sequence[bytes],
) -> tuple[NDArray[np.float32], list[int], list[tuple[int, str]]]:
    """Decode a batch, skipping bad items instead of failing the whole batch.

    Returns (batch of the good images, their indices in `items`, [(index, error)]).
    """
    arrays: list[NDArray[np.float32]] = []
    good: list[int] = []
    bad: list[tuple[int, str]] = []
    for i, data in enumerate(items):
        try:
            arrays.append(image_bytes_to_array(data))
            good.append(i)
        except ValueError as exc:
            bad.append((i, str(exc)))
    batch = np.stack(arrays) if arrays else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    return batch, good, bad


def add_channel(batch: NDArray[np.float32]) -> NDArray[np.float32]:
    """(N, 28, 28) -> (N, 28, 28, 1), the shape the CNN's input layer takes."""
    if batch.ndim == 2:
        batch = batch[np.newaxis]
    if batch.ndim != 3 or batch.shape[1:] != INPUT_SHAPE:
        raise ValueError(f"expected (N, 28, 28), got {batch.shape}")
    return batch[..., np.newaxis]
