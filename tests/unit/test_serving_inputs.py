"""Request values -> model input: base64 handling, image decoding, count limit."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from kubetrain_serving import preprocess
from kubetrain_serving.inputs import b64decode_image, check_count, decode_image
from PIL import Image


def _png(arr: np.ndarray, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


DIGIT = (np.arange(28 * 28, dtype=np.uint32).reshape(28, 28) % 256).astype(np.uint8)
PNG = _png(DIGIT)


def test_standard_base64_roundtrip() -> None:
    assert b64decode_image(base64.b64encode(PNG).decode()) == PNG


def test_urlsafe_unpadded_wrapped_and_data_url_variants() -> None:
    std = base64.b64encode(PNG).decode()
    urlsafe = base64.urlsafe_b64encode(PNG).decode().rstrip("=")
    wrapped = "\n".join(std[i : i + 76] for i in range(0, len(std), 76))
    assert b64decode_image(urlsafe) == PNG
    assert b64decode_image(wrapped) == PNG
    assert b64decode_image("data:image/png;base64," + std) == PNG
    assert b64decode_image("  " + std + "\n") == PNG


@pytest.mark.parametrize("text", ["!!!notb64", "abc$", "a", "ab=c", "{}", "é"])
def test_malformed_base64_is_rejected_with_a_clear_message(text: str) -> None:
    with pytest.raises(ValueError, match="malformed base64"):
        b64decode_image(text)


@pytest.mark.parametrize("text", ["", "   ", "data:image/png;base64,"])
def test_empty_string_is_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="empty string"):
        b64decode_image(text)


def test_decode_image_is_the_training_preprocessing() -> None:
    got = decode_image(base64.b64encode(PNG).decode())
    want = preprocess.image_bytes_to_array(PNG)
    assert got.shape == (28, 28) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got, DIGIT / 255.0, atol=1e-6)


def test_colour_and_larger_images_become_28x28_gray() -> None:
    rgb = np.zeros((56, 84, 3), dtype=np.uint8)
    rgb[10:40, 20:60] = (255, 255, 255)
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="JPEG")
    out = decode_image(base64.b64encode(buf.getvalue()).decode())
    assert out.shape == (28, 28)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float(out.max()) > 0.9  # the white block survives the conversion


def test_not_an_image_and_wrong_types() -> None:
    with pytest.raises(ValueError, match="not an image"):
        decode_image(base64.b64encode(b"hello, I am text").decode())
    with pytest.raises(ValueError, match=r"corrupt image|not an image"):
        decode_image(base64.b64encode(PNG[: len(PNG) // 2]).decode())
    with pytest.raises(ValueError, match="expected a base64-encoded image string, got int"):
        decode_image(5)
    with pytest.raises(ValueError, match="got dict"):
        decode_image({"data": "x"})


def test_raw_bytes_are_accepted() -> None:
    assert decode_image(PNG).shape == (28, 28)


def test_count_limit_is_checked_before_decoding() -> None:
    values = ["x"] * 5  # not even base64: the count must fail first
    with pytest.raises(ValueError, match="too many images: 5 in one request, the limit is 4"):
        check_count(values, 4)
    assert check_count(values, 5) is values
    assert check_count("not a list", 1) == "not a list"  # the type check is pydantic's job
