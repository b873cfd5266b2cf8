"""Image preprocessing shared by the trainer and the serving endpoint.

One function turns the bytes of an image file into the model's input, so a digit
is seen identically when it is trained on and when it is classified. The rule
(documented in docs/trainer.md) is *convert, never reject a valid image*:

- any format Pillow can decode is accepted (PNG, JPEG, BMP, GIF, ...);
- images that are not 8-bit grayscale ("L") are converted to "L" (colour, palette,
  16-bit, alpha — alpha is composited onto black, the MNIST background);
- images that are not 28x28 are resized to 28x28 with bilinear filtering;
- pixels are scaled to float32 in [0, 1] (0 = black background, 1 = white ink).

Anything Pillow cannot decode (corrupt, truncated, not an image, empty) raises
ValueError with a message naming the problem; callers add *which* file it was.
Pure functions over bytes and numpy: no I/O, no TensorFlow import, so the serving
image stays light and the trainer can decode in worker threads.
"""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

IMAGE_SIZE = 28
"""Height and width the model expects."""
#: Decompression-bomb guard: refuse images with more pixels than this before decoding.
MAX_PIXELS = 4096 * 4096


def _to_gray(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit grayscale.

    Transparent pixels become black (the MNIST background), so a digit drawn on a
    transparent canvas keeps its ink and loses nothing.
    """
    if img.mode == "L":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit integer grayscale: scale to 8 bits instead of clipping at 255.
        arr = np.asarray(img, dtype=np.float64)
        peak = float(arr.max()) if arr.size else 0.0
        scale = 255.0 / (65535.0 if peak > 255 else 255.0)
        return Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), mode="L")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        peak = float(arr.max()) if arr.size else 0.0
        scale = 255.0 if peak <= 1.0 else 1.0
        return Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("L")
    return img.convert("L")


def image_bytes_to_array(data: bytes) -> NDArray[np.float32]:
    """Decode one image file's bytes into a (28, 28) float32 array in [0, 1].

    Raises ValueError (never another exception type) when the bytes are not a
    decodable image.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError(f"expected image bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError("empty file: not an image")
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width <= 0 or height <= 0:
                raise ValueError(f"image has no pixels ({width}x{height})")
            if width * height > MAX_PIXELS:
                raise ValueError(f"image too large ({width}x{height} > {MAX_PIXELS} pixels)")
            img.load()  # force the full decode here so truncation surfaces as an error
            gray = _to_gray(img)
            if gray.size != (IMAGE_SIZE, IMAGE_SIZE):
                gray = gray.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
            arr = np.asarray(gray, dtype=np.float32)
    except UnidentifiedImageError as exc:
        raise ValueError("not an image (format not recognised)") from exc
    except ValueError:
        raise
    except (OSError, SyntaxError, Image.DecompressionBombError, EOFError) as exc:
        # Pillow reports truncated/corrupt data as OSError (or SyntaxError for some plugins).
        raise ValueError(f"corrupt image: {exc}") from exc
    return arr / np.float32(255.0)
