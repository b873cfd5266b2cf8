"""PNG encoding and decoding for 28x28 8-bit grayscale digits, and content naming.

Why a hand-written encoder: a 28x28 grayscale PNG is a fixed IHDR, one zlib-compressed
IDAT (a filter byte of 0 before each 28-byte row) and IEND. Writing those bytes directly
is two to three times faster than going through PIL, and -- more important -- the output is a pure
function of the pixels (fixed filter, fixed zlib level), so the same image always gives
the same bytes and therefore the same MD5/ETag in MinIO: re-uploading a re-generated
dataset skips every object. Decoding goes through PIL, which validates the file.

File names derive from the *pixels*, not the PNG bytes (`content_digest`), so naming
does not depend on the encoder: any 28x28 grayscale PNG with the same pixels has the same
digest, whoever wrote it.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib

import numpy as np
import numpy.typing as npt

SIDE = 28
"""Images are SIDE x SIDE pixels."""
PIXELS = SIDE * SIDE
"""Pixel values per image (and per CSV row, besides the label)."""
NAME_HEX = 20
"""Hex digits of the pixel SHA-256 used in file names (80 bits: collisions are negligible)."""
_ZLIB_LEVEL = 1
"""zlib level: 1 is twice as fast as the default 6 and costs ~6% in size (about 200 vs 190
bytes per digit, far below a 4 KiB filesystem block). Changing it changes every file's
bytes, hence every ETag, so `upload` would re-send a re-generated dataset once."""
_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


# width, height, bit depth 8, colour type 0 (grayscale), compression 0, filter 0, no interlace
_IHDR = _chunk(b"IHDR", struct.pack(">IIBBBBB", SIDE, SIDE, 8, 0, 0, 0, 0))
_IEND = _chunk(b"IEND", b"")


def _png(scanlines: bytes) -> bytes:
    return _SIGNATURE + _IHDR + _chunk(b"IDAT", zlib.compress(scanlines, _ZLIB_LEVEL)) + _IEND


def encode_pngs(pixels: npt.NDArray[np.uint8]) -> list[bytes]:
    """Encode each row of an (n, PIXELS) array as a deterministic grayscale PNG.

    The scanlines (filter type 0 -- "None" -- then the row's 28 bytes) of all images are
    laid out in one numpy operation; only zlib runs per image.
    """
    if pixels.ndim != 2 or pixels.shape[1] != PIXELS:
        raise ValueError(f"expected an (n, {PIXELS}) array, got shape {pixels.shape}")
    scan = np.zeros((len(pixels), SIDE, SIDE + 1), dtype=np.uint8)
    scan[:, :, 1:] = pixels.reshape(-1, SIDE, SIDE)
    return [_png(image.tobytes()) for image in scan]


def encode_png(pixels: bytes | npt.NDArray[np.uint8]) -> bytes:
    """Encode PIXELS (row-major, 0..255) as a deterministic 28x28 grayscale PNG."""
    flat = np.frombuffer(pixels, dtype=np.uint8) if isinstance(pixels, bytes) else pixels
    if flat.size != PIXELS:
        raise ValueError(f"expected {PIXELS} pixels, got {flat.size}")
    return encode_pngs(flat.reshape(1, PIXELS))[0]


_HEAD = _SIGNATURE + _IHDR
_RAW_LEN = SIDE * (SIDE + 1)


def _decode_own(data: bytes) -> bytes | None:
    """Fast path for the exact layout encode_png writes (one IDAT, filter 0 rows).

    Checks the CRC and every filter byte, so it only accepts files PIL would decode to
    the same pixels; anything else returns None and goes through PIL.
    """
    if not data.startswith(_HEAD) or not data.endswith(_IEND):
        return None
    pos = len(_HEAD)
    (length,) = struct.unpack_from(">I", data, pos)
    if data[pos + 4 : pos + 8] != b"IDAT" or pos + 12 + length + len(_IEND) != len(data):
        return None
    body = data[pos + 4 : pos + 8 + length]
    (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
    if zlib.crc32(body) != crc:
        return None
    try:
        raw = zlib.decompress(body[4:])
    except zlib.error:
        return None
    if len(raw) != _RAW_LEN:
        return None
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(SIDE, SIDE + 1)
    if rows[:, 0].any():
        return None
    return rows[:, 1:].tobytes()


def decode_gray28(data: bytes) -> bytes | None:
    """Pixels of a 28x28 8-bit grayscale PNG, or None for anything else (or not a PNG).

    Only such files can hold the same content as a CSV row, so nothing else is converted.
    Damaged files (bad CRC, truncated) are None too. Files written by encode_png take a
    fast path (about 5x quicker than PIL); this matters because csv-to-images decodes every
    existing file of OUT on each run.
    """
    own = _decode_own(data)
    if own is not None:
        return own
    from PIL import Image, UnidentifiedImageError  # only here: keeps csv-to-images' start-up short

    try:
        # verify() checks every chunk's CRC up to IEND; plain loading is lenient (it reads
        # a truncated or CRC-damaged file), and such a file must not count as a copy.
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "PNG" or img.mode != "L" or img.size != (SIDE, SIDE):
                return None
            img.verify()
        with Image.open(io.BytesIO(data)) as img:
            if not img.tile:  # PIL skips unknown critical chunks: no IDAT means no image
                return None
            img.load()
            return img.tobytes()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error):
        return None


def to_gray28(data: bytes) -> bytes | None:
    """Any decodable image -> 28x28 grayscale pixels (convert "L", resize), or None.

    Same normalisation as serving/kubetrain_serving/preprocess.py, used by `mutate` on
    images that other tools may have written.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            gray = img.convert("L")
            if gray.size != (SIDE, SIDE):
                gray = gray.resize((SIDE, SIDE), Image.Resampling.BILINEAR)
            return gray.tobytes()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


def content_digest(pixels: bytes | npt.NDArray[np.uint8]) -> str:
    """Full SHA-256 hex digest of the pixel bytes: the identity of an image."""
    data = pixels if isinstance(pixels, bytes) else np.ascontiguousarray(pixels).data
    return hashlib.sha256(data).hexdigest()


def content_digests(pixels: npt.NDArray[np.uint8]) -> list[str]:
    """content_digest of each row of an (n, PIXELS) array, without a copy per row."""
    if not pixels.size:
        return []
    view = memoryview(np.ascontiguousarray(pixels, dtype=np.uint8).data).cast("B")
    sha256 = hashlib.sha256
    return [sha256(view[i : i + PIXELS]).hexdigest() for i in range(0, len(view), PIXELS)]


def file_name(digest: str, taken: frozenset[str] | set[str] = frozenset()) -> str:
    """The file name for content DIGEST, avoiding names in TAKEN.

    Normally `<first NAME_HEX hex digits>.png`. If that name is already used by a file
    with *different* content (someone edited it), that file is left alone and the next
    free `<hex>-2.png`, `<hex>-3.png`, ... is used instead.
    """
    stem = digest[:NAME_HEX]
    name = f"{stem}.png"
    n = 2
    while name in taken:
        name = f"{stem}-{n}.png"
        n += 1
    return name
