"""`upload`: copy DIR/<label>/<file> to s3://BUCKET/PREFIX<label>/<file>, skipping unchanged.

One listing of the prefix gives every existing object's ETag. For a single-part PUT the
ETag is the MD5 of the content, so a local file whose MD5 equals the remote ETag is
already there and is skipped -- a re-upload of an unchanged dataset sends nothing.
(Multipart ETags contain a "-" and never match; such objects are simply re-sent.)

Files are read into memory (dataset images are a few hundred bytes), hashed and PUT from
the same bytes, in a thread pool (`--workers`; the work is network-bound). The ETag
MinIO returns is checked against the local MD5. Each file is one independent job: a
failure (unreadable file, non-transient S3 error, or a transient one that outlives its
retries) is recorded and the other files go on; the command then exits non-zero and
names the failures. Hidden files and directories (such as csv-to-images' staging
directory) and files directly in DIR (not in a label directory) are not uploaded.
Upload never deletes remote objects.
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
import os
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetrain_contract import normalize_etag
from minio import Minio

from kubetrain_data import report, s3util
from kubetrain_data.errors import DataError
from kubetrain_data.settings import UploadOptions

MAX_IN_MEMORY = 64 << 20
"""Files up to this size are read into memory and sent with one PUT."""
SHOW_FAILURES = 10
"""How many failures are named individually."""


@dataclass(frozen=True)
class LocalFile:
    """One file to upload."""

    path: str
    """Where it is on disk."""
    rel: str
    """`<label>/<name>` (with "/" separators): the key below the prefix."""

    @property
    def label(self) -> str:
        return self.rel.split("/", 1)[0]


@dataclass
class LabelCounts:
    """Per-label counters for the summary table."""

    files: int = 0
    unchanged: int = 0
    uploaded: int = 0
    failed: int = 0


@dataclass
class UploadResult:
    """What an upload did (or, with --dry-run, would do)."""

    labels: dict[str, LabelCounts] = field(default_factory=dict)
    """Per-label counters."""
    failures: list[tuple[str, str]] = field(default_factory=list)
    """(relative path, reason) of every failed file."""
    planned: list[tuple[str, str]] = field(default_factory=list)
    """--dry-run: (key, "new" | "changed") that would be uploaded."""
    ignored_top_level: int = 0
    """Files directly in DIR, not in a label directory."""


def scan(directory: str) -> tuple[list[LocalFile], int]:
    """Files of DIR/<label>/... (hidden entries skipped) and the count of top-level files."""
    root = Path(directory)
    if not root.exists():
        raise DataError(f"{directory}: no such directory")
    if not root.is_dir():
        raise DataError(f"{directory}: not a directory")
    files: list[LocalFile] = []
    top_level = 0
    for current, dirs, names in os.walk(root, onerror=None):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel_dir = Path(current).relative_to(root)
        for name in sorted(names):
            if name.startswith("."):
                continue
            if rel_dir == Path("."):
                top_level += 1
                continue
            files.append(
                LocalFile(path=os.path.join(current, name), rel=(rel_dir / name).as_posix())
            )
    return files, top_level


def remote_etags(mc: Minio, bucket: str, prefix: str, retries: int) -> dict[str, str]:
    """key -> bare ETag of every object under PREFIX."""

    def listing() -> dict[str, str]:
        return {
            str(obj.object_name): normalize_etag(obj.etag or "")
            for obj in mc.list_objects(bucket, prefix=prefix or None, recursive=True)
        }

    try:
        return s3util.with_retries(listing, retries)
    except Exception as exc:
        raise DataError(f"cannot list s3://{bucket}/{prefix}: {s3util.describe(exc)}") from None


def _upload_one(
    mc: Minio, opts: UploadOptions, remote: dict[str, str], item: LocalFile
) -> tuple[str, str]:
    """("unchanged" | "new" | "changed" | "uploaded", "") or ("failed", reason)."""
    key = opts.target.prefix + item.rel
    try:
        size = os.path.getsize(item.path)
        if size > MAX_IN_MEMORY:
            return _upload_large(mc, opts, remote, item, key)
        with open(item.path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return "failed", f"cannot read: {exc.strerror or exc}"
    md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if remote.get(key) == md5:
        return "unchanged", ""
    if opts.dry_run:
        return ("changed" if key in remote else "new"), ""
    content_type = mimetypes.guess_type(item.rel)[0] or "application/octet-stream"
    try:
        result = s3util.with_retries(
            lambda: mc.put_object(
                opts.target.bucket, key, io.BytesIO(data), len(data), content_type=content_type
            ),
            opts.retries,
        )
    except Exception as exc:
        return "failed", s3util.describe(exc)
    if normalize_etag(result.etag or "") != md5:
        return "failed", f"MinIO stored ETag {result.etag}, local MD5 is {md5}"
    return "uploaded", ""


def _upload_large(
    mc: Minio, opts: UploadOptions, remote: dict[str, str], item: LocalFile, key: str
) -> tuple[str, str]:
    md5 = hashlib.md5(usedforsecurity=False)
    with open(item.path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            md5.update(block)
    if remote.get(key) == md5.hexdigest():
        return "unchanged", ""
    if opts.dry_run:
        return ("changed" if key in remote else "new"), ""
    try:
        s3util.with_retries(
            lambda: mc.fput_object(opts.target.bucket, key, item.path), opts.retries
        )
    except Exception as exc:
        return "failed", s3util.describe(exc)
    return "uploaded", ""


def upload(opts: UploadOptions) -> UploadResult:
    """Run the upload; raises DataError only for whole-run problems (no server, no bucket)."""
    files, top_level = scan(opts.directory)
    mc = s3util.client(opts.s3, opts.workers)
    exists = s3util.ensure_bucket(
        mc, opts.s3, opts.target.bucket, opts.create_bucket, opts.retries, dry_run=opts.dry_run
    )
    remote = (
        remote_etags(mc, opts.target.bucket, opts.target.prefix, opts.retries) if exists else {}
    )
    result = UploadResult(ignored_top_level=top_level)
    for item in files:
        result.labels.setdefault(item.label, LabelCounts()).files += 1
    verb = "checking" if opts.dry_run else "uploading"
    with (
        report.progress(opts.quiet) as bar,
        ThreadPoolExecutor(max_workers=max(1, opts.workers)) as pool,
    ):
        task = bar.add_task(f"{verb} to {opts.target}", total=len(files))
        futures: dict[Future[tuple[str, str]], LocalFile] = {
            pool.submit(_upload_one, mc, opts, remote, item): item for item in files
        }
        try:
            for future in as_completed(futures):
                item = futures[future]
                outcome, reason = future.result()
                counts = result.labels[item.label]
                if outcome == "unchanged":
                    counts.unchanged += 1
                elif outcome == "failed":
                    counts.failed += 1
                    result.failures.append((item.rel, reason))
                else:
                    counts.uploaded += 1
                    if opts.dry_run:
                        result.planned.append((opts.target.prefix + item.rel, outcome))
                bar.advance(task)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    result.failures.sort()
    result.planned.sort()
    return result


def result_json(opts: UploadOptions, result: UploadResult) -> dict[str, Any]:
    """The summary as JSON-ready data (`--json`)."""
    keys = ("files", "unchanged", "uploaded", "failed")
    labels = {
        label: {k: getattr(result.labels[label], k) for k in keys}
        for label in sorted(result.labels, key=report.label_sort_key)
    }
    return {
        "directory": opts.directory,
        "target": str(opts.target),
        "dryRun": opts.dry_run,
        "labels": labels,
        "totals": {k: sum(v[k] for v in labels.values()) for k in keys},
        "planned": [{"key": key, "why": why} for key, why in result.planned],
        "failed": [{"path": rel, "error": reason} for rel, reason in result.failures],
        "ignoredTopLevel": result.ignored_top_level,
    }


def print_result(opts: UploadOptions, result: UploadResult) -> None:
    if opts.dry_run:
        for key, why in result.planned:
            report.stdout.print(f"would upload ({why}): s3://{opts.target.bucket}/{key}")
    if not opts.quiet:
        rows = []
        total = LabelCounts()
        for label in sorted(result.labels, key=report.label_sort_key):
            c = result.labels[label]
            rows.append([label, c.files, c.unchanged, c.uploaded, c.failed])
            total.files += c.files
            total.unchanged += c.unchanged
            total.uploaded += c.uploaded
            total.failed += c.failed
        verb = "would upload" if opts.dry_run else "uploaded"
        report.stdout.print(
            report.table(
                f"{opts.directory} -> {opts.target}"
                + (" (dry run: nothing sent)" if opts.dry_run else ""),
                ["label", "files", "unchanged", verb, "failed"],
                rows,
                ["total", total.files, total.unchanged, total.uploaded, total.failed],
            )
        )
    if result.ignored_top_level:
        report.stderr.print(
            f"warning: {result.ignored_top_level} file(s) directly in {opts.directory} were not "
            "uploaded (only <label>/<file> is a dataset image)"
        )
    for rel, reason in result.failures[:SHOW_FAILURES]:
        report.stderr.print(f"failed: {rel}: {reason}")
    if len(result.failures) > SHOW_FAILURES:
        report.stderr.print(f"... and {len(result.failures) - SHOW_FAILURES} more failures")
