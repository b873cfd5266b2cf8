"""The vectorised chunk parser against the strict per-line parser, and byte-range chunking."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from kubetrain_data.csvformat import (
    N_COLUMNS,
    CsvSource,
    Layout,
    detect_layout,
    iter_ranges,
    parse_chunk,
    parse_line,
    read_range,
)
from kubetrain_data.pngio import PIXELS

# Pixel tokens the fast path must take as they are, and tokens only the strict parser
# accepts (or rejects with a reason).
PLAIN = ["0", "7", "42", "255", "128", "007", "099", "000", "9"]
ODD = [" 7", "7 ", '"12"', "12.0", "0255", "", " ", "256", "999", "-1", "1e2", "x", "1.5", "nan"]
LABELS = ["0", "7", "cat", '"3"', " 4 ", "", "../x", "10"]


def _line(rng: random.Random, label_index: int) -> str:
    kind = rng.random()
    if kind < 0.08:
        return rng.choice(["", "   ", "\r"])  # blank lines
    fields = [rng.choice(PLAIN) for _ in range(PIXELS)]
    if kind < 0.6:  # a handful of odd tokens in otherwise plain rows
        for _ in range(rng.randint(1, 3)):
            fields[rng.randrange(PIXELS)] = rng.choice(ODD)
    fields.insert(label_index, rng.choice(LABELS) if kind < 0.7 else str(rng.randrange(10)))
    if 0.7 <= kind < 0.75:
        fields = fields[:-1] if rng.random() < 0.5 else [*fields, "0"]
    text = ",".join(fields)
    return text + "\r" if rng.random() < 0.2 else text


def _reference(start_row: int, lines: list[str], layout: Layout) -> dict[str, object]:
    rows: list[int] = []
    labels: list[str] = []
    pixels: list[bytes] = []
    bad: list[tuple[int, str]] = []
    blank = 0
    for offset, line in enumerate(lines):
        raw = line.encode()
        if not raw.strip():
            blank += 1
            continue
        parsed = parse_line(raw, layout)
        if isinstance(parsed, str):
            bad.append((start_row + offset, parsed))
        else:
            rows.append(start_row + offset)
            labels.append(parsed[0])
            pixels.append(parsed[1])
    return {"rows": rows, "labels": labels, "pixels": pixels, "bad": bad, "blank": blank}


@pytest.mark.parametrize("label_index", [0, N_COLUMNS - 1, 300])
@pytest.mark.parametrize("seed", range(4))
def test_fast_path_agrees_with_the_strict_parser(label_index: int, seed: int) -> None:
    rng = random.Random(seed * 1000 + label_index)
    layout = Layout(has_header=False, label_index=label_index)
    lines = [_line(rng, label_index) for _ in range(600)]  # more than one internal block
    start_row = rng.randint(1, 10_000)
    data = "\n".join(lines).encode() + (b"\n" if seed % 2 else b"")
    got = parse_chunk(start_row, data, layout)
    want = _reference(start_row, lines, layout)
    assert got.lines == len(lines)
    assert got.blank == want["blank"]
    assert got.bad == want["bad"]
    assert got.rows == want["rows"]
    assert got.labels == want["labels"]
    assert [row.tobytes() for row in got.pixels] == want["pixels"]
    # the generator must really exercise both paths
    assert 0 < len(got.bad) < len(lines) and len(got.rows) > 100


def test_values_and_widths_on_the_fast_path() -> None:
    layout = Layout(has_header=False, label_index=0)
    values = [0, 1, 9, 10, 99, 100, 199, 200, 249, 250, 255]
    tokens = [str(v) for v in values] + ["00", "000", "010", "05"]
    expected = [*values, 0, 0, 10, 5]
    pixels = (tokens * (PIXELS // len(tokens) + 1))[:PIXELS]
    want = (expected * (PIXELS // len(expected) + 1))[:PIXELS]
    got = parse_chunk(1, ("5," + ",".join(pixels) + "\n").encode(), layout)
    assert got.bad == [] and got.labels == ["5"]
    assert got.pixels[0].tolist() == want


def test_value_over_255_is_named_by_the_strict_parser() -> None:
    layout = Layout(has_header=False, label_index=0)
    fields = ["0"] * PIXELS
    fields[10] = "256"
    got = parse_chunk(7, ("1," + ",".join(fields) + "\n").encode(), layout)
    assert got.bad == [(7, "column 12: value 256 is outside 0..255")]
    assert len(got.rows) == 0 and got.pixels.shape == (0, PIXELS)


def _write_csv(path: Path, header: bool, trailing_newline: bool) -> list[bytes]:
    rng = np.random.default_rng(3)
    lines = [b"label," + b",".join(f"p{i}".encode() for i in range(PIXELS))] if header else []
    for i in range(250):
        if i % 37 == 5:
            lines.append(b"")
        # a black corner pixel, as in real digits, tells where a headerless file's label is
        row = [str(i % 10)] + [str(v) for v in rng.integers(0, 256, PIXELS - 1)] + ["0"]
        lines.append(",".join(row).encode())
    data = b"\n".join(lines) + (b"\n" if trailing_newline else b"")
    path.write_bytes(data)
    return lines[1:] if header else lines


@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("trailing_newline", [True, False])
@pytest.mark.parametrize("chunk_rows", [1, 7, 1000])
def test_byte_ranges_tile_the_data_lines(
    tmp_path: Path, header: bool, trailing_newline: bool, chunk_rows: int
) -> None:
    path = tmp_path / "in.csv"
    data_lines = _write_csv(path, header, trailing_newline)
    with CsvSource(str(path)) as source:
        layout, head = detect_layout(source)
        ranges = list(iter_ranges(source, head, chunk_rows))
        chunks = [read_range(source.fileno(), source.path, *r) for r in ranges]
    assert layout.has_header == header
    joined = b"".join(chunks)
    assert joined.split(b"\n")[: len(data_lines)] == data_lines
    assert joined.rstrip(b"\n") == b"\n".join(data_lines)
    assert all(chunk.endswith(b"\n") for chunk in chunks[:-1])
    offsets = [offset for offset, _ in ranges]
    assert offsets == sorted(offsets)
    if chunk_rows == 1000:
        assert len(ranges) == 1
    else:
        assert len(ranges) >= len(data_lines) // (2 * chunk_rows)
    # row numbers continue across ranges, blank lines included
    row = 1
    numbered = []
    for chunk in chunks:
        parsed = parse_chunk(row, chunk, layout)
        numbered += parsed.rows
        row += parsed.lines
    assert numbered == [i + 1 for i, line in enumerate(data_lines) if line]


def test_compressed_files_have_no_byte_ranges(tmp_path: Path) -> None:
    import gzip

    path = tmp_path / "in.csv.gz"
    plain = tmp_path / "plain.csv"
    _write_csv(plain, header=True, trailing_newline=True)
    path.write_bytes(gzip.compress(plain.read_bytes()))
    with CsvSource(str(path)) as source:
        _, head = detect_layout(source)
        with pytest.raises(ValueError, match="uncompressed"):
            list(iter_ranges(source, head, 10))


@pytest.mark.parametrize(
    "line",
    [
        b"7," + b",".join([b"0"] * PIXELS) + b"\n",
        b"\xef\xbb\xbf 7 ," + b",".join([b"0"] * (PIXELS - 1)) + b',"cat"\r\n',
        b'"3",1,2,"x y" \n',
        b"no commas at all",
        b"\xff\xfe,bad utf-8,\xc3\n",
    ],
)
def test_line_ends_matches_a_full_split(line: bytes) -> None:
    from kubetrain_data.csvformat import _line_ends, _split_line

    fields = _split_line(line)
    assert _line_ends(line) == (len(fields), fields[0], fields[-1])
