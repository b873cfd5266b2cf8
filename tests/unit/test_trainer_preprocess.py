"""Shared preprocessing: 28x28 grayscale in [0, 1], conversions, clear errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from kubetrain_serving.preprocess import image_bytes_to_array
from PIL import Image

from tests.support.preprocess import add_channel, array_to_input, decode_many, images_to_batch


def encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def digit() -> np.ndarray:
    a = np.zeros((28, 28), dtype=np.uint8)
    a[6:22, 12:16] = 255
    a[6, 10:14] = 128
    return a


def test_grayscale_28x28_is_exact() -> None:
    a = digit()
    out = image_bytes_to_array(encode(Image.fromarray(a, mode="L")))
    assert out.shape == (28, 28) and out.dtype == np.float32
    np.testing.assert_allclose(out, a / 255.0, atol=1e-6)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_colour_and_other_sizes_are_converted() -> None:
    rgb = Image.fromarray(np.stack([digit()] * 3, axis=-1), mode="RGB").resize((56, 56))
    out = image_bytes_to_array(encode(rgb))
    assert out.shape == (28, 28)
    ref = image_bytes_to_array(encode(Image.fromarray(digit(), mode="L")))
    # Upscaled colour copy comes back close to the original after the bilinear resize.
    assert np.abs(out - ref).mean() < 0.05
    jpeg = image_bytes_to_array(encode(Image.new("RGB", (40, 30), (255, 255, 255)), "JPEG"))
    assert jpeg.shape == (28, 28) and jpeg.min() > 0.95


def test_transparent_background_becomes_black() -> None:
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)
    rgba[..., :3] = 255  # white everywhere, but only the stroke is opaque
    rgba[6:22, 12:16, 3] = 255
    out = image_bytes_to_array(encode(Image.fromarray(rgba, mode="RGBA")))
    assert out[0, 0] == 0.0 and out[10, 13] == 1.0


def test_16_bit_grayscale_is_scaled_not_clipped() -> None:
    a16 = digit().astype(np.uint16) * 257
    out = image_bytes_to_array(encode(Image.fromarray(a16)))
    np.testing.assert_allclose(out, digit() / 255.0, atol=1 / 255 + 1e-6)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, not an image", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, r"corrupt|not an image"),
    ],
)
def test_non_images_raise_value_error(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        image_bytes_to_array(data)


def test_truncated_png_raises_value_error() -> None:
    rng = np.random.default_rng(0)
    data = encode(Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8), mode="L"))
    with pytest.raises(ValueError, match=r"corrupt|not an image"):
        image_bytes_to_array(data[: len(data) // 2])


def test_batch_helpers() -> None:
    good = encode(Image.fromarray(digit(), mode="L"))
    batch = images_to_batch([good, good])
    assert batch.shape == (2, 28, 28)
    with pytest.raises(ValueError, match="item 1"):
        images_to_batch([good, b"junk"])
    ok, idx, bad = decode_many([good, b"junk", good])
    assert ok.shape == (2, 28, 28) and idx == [0, 2] and bad[0][0] == 1
    assert images_to_batch([]).shape == (0, 28, 28)
    assert add_channel(batch).shape == (2, 28, 28, 1)


def test_array_to_input() -> None:
    np.testing.assert_allclose(array_to_input(digit()), digit() / 255.0, atol=1e-6)
    assert array_to_input(np.zeros(784)).shape == (28, 28)
    with pytest.raises(ValueError, match="28x28"):
        array_to_input(np.zeros((10, 10)))
    with pytest.raises(ValueError, match="finite"):
        array_to_input(np.full((28, 28), np.nan))
