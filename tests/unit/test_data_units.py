"""Pure parts of the dataset tools: PNG codec, settings, retry policy, image transforms."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
import urllib3
from kubetrain_data import mutate, pngio, s3util
from kubetrain_data.errors import DataError
from kubetrain_data.settings import S3Location, S3Settings
from kubetrain_platform.platform import free_port
from minio.error import S3Error, ServerError
from PIL import Image

from tests.support.data import digits, run


def test_png_is_lossless_deterministic_and_standard() -> None:
    rng = np.random.default_rng(1)
    samples = [
        np.zeros(784, np.uint8),
        np.full(784, 255, np.uint8),
        rng.integers(0, 256, 784, dtype=np.uint8),
    ]
    samples += list(digits(1)[0])
    for pixels in samples:
        data = pngio.encode_png(pixels)
        assert data == pngio.encode_png(pixels.tobytes())
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            assert (img.format, img.mode, img.size) == ("PNG", "L", (28, 28))
            assert img.tobytes() == pixels.tobytes()
        assert pngio.decode_gray28(data) == pixels.tobytes()
    with pytest.raises(ValueError):
        pngio.encode_png(b"\0" * 783)


def test_decode_fast_path_rejects_what_pil_rejects() -> None:
    pixels = digits(1)[0][0]
    data = pngio.encode_png(pixels)
    assert pngio._decode_own(data) == pixels.tobytes()
    # IHDR, IDAT type, IDAT body, IDAT CRC (data intact). (Damage confined to IEND's CRC
    # is tolerated by PIL's verify(); the pixels are intact then.)
    for i in (20, 40, len(data) // 2, len(data) - 14):
        bad = bytearray(data)
        bad[i] ^= 0x01
        assert pngio._decode_own(bytes(bad)) is None
        assert pngio.decode_gray28(bytes(bad)) is None, i
    for cut in (12, 13, 20, 100):  # truncated in IDAT, even where PIL would still load them
        assert pngio.decode_gray28(data[:-cut]) is None, cut
    # PIL's own encoder (adaptive filters) goes through the PIL path, same pixels
    buf = io.BytesIO()
    Image.frombytes("L", (28, 28), pixels.tobytes()).save(buf, format="PNG", optimize=True)
    assert pngio._decode_own(buf.getvalue()) is None
    assert pngio.decode_gray28(buf.getvalue()) == pixels.tobytes()


def test_decode_accepts_only_28x28_gray_png() -> None:
    def png(mode: str, size: tuple[int, int]) -> bytes:
        buf = io.BytesIO()
        Image.new(mode, size).save(buf, format="PNG")
        return buf.getvalue()

    assert pngio.decode_gray28(png("L", (28, 28))) == bytes(784)
    assert pngio.decode_gray28(png("RGB", (28, 28))) is None
    assert pngio.decode_gray28(png("L", (27, 28))) is None
    assert pngio.decode_gray28(b"nope") is None
    assert pngio.to_gray28(png("RGB", (56, 56))) == bytes(784)  # what serving would see


def test_file_names_avoid_taken_names() -> None:
    d = pngio.content_digest(b"\1" * 784)
    assert pngio.file_name(d) == d[:20] + ".png"
    assert pngio.file_name(d, {d[:20] + ".png"}) == d[:20] + "-2.png"
    assert pngio.file_name(d, {d[:20] + ".png", d[:20] + "-2.png"}) == d[:20] + "-3.png"


def test_s3_settings_from_env_and_flags() -> None:
    env = {
        "MINIO_ENDPOINT": "http://127.0.0.1:9000",
        "MINIO_ACCESS_KEY": "ak",
        "MINIO_SECRET_KEY": "sk-very-secret",
    }
    s = S3Settings.load(None, None, None, env)
    assert (s.host, s.secure, s.access_key, s.secret_key) == (
        "127.0.0.1:9000",
        False,
        "ak",
        "sk-very-secret",
    )
    assert "sk-very-secret" not in repr(s) and "ak" not in repr(s).replace("access", "")
    s = S3Settings.load("https://minio.example:443", "k2", None, env)
    assert (s.host, s.secure, s.access_key) == ("minio.example:443", True, "k2")
    with pytest.raises(DataError, match="MINIO_SECRET_KEY"):
        S3Settings.load("http://h:1", "a", None, {})
    with pytest.raises(DataError, match="http://host:port"):
        S3Settings.load("127.0.0.1:9000", "a", "b", {})
    with pytest.raises(DataError) as exc:
        S3Settings.load("http://user:hunter2@h:1", "a", "b", {})
    assert "hunter2" not in str(exc.value)


def test_s3_location() -> None:
    assert S3Location.parse("s3://bucket") == S3Location("bucket", "")
    assert S3Location.parse("s3://bucket/") == S3Location("bucket", "")
    assert S3Location.parse("s3://bucket/a/b/") == S3Location("bucket", "a/b/")
    assert str(S3Location.parse("s3://bucket/data")) == "s3://bucket/data/"
    for bad in ("bucket/x", "s3://B/x", "s3://a/../x", "s3://ab", "s3://bucket/a//b"):
        with pytest.raises(DataError):
            S3Location.parse(bad)


def _s3_error(code: str) -> S3Error:
    return S3Error(None, code, "msg", "/r", "req", "host")  # type: ignore[arg-type]


def test_retry_policy() -> None:
    waits: list[float] = []
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise urllib3.exceptions.ProtocolError("connection reset")
        return "ok"

    assert s3util.with_retries(flaky, retries=4, sleep=waits.append, rng=random.Random(0)) == "ok"
    assert calls["n"] == 3 and len(waits) == 2
    assert 0 <= waits[0] <= s3util.BACKOFF_BASE and 0 <= waits[1] <= 2 * s3util.BACKOFF_BASE

    def always(exc: Exception) -> None:
        calls["n"] += 1
        raise exc

    calls["n"] = 0
    with pytest.raises(S3Error):
        s3util.with_retries(lambda: always(_s3_error("SlowDown")), retries=2, sleep=waits.append)
    assert calls["n"] == 3  # first try + 2 retries
    calls["n"] = 0
    with pytest.raises(S3Error):
        s3util.with_retries(
            lambda: always(_s3_error("AccessDenied")), retries=5, sleep=waits.append
        )
    assert calls["n"] == 1  # not transient: no retry
    assert s3util.is_transient(ServerError("bad gateway", 502))
    assert not s3util.is_transient(ValueError("x"))


def test_unreachable_minio_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "d" / "3").mkdir(parents=True)
    (tmp_path / "d" / "3" / "a.png").write_bytes(pngio.encode_png(bytes(784)))
    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MINIO_ENDPOINT", endpoint)
    monkeypatch.setenv("MINIO_ACCESS_KEY", "some-access")
    monkeypatch.setenv("MINIO_SECRET_KEY", "do-not-print-me")
    for argv in (
        ["upload", str(tmp_path / "d"), "s3://bucket/data", "--retries", "1"],
        ["mutate", "s3://bucket/data", "--label", "3", "--add", "1", "--retries", "1"],
    ):
        code, out, err = run(capsys, *argv)
        assert code == 1
        assert err.strip().splitlines() == [err.strip()]
        assert f"cannot reach MinIO at {endpoint}" in err
        assert "do-not-print-me" not in out + err and "some-access" not in out + err


def test_missing_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MINIO_ENDPOINT", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    code, _, err = run(capsys, "upload", str(tmp_path), "s3://bucket/x")
    assert code == 1 and "MinIO settings missing" in err


def test_mutate_refuses_reserved_and_unsafe_labels(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINIO_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("MINIO_ACCESS_KEY", "a")
    monkeypatch.setenv("MINIO_SECRET_KEY", "b")
    for label in (".kubetrain", "a/b", "", " 3"):
        code, _, err = run(capsys, "mutate", "s3://bucket/p", "--label", label, "--delete", "1")
        assert code == 1 and "--label" in err, err


def test_transforms_stay_digits_and_differ() -> None:
    pixels, _ = digits(2)
    rng = random.Random(3)
    for row in pixels:
        src = row.tobytes()
        small = mutate.small_variation(src, rng)
        assert len(small) == 784 and small != src
        a, b = (
            np.frombuffer(src, np.uint8).astype(float),
            np.frombuffer(small, np.uint8).astype(float),
        )
        assert abs(a.sum() - b.sum()) / a.sum() < 0.35  # about the same amount of ink
        big = mutate.visible_change(src, rng)
        assert mutate.changed_enough(src, big)
    blank = bytes(784)
    assert mutate.visible_change(blank, rng) == bytes([255]) * 784
    # same seed, same result
    assert mutate.small_variation(pixels[0].tobytes(), random.Random(9)) == mutate.small_variation(
        pixels[0].tobytes(), random.Random(9)
    )
