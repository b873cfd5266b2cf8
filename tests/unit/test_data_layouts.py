"""csv-to-images reads every supported layout (plain and gzip) pixel-exact."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.data import (
    LAYOUTS,
    digest_name,
    digits,
    expected,
    read_dataset,
    run,
    write_csv,
    write_lines,
)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_round_trips_pixel_exact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], layout: str, gz: bool
) -> None:
    pixels, labels = digits(12)  # 120 real digits, all ten classes
    csv = write_csv(tmp_path / ("in.csv.gz" if gz else "in.csv"), pixels, labels, layout)
    out = tmp_path / "out"
    code, stdout, stderr = run(
        capsys, "csv-to-images", str(csv), "--out", str(out), "--workers", "2", "--chunk-rows", "25"
    )
    assert code == 0, stderr
    assert read_dataset(out) == expected(pixels, labels)
    # names derive from the pixels
    for row, label in zip(pixels, labels, strict=True):
        assert (out / label / digest_name(row)).is_file()
    assert ("label first" if layout != "label-last" else "label last") in stdout
    if layout == "mnist-in-csv":
        assert "MNIST in CSV" in stdout
    if layout == "digit-recognizer":
        assert "Digit Recognizer" in stdout
    assert sorted(p.name for p in out.iterdir()) == [str(d) for d in range(10)]  # no staging left


def test_crlf_and_bom_are_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pixels, labels = digits(3)
    csv = write_csv(tmp_path / "in.csv", pixels, labels, "mnist-in-csv", crlf=True, bom=True)
    code, _, stderr = run(
        capsys, "csv-to-images", str(csv), "--out", str(tmp_path / "o"), "--workers", "1"
    )
    assert code == 0, stderr
    assert read_dataset(tmp_path / "o") == expected(pixels, labels)


def test_label_column_by_name_anywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pixels, labels = digits(3)
    names = [f"p{i}" for i in range(784)]
    names.insert(5, "kind")
    lines = [",".join(names)]
    for row, label in zip(pixels, labels, strict=True):
        values = [str(int(v)) for v in row]
        values.insert(5, label)
        lines.append(",".join(values))
    csv = write_lines(tmp_path / "in.csv", lines)
    out = tmp_path / "o"
    code, _, stderr = run(capsys, "csv-to-images", str(csv), "--out", str(out))
    assert code == 1
    assert "--label-column" in stderr and len(stderr.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())
    code, _, stderr = run(
        capsys, "csv-to-images", str(csv), "--out", str(out), "--label-column", "kind"
    )
    assert code == 0, stderr
    assert read_dataset(out) == expected(pixels, labels)
    code, _, stderr = run(
        capsys, "csv-to-images", str(csv), "--out", str(out), "--label-column", "nope"
    )
    assert code == 1 and "no such column" in stderr


def test_ambiguous_headerless_needs_label_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Only zeros: label 0 at one end and a black corner pixel at the other look the same.
    pixels, labels = digits(10)
    zeros = [i for i, lab in enumerate(labels) if lab == "0"]
    csv = write_csv(tmp_path / "in.csv", pixels[zeros], [labels[i] for i in zeros], "label-last")
    out = tmp_path / "o"
    code, _, stderr = run(capsys, "csv-to-images", str(csv), "--out", str(out))
    assert code == 1 and "--label-column first|last" in stderr
    code, _, stderr = run(
        capsys, "csv-to-images", str(csv), "--out", str(out), "--label-column", "last"
    )
    assert code == 0, stderr
    assert read_dataset(out) == expected(pixels[zeros], [labels[i] for i in zeros])


def test_label_column_override_beats_detection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Forcing the wrong end makes the real label a pixel and the corner pixel (0) the label.
    pixels, labels = digits(2)
    csv = write_csv(tmp_path / "in.csv", pixels, labels, "label-first")
    out = tmp_path / "o"
    code, _, stderr = run(
        capsys, "csv-to-images", str(csv), "--out", str(out), "--label-column", "last"
    )
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == [str(int(pixels[0][-1]))]


def test_text_labels_headerless(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pixels, labels = digits(2)
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    words = [names[int(lab)] for lab in labels]
    csv = write_csv(tmp_path / "in.csv", pixels, words, "label-last")
    code, _, stderr = run(capsys, "csv-to-images", str(csv), "--out", str(tmp_path / "o"))
    assert code == 0, stderr
    assert read_dataset(tmp_path / "o") == expected(pixels, words)


def test_no_header_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pixels, labels = digits(2)
    headerless = write_csv(tmp_path / "a.csv", pixels, labels, "label-first")
    code, _, stderr = run(
        capsys, "csv-to-images", str(headerless), "--out", str(tmp_path / "a"), "--no-header"
    )
    assert code == 0, stderr
    assert read_dataset(tmp_path / "a") == expected(pixels, labels)
    # --no-header on a file that has one: its header is data row 1, which is not numeric.
    with_header = write_csv(tmp_path / "b.csv", pixels, labels, "mnist-in-csv")
    code, _, stderr = run(
        capsys,
        "csv-to-images",
        str(with_header),
        "--out",
        str(tmp_path / "b"),
        "--no-header",
        "--label-column",
        "first",
    )
    assert code == 1
    assert "row 1:" in stderr and "not a number" in stderr


def test_leading_zeros_on_the_fast_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pixels, labels = digits(2)
    lines = [
        ",".join([lab] + [f"{int(v):03d}" for v in row])
        for row, lab in zip(pixels, labels, strict=True)
    ]
    csv = write_lines(tmp_path / "in.csv", lines)
    code, _, stderr = run(
        capsys, "csv-to-images", str(csv), "--out", str(tmp_path / "o"), "--label-column", "first"
    )
    assert code == 0, stderr
    assert read_dataset(tmp_path / "o") == expected(pixels, labels)


def test_whole_number_floats_and_spaces_take_the_strict_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pixels, labels = digits(1)
    rows = []
    for row, label in zip(pixels, labels, strict=True):
        values = [
            f"{int(v)}.0" if i % 3 == 0 else f" {int(v)}" if i % 3 == 1 else f'"{int(v)}"'
            for i, v in enumerate(row)
        ]
        values[-1] = f"00{int(row[-1])}"  # leading zeros
        rows.append(",".join([label, *values]))
    csv = write_lines(tmp_path / "in.csv", rows)
    code, _, stderr = run(
        capsys, "csv-to-images", str(csv), "--out", str(tmp_path / "o"), "--label-column", "first"
    )
    assert code == 0, stderr
    assert read_dataset(tmp_path / "o") == expected(pixels, labels)
