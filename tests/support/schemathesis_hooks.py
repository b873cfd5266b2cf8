"""schemathesis hooks: what the service's `kubetrain-image` string format means.

The OpenAPI document (serving/kubetrain_serving/openapi.py) declares image strings as
`format: kubetrain-image`, base64 of a PNG or JPEG file. JSON Schema cannot say more, so
without this the fuzzer's "valid" images would be random text. Loaded through
`SCHEMATHESIS_HOOKS=support.schemathesis_hooks` (tests/ on PYTHONPATH).

The images are random in every way the service promises to handle: size, colour mode,
format and pixels; each stays well under the body limit.
"""

from __future__ import annotations

import base64
import io

import schemathesis
from hypothesis import strategies as st
from PIL import Image

BANDS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}


@st.composite
def image_files(draw: st.DrawFn) -> bytes:
    width = draw(st.integers(min_value=1, max_value=64))
    height = draw(st.integers(min_value=1, max_value=64))
    fmt = draw(st.sampled_from(["PNG", "JPEG"]))
    modes = ["L", "RGB"] if fmt == "JPEG" else list(BANDS)
    mode = draw(st.sampled_from(modes))
    size = width * height * BANDS[mode]
    seed = draw(st.binary(min_size=1, max_size=64))
    pixels = (seed * (size // len(seed) + 1))[:size]
    buf = io.BytesIO()
    Image.frombytes(mode, (width, height), pixels).save(buf, format=fmt)
    return buf.getvalue()


schemathesis.openapi.format(
    "kubetrain-image", image_files().map(lambda b: base64.b64encode(b).decode("ascii"))
)
schemathesis.openapi.media_type("image/png", image_files(), aliases=["image/jpeg"])
