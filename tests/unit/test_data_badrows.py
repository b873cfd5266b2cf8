"""Bad rows: by default the run stops naming the row and nothing is written; --skip-bad skips."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.data import (
    digits,
    expected,
    kaggle_lines,
    read_dataset,
    run,
    run_json,
    write_lines,
)


def _set(column: int, value: str) -> Callable[[list[str]], list[str]]:
    def edit(fields: list[str]) -> list[str]:
        fields[column] = value
        return fields

    return edit


# (case id, edit applied to the fields of one row, words the error must contain)
CASES: list[tuple[str, Callable[[list[str]], list[str]], str]] = [
    ("too-few-columns", lambda f: f[:-1], "has 784 columns, expected 785"),
    ("too-many-columns", lambda f: [*f, "0"], "has 786 columns, expected 785"),
    ("non-numeric", _set(100, "abc"), "column 101 (4x16): 'abc' is not a number"),
    ("empty-value", _set(7, ""), "column 8 (1x7): empty value"),
    ("blank-value", _set(7, " "), "column 8 (1x7): empty value"),
    ("over-255", _set(300, "256"), "column 301 (11x20): value 256 is outside 0..255"),
    ("huge", _set(300, "99999999999999999999999"), "is outside 0..255"),
    ("wraps-32bit-to-5", _set(300, "4294967301"), "value 4294967301 is outside 0..255"),
    ("wraps-8bit-to-100", _set(300, "356"), "value 356 is outside 0..255"),
    ("negative", _set(2, "-1"), "column 3 (1x2): value -1 is outside 0..255"),
    ("fraction", _set(2, "1.5"), "value 1.5 is not a whole number"),
    ("nan", _set(2, "nan"), "'nan' is not a number"),
    ("empty-label", _set(0, ""), "empty label"),
    ("blank-label", _set(0, "  "), "empty label"),
    ("path-label", _set(0, "../etc"), "cannot be used as a directory name"),
]


def _csv_with_bad_row(
    tmp_path: Path, bad_row: int, edit: Callable[[list[str]], list[str]], per_label: int = 5
) -> tuple[Path, int]:
    pixels, labels = digits(per_label)
    lines = kaggle_lines(pixels, labels)
    fields = lines[bad_row].split(",")  # lines[0] is the header, so data row N is lines[N]
    lines[bad_row] = ",".join(edit(fields))
    return write_lines(tmp_path / "in.csv", lines), len(labels)


@pytest.mark.parametrize(("case", "edit", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_row_stops_and_writes_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    edit: Callable[[list[str]], list[str]],
    words: str,
) -> None:
    csv, _ = _csv_with_bad_row(tmp_path, 37, edit)
    out = tmp_path / "out"
    code, stdout, stderr = run(
        capsys,
        "csv-to-images",
        str(csv),
        "--out",
        str(out),
        "--chunk-rows",
        "10",
        "--workers",
        "2",
        "--quiet",
    )
    assert code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "row 37:" in lines[0] and words in lines[0], lines[0]
    assert "Traceback" not in stderr and stdout == ""
    assert list(out.iterdir()) == []  # not one file, not one label dir, no staging left


@pytest.mark.parametrize(("case", "edit", "words"), CASES, ids=[c[0] for c in CASES])
def test_skip_bad_skips_and_reports(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    edit: Callable[[list[str]], list[str]],
    words: str,
) -> None:
    csv, n = _csv_with_bad_row(tmp_path, 37, edit)
    out = tmp_path / "out"
    code, doc, stderr = run_json(
        capsys, "csv-to-images", str(csv), "--out", str(out), "--skip-bad", "--chunk-rows", "10"
    )
    assert code == 0, stderr
    assert doc["badRows"] == 1
    assert doc["badFirst"][0]["row"] == 37 and words in doc["badFirst"][0]["reason"]
    assert doc["totals"]["written"] == n - 1
    pixels, labels = digits(5)
    keep = [i for i in range(n) if i != 36]
    assert read_dataset(out) == expected(pixels[keep], [labels[i] for i in keep])


def test_bad_row_in_the_last_chunk_still_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv, n = _csv_with_bad_row(tmp_path, 100, _set(5, "x"), per_label=10)
    assert n == 100
    out = tmp_path / "out"
    out.mkdir()
    (out / "7").mkdir()  # an existing label dir must not receive files either
    code, _, stderr = run(
        capsys, "csv-to-images", str(csv), "--out", str(out), "--chunk-rows", "9", "--workers", "2"
    )
    assert code == 1 and "row 100:" in stderr and "nothing was written" in stderr
    assert sorted(p.name for p in out.iterdir()) == ["7"] and list((out / "7").iterdir()) == []


def test_first_bad_row_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pixels, labels = digits(5)
    lines = kaggle_lines(pixels, labels)
    for row in (44, 12, 31):
        lines[row] = lines[row].replace(",", ",,", 1)
    csv = write_lines(tmp_path / "in.csv", lines)
    code, _, stderr = run(
        capsys,
        "csv-to-images",
        str(csv),
        "--out",
        str(tmp_path / "o"),
        "--chunk-rows",
        "4",
        "--workers",
        "3",
    )
    assert code == 1 and "row 12:" in stderr


def test_skip_bad_names_first_few_and_counts_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pixels, labels = digits(5)
    lines = kaggle_lines(pixels, labels)
    bad = [3, 9, 10, 20, 21, 22, 40]
    for row in bad:
        lines[row] = lines[row] + ",1"
    csv = write_lines(tmp_path / "in.csv", lines)
    code, stdout, stderr = run(
        capsys, "csv-to-images", str(csv), "--out", str(tmp_path / "o"), "--skip-bad"
    )
    assert code == 0, stderr
    assert "skipped 7 bad row(s): row 3: has 786 columns" in stdout
    assert "row 21:" in stdout and "row 22:" not in stdout and stdout.rstrip().endswith(", ...")
    assert sum(read_dataset(tmp_path / "o").values()) == 50 - len(bad)


def test_blank_lines_are_ignored_but_keep_numbering(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pixels, labels = digits(2)
    lines = kaggle_lines(pixels, labels)
    lines.insert(3, "")  # data row 3 is blank, so the old row 5 is now row 6
    lines[6] = lines[6].replace(",0,", ",-7,", 1)
    csv = write_lines(tmp_path / "in.csv", lines)
    code, _, stderr = run(capsys, "csv-to-images", str(csv), "--out", str(tmp_path / "o"))
    assert code == 1 and "row 6:" in stderr and "-7 is outside" in stderr


def test_all_rows_bad_with_skip_bad_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pixels, labels = digits(1)
    lines = kaggle_lines(pixels, labels)
    lines[1:] = [line + ",9" for line in lines[1:]]
    csv = write_lines(tmp_path / "in.csv", lines)
    out = tmp_path / "o"
    code, _, stderr = run(capsys, "csv-to-images", str(csv), "--out", str(out), "--skip-bad")
    assert code == 1 and "no valid data rows (10 bad rows skipped)" in stderr
    assert list(out.iterdir()) == []
