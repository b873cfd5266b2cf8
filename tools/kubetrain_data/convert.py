"""`csv-to-images`: stream an MNIST-style CSV into OUT/<label>/<content-hash>.png.

Pipeline. The main process cuts the CSV into chunks of about `chunk_rows` whole lines and
hands them to a process pool; at most 2 x workers chunks are in flight, so memory stays
flat however long the file is. For a plain file a chunk is only a byte range (the main
process finds the newline that ends it): the worker reads it with pread, so the 110 MB of
a big CSV never pass through the main process and a pipe. A gzip file can only be read
from the start, so there the main process decompresses and sends the lines. Each worker
parses and validates its chunk (csvformat.parse_chunk), hashes every valid row's pixels,
PNG-encodes the new ones and writes them. Results come back in file order; a worker
numbers rows from its chunk's first line and the main process adds the rows before it,
so the first bad row reported is the first bad row of the file, with its true number.

Idempotence. A file's name is the SHA-256 of its pixels (pngio.file_name), so the same
row always maps to the same file and identical rows collapse into one. Before converting,
every existing PNG under OUT/<label>/ is decoded and its pixels hashed (in the pool): a
row whose content is already there -- under any name -- is not written, and no existing
file is ever opened for writing. Decoding (not trusting names, not hashing file bytes) is
what makes "a differently named file with the same content is left alone" hold for files
written by other tools, and catches a file whose content no longer matches its name (it
is left alone too; the row then gets `<hash>-2.png`). A re-run therefore writes nothing.

All or nothing. Workers write into a private staging directory inside OUT
(`.kubetrain-staging-<pid>-*`, same filesystem) with O_EXCL. Only when the whole CSV has
been read and validated are the files moved into place: a label directory that does not
exist yet is renamed in one step, otherwise files are renamed one by one. So by default a
bad row anywhere -- even in the last chunk -- stops the run with an error naming its row
number and reason, the staging directory is deleted, and OUT is exactly as before: no
partial file and no partial dataset. The same holds for Ctrl-C and write errors. A
staging directory left by a killed run (dead pid) is removed by the next run. Hidden
entries of OUT are never labels, and `upload` skips them.

--per-label N. Distinct rows of each label go through a seeded reservoir sample (Algorithm
R, `random.Random(seed)`), which needs only the N kept rows per label in memory (plus the
digests of rows seen, to ignore duplicates); the kept rows are written at the end. The
sample depends only on the CSV and the seed, so re-runs stay idempotent.

Why one module of this length: the main-process pipeline, the worker side and the output's
staging, commit and resume share the chunk protocol and the output layout defined here.
Parsing and PNG encoding already live in csvformat.py and pngio.py.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from kubetrain_data import report
from kubetrain_data.csvformat import (
    CsvSource,
    Layout,
    detect_layout,
    iter_chunks,
    iter_ranges,
    parse_chunk,
    read_range,
)
from kubetrain_data.errors import DataError
from kubetrain_data.pngio import (
    NAME_HEX,
    PIXELS,
    content_digest,
    content_digests,
    decode_gray28,
    encode_pngs,
    file_name,
)
from kubetrain_data.settings import ConvertOptions

STAGING_PREFIX = ".kubetrain-staging-"
"""Name prefix of the private staging directory inside OUT."""
SHOW_BAD = 5
"""How many bad rows --skip-bad names."""
_INDEX_BATCH = 256
_WRITE_BATCH = 500

T = TypeVar("T")


@dataclass
class LabelIndex:
    """What an existing OUT/<label>/ holds."""

    digests: set[str] = field(default_factory=set)
    """Pixel digests of its 28x28 grayscale PNGs."""
    names: set[str] = field(default_factory=set)
    """Every entry name in it (never overwritten, never reused for other content)."""


@dataclass
class LabelStats:
    """Per-label counters for the summary table."""

    rows: int = 0
    """Valid CSV rows with this label."""
    duplicate: int = 0
    """Rows identical to an earlier row of the same label."""
    unsampled: int = 0
    """Distinct rows left out by --per-label."""
    present: int = 0
    """Rows whose content was already in OUT/<label>/ (nothing written)."""
    written: int = 0
    """New files."""
    files: int = 0
    """PNG files in OUT/<label>/ after the run."""

    def merge(self, counts: dict[str, int]) -> None:
        for key, value in counts.items():
            setattr(self, key, getattr(self, key) + value)


@dataclass
class ConvertResult:
    """What a conversion did."""

    layout: Layout
    """The layout used."""
    labels: dict[str, LabelStats]
    """Per-label counters."""
    bad_count: int
    """Bad rows skipped (only with --skip-bad)."""
    bad_first: list[tuple[int, str]]
    """The first few skipped rows and why."""
    blank: int
    """Blank lines ignored."""
    seconds: float
    """Wall time."""

    @property
    def written(self) -> int:
        return sum(s.written for s in self.labels.values())


Chunk = bytes | tuple[int, int]
"""A chunk of whole CSV lines: the bytes themselves, or an (offset, length) range of the file."""


@dataclass(frozen=True)
class _WorkerConfig:
    layout: Layout
    csv_path: str
    csv_fd: int  # inherited through fork; pread does not move a shared file offset
    staging: str
    existing: dict[str, LabelIndex]
    sampling: bool
    stop_on_bad: bool


_cfg: _WorkerConfig | None = None
_made_dirs: set[str] = set()


def _init_worker(cfg: _WorkerConfig | None) -> None:
    global _cfg
    _cfg = cfg
    _made_dirs.clear()
    # Ctrl-C is handled by the main process, which cancels the pool and cleans up.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass
class _ChunkResult:
    # Row numbers count from 1 at the chunk's first line; the main process, which sees
    # the chunks in file order, adds the rows before it.
    counts: dict[str, dict[str, int]]
    bad: list[tuple[int, str]]
    blank: int
    lines: int
    # Only when sampling: the valid rows, for the reservoir in the main process.
    rows: list[int] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    pixels: npt.NDArray[np.uint8] | None = None


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL


def _write_file(path: str, data: bytes) -> bool:
    """Create PATH with DATA; False if it exists already (identical content by name)."""
    try:
        fd = os.open(path, _CREATE, 0o644)
    except FileExistsError:
        return False
    try:
        done = os.write(fd, data)
        if done < len(data):  # a short write (nearly full disk): finish it, or raise ENOSPC
            view = memoryview(data)[done:]
            while view:
                view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    return True


def _target(label: str) -> tuple[str, set[str]]:
    """("staging/label/", names to avoid in OUT/label/) for LABEL's new files."""
    assert _cfg is not None
    directory = f"{_cfg.staging}/{label}/"
    if directory not in _made_dirs:
        os.makedirs(directory, exist_ok=True)
        _made_dirs.add(directory)
    index = _cfg.existing.get(label)
    return directory, index.names if index is not None else set()


def _write_rows(
    labels: list[str], digests: list[str], pixels: npt.NDArray[np.uint8]
) -> dict[str, dict[str, int]]:
    """Write rows whose content is not in OUT yet into the staging directory."""
    assert _cfg is not None
    existing = _cfg.existing
    present: dict[str, int] = {}
    todo: list[int] = []
    for i, (label, digest) in enumerate(zip(labels, digests, strict=True)):
        index = existing.get(label)
        if index is not None and digest in index.digests:
            present[label] = present.get(label, 0) + 1
        else:
            todo.append(i)
    pngs = encode_pngs(pixels[todo] if len(todo) < len(labels) else pixels) if todo else []
    # This loop runs once per new file: plain strings and local lookups only.
    targets: dict[str, tuple[str, set[str]]] = {}
    written: dict[str, int] = {}
    duplicate: dict[str, int] = {}
    for i, png in zip(todo, pngs, strict=True):
        label = labels[i]
        target = targets.get(label)
        if target is None:
            target = targets[label] = _target(label)
        directory, taken = target
        digest = digests[i]
        name = file_name(digest, taken) if taken else digest[:NAME_HEX] + ".png"
        if _write_file(directory + name, png):
            written[label] = written.get(label, 0) + 1
        else:
            duplicate[label] = duplicate.get(label, 0) + 1
    return {
        label: {
            "present": present.get(label, 0),
            "written": written.get(label, 0),
            "duplicate": duplicate.get(label, 0),
        }
        for label in dict.fromkeys(labels)
    }


def _convert_chunk(chunk: Chunk) -> _ChunkResult:
    assert _cfg is not None
    data = chunk if isinstance(chunk, bytes) else read_range(_cfg.csv_fd, _cfg.csv_path, *chunk)
    parsed = parse_chunk(1, data, _cfg.layout)
    result = _ChunkResult(counts={}, bad=parsed.bad, blank=parsed.blank, lines=parsed.lines)
    for label in parsed.labels:
        result.counts.setdefault(label, {"rows": 0})
        result.counts[label]["rows"] += 1
    if parsed.bad and _cfg.stop_on_bad:
        return result  # the run stops; writing would be wasted
    digests = content_digests(parsed.pixels)
    if _cfg.sampling:
        result.rows, result.labels, result.digests = parsed.rows, parsed.labels, digests
        result.pixels = parsed.pixels
        return result
    for label, counts in _write_rows(parsed.labels, digests, parsed.pixels).items():
        result.counts.setdefault(label, {}).update(counts)
    return result


def _write_batch(items: list[tuple[str, str, bytes]]) -> dict[str, dict[str, int]]:
    pixels = np.frombuffer(b"".join(i[2] for i in items), dtype=np.uint8).reshape(-1, PIXELS)
    return _write_rows([i[0] for i in items], [i[1] for i in items], pixels)


def _digest_files(directory: str, names: list[str]) -> list[str | None]:
    """Pixel digests of existing files (None: not a 28x28 grayscale PNG, or unreadable)."""
    out: list[str | None] = []
    for name in names:
        try:
            with open(os.path.join(directory, name), "rb") as fh:
                pixels = decode_gray28(fh.read())
        except OSError:
            pixels = None
        out.append(content_digest(pixels) if pixels is not None else None)
    return out


class _InlineExecutor(Executor):
    """`--workers 1`: run tasks in this process, keeping the pool's interface."""

    def __init__(self, cfg: _WorkerConfig | None) -> None:
        self._cfg = cfg
        _made_dirs.clear()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        global _cfg
        future: Future[T] = Future()
        saved, _cfg = _cfg, self._cfg
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        finally:
            _cfg = saved
        return future


def _executor(workers: int, cfg: _WorkerConfig | None) -> Executor:
    if workers <= 1:
        return _InlineExecutor(cfg)
    # fork: workers inherit the (possibly large) index of existing files without pickling.
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("fork"),
        initializer=_init_worker,
        initargs=(cfg,),
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_output(out: Path) -> Path:
    """Create OUT, drop staging directories of dead runs, and make our staging directory."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DataError(f"output directory {out}: exists and is not a directory") from None
    except OSError as exc:
        raise DataError(f"cannot create output directory {out}: {exc.strerror or exc}") from None
    if not out.is_dir():
        raise DataError(f"output directory {out}: exists and is not a directory")
    for entry in os.scandir(out):
        if entry.name.startswith(STAGING_PREFIX) and entry.is_dir(follow_symlinks=False):
            pid_text = entry.name[len(STAGING_PREFIX) :].split("-", 1)[0]
            if pid_text.isdigit() and not _pid_alive(int(pid_text)):
                shutil.rmtree(entry.path, ignore_errors=True)
    try:
        return Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=out))
    except OSError as exc:
        raise DataError(f"output directory {out} is not writable: {exc.strerror or exc}") from None


def index_existing(out: Path, workers: int, quiet: bool) -> dict[str, LabelIndex]:
    """Decode every PNG under OUT/<label>/ and record its pixel digest (see module doc)."""
    index: dict[str, LabelIndex] = {}
    batches: list[tuple[str, str, list[str]]] = []
    for entry in sorted(os.scandir(out), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            names = os.listdir(entry.path)
        except OSError as exc:
            raise DataError(f"cannot list {entry.path}: {exc.strerror or exc}") from None
        index[entry.name] = LabelIndex(names=set(names))
        pngs = sorted(n for n in names if n.lower().endswith(".png"))
        for i in range(0, len(pngs), _INDEX_BATCH):
            batches.append((entry.name, entry.path, pngs[i : i + _INDEX_BATCH]))
    total = sum(len(b[2]) for b in batches)
    if not total:
        return index
    # The pool is entered first so it forks before rich's refresh thread starts.
    with (
        _executor(workers if total > 2 * _INDEX_BATCH else 1, None) as pool,
        report.progress(quiet) as bar,
    ):
        if isinstance(pool, ProcessPoolExecutor):
            pool.submit(int).result()  # with fork, all workers start on the first submit
        task = bar.add_task("indexing existing images", total=total)
        futures = [
            (label, names, pool.submit(_digest_files, path, names))
            for label, path, names in batches
        ]
        for label, names, future in futures:
            index[label].digests.update(d for d in future.result() if d is not None)
            bar.advance(task, len(names))
    return index


class _Reservoir:
    """Seeded per-label reservoir sample of distinct rows (Algorithm R)."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.rng = random.Random(seed)
        self.seen: dict[str, set[str]] = {}
        self.kept: dict[str, list[tuple[int, str, bytes]]] = {}
        self.distinct: dict[str, int] = {}

    def offer(self, label: str, row: int, digest: str, pixels: bytes) -> bool:
        """False when the row duplicates an earlier one of the same label."""
        seen = self.seen.setdefault(label, set())
        if digest in seen:
            return False
        seen.add(digest)
        i = self.distinct.get(label, 0)
        self.distinct[label] = i + 1
        kept = self.kept.setdefault(label, [])
        if i < self.size:
            kept.append((row, digest, pixels))
        else:
            j = int(self.rng.random() * (i + 1))
            if j < self.size:
                kept[j] = (row, digest, pixels)
        return True


def _commit(staging: Path, out: Path) -> None:
    """Move staged files into OUT (see module doc); checks every target first."""
    entries = sorted(os.scandir(staging), key=lambda e: e.name)
    for entry in entries:
        target = out / entry.name
        if target.exists() and not target.is_dir():
            raise DataError(f"{target} exists and is not a directory; nothing was written")
    for entry in entries:
        target = out / entry.name
        if not target.exists():
            os.rename(entry.path, target)
            continue
        for item in os.scandir(entry.path):
            try:
                os.rename(item.path, target / item.name)
            except OSError as exc:
                if exc.errno != errno.EXDEV:  # OUT/<label> may be a symlink to another disk
                    raise
                shutil.move(item.path, target / item.name)


def convert(opts: ConvertOptions) -> ConvertResult:
    """Run csv-to-images; raises DataError for anything the user must fix."""
    started = time.monotonic()
    with CsvSource(opts.csv) as source:
        layout, head = detect_layout(source, opts.label_column, opts.no_header)
        out = Path(opts.out)
        staging = prepare_output(out)
        try:
            return _convert(opts, source, layout, head, out, staging, started)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _convert(
    opts: ConvertOptions,
    source: CsvSource,
    layout: Layout,
    head: list[bytes],
    out: Path,
    staging: Path,
    started: float,
) -> ConvertResult:
    existing = index_existing(out, opts.workers, opts.quiet)
    cfg = _WorkerConfig(
        layout=layout,
        csv_path=source.path,
        csv_fd=source.fileno(),
        staging=str(staging),
        existing=existing,
        sampling=opts.per_label is not None,
        stop_on_bad=not opts.skip_bad,
    )
    stats: dict[str, LabelStats] = {}
    bad_first: list[tuple[int, str]] = []
    bad_count = 0
    blank = 0
    rows_done = 0
    rows_before = 0  # data rows (lines) before the chunk being handled
    reservoir = _Reservoir(opts.per_label, opts.seed) if opts.per_label is not None else None
    window = max(2, 2 * opts.workers)
    pool = _executor(opts.workers, cfg)
    try:
        if isinstance(pool, ProcessPoolExecutor):
            # Start the workers before rich's refresh thread exists (fork + threads);
            # with fork, all workers start on the first submit.
            pool.submit(int).result()
        with report.progress(opts.quiet, in_bytes=True) as bar:
            task = bar.add_task(f"reading {source.path}", total=source.size or None)

            def handle(result: _ChunkResult, end: int) -> None:
                nonlocal bad_count, blank, rows_done, rows_before
                base = rows_before
                rows_before += result.lines
                blank += result.blank
                if result.bad:
                    if cfg.stop_on_bad:
                        row, reason = result.bad[0]
                        raise DataError(
                            f"{source.path}: row {base + row}: {reason}; nothing was written "
                            "(fix the row, or pass --skip-bad to skip bad rows)"
                        )
                    bad_count += len(result.bad)
                    bad_first.extend(
                        (base + row, reason)
                        for row, reason in result.bad[: SHOW_BAD - len(bad_first)]
                    )
                for label, counts in result.counts.items():
                    stats.setdefault(label, LabelStats()).merge(counts)
                    rows_done += counts.get("rows", 0)
                if reservoir is not None and result.pixels is not None:
                    for row, label, digest, px in zip(
                        result.rows, result.labels, result.digests, result.pixels, strict=True
                    ):
                        if not reservoir.offer(label, base + row, digest, px.tobytes()):
                            stats[label].duplicate += 1
                bar.update(
                    task,
                    completed=end if end >= 0 else source.position(),
                    description=f"reading {source.path}: {rows_done:,} rows",
                )

            pending: deque[tuple[Future[_ChunkResult], int]] = deque()
            chunks: Iterator[tuple[Chunk, int]]
            if source.compressed:
                chunks = ((data, -1) for data in iter_chunks(source, head, opts.chunk_rows))
            else:
                chunks = (((o, n), o + n) for o, n in iter_ranges(source, head, opts.chunk_rows))
            for chunk, end in chunks:
                pending.append((pool.submit(_convert_chunk, chunk), end))
                if len(pending) >= window:
                    future, done_at = pending.popleft()
                    handle(future.result(), done_at)
            while pending:
                future, done_at = pending.popleft()
                handle(future.result(), done_at)
            bar.update(task, completed=source.size)

            if reservoir is not None:
                items = [
                    (label, digest, px)
                    for label, kept in reservoir.kept.items()
                    for _row, digest, px in sorted(kept)
                ]
                for label, count in reservoir.distinct.items():
                    stats[label].unsampled += count - len(reservoir.kept.get(label, []))
                wtask = bar.add_task("writing sample", total=len(items))
                futures = [
                    pool.submit(_write_batch, items[i : i + _WRITE_BATCH])
                    for i in range(0, len(items), _WRITE_BATCH)
                ]
                for batch in futures:
                    for label, counts in batch.result().items():
                        stats[label].merge(counts)
                        bar.advance(wtask, sum(counts.values()))
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        raise DataError(
            f"cannot write images{where}: {exc.strerror or exc}; nothing was written"
        ) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

    if not stats:
        detail = f" ({bad_count} bad rows skipped)" if bad_count else ""
        raise DataError(f"{source.path}: no valid data rows{detail}")
    try:
        _commit(staging, out)
    except OSError as exc:
        raise DataError(f"cannot move images into {out}: {exc.strerror or exc}") from None
    for label, label_stats in stats.items():
        directory = out / label
        if directory.is_dir():
            label_stats.files = sum(1 for n in os.listdir(directory) if n.lower().endswith(".png"))
    return ConvertResult(
        layout=layout,
        labels=stats,
        bad_count=bad_count,
        bad_first=bad_first,
        blank=blank,
        seconds=time.monotonic() - started,
    )


_COUNTERS = ("rows", "duplicate", "unsampled", "present", "written", "files")


def result_json(opts: ConvertOptions, result: ConvertResult) -> dict[str, Any]:
    """The summary as JSON-ready data (`--json`)."""
    labels = {
        label: {k: getattr(result.labels[label], k) for k in _COUNTERS}
        for label in sorted(result.labels, key=report.label_sort_key)
    }
    return {
        "csv": opts.csv,
        "out": opts.out,
        "layout": result.layout.description,
        "seconds": round(result.seconds, 3),
        "labels": labels,
        "totals": {k: sum(v[k] for v in labels.values()) for k in _COUNTERS},
        "badRows": result.bad_count,
        "badFirst": [{"row": row, "reason": reason} for row, reason in result.bad_first],
        "blankLines": result.blank,
    }


def print_result(opts: ConvertOptions, result: ConvertResult) -> None:
    """The per-label summary table and the bad-row report."""
    sampling = opts.per_label is not None
    headers = ["label", "rows", "duplicates"]
    headers += ["not sampled"] if sampling else []
    headers += ["already present", "written", "files now"]
    rows = []
    totals = LabelStats()
    for label in sorted(result.labels, key=report.label_sort_key):
        s = result.labels[label]
        totals.merge(
            {
                k: getattr(s, k)
                for k in ("rows", "duplicate", "unsampled", "present", "written", "files")
            }
        )
        rows.append(
            [
                label,
                s.rows,
                s.duplicate,
                *([s.unsampled] if sampling else []),
                s.present,
                s.written,
                s.files,
            ]
        )
    total_row = ["total", totals.rows, totals.duplicate, *([totals.unsampled] if sampling else [])]
    total_row += [totals.present, totals.written, totals.files]
    title = f"{opts.csv} -> {opts.out}/ ({result.layout.description}; {result.seconds:.1f} s)"
    report.stdout.print(report.table(title, headers, rows, total_row))
    if result.bad_count:
        shown = "; ".join(f"row {row}: {reason}" for row, reason in result.bad_first)
        more = ", ..." if result.bad_count > len(result.bad_first) else ""
        report.stdout.print(f"skipped {result.bad_count} bad row(s): {shown}{more}")
    if result.blank:
        report.stdout.print(f"ignored {result.blank} blank line(s)")
