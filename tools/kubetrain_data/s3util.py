"""MinIO client construction and the one retry policy used by `upload` and `mutate`.

The minio client's own urllib3 retries are switched off (`Retry(total=0)`) so exactly one
policy applies: `with_retries` retries transient failures -- connection errors, timeouts,
HTTP 5xx, and S3 codes like SlowDown -- with exponential backoff and full jitter, and fails
fast on everything else (AccessDenied, NoSuchBucket, ...). Error texts never contain the
credentials: they are only ever passed to the client.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from kubetrain_data.errors import DataError
from kubetrain_data.settings import S3Settings

T = TypeVar("T")

TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "OperationTimedOut",
        "XMinioServerNotInitialized",
        "XMinioStorageFull",
    }
)
"""S3 error codes worth retrying."""
BACKOFF_BASE = 0.25
"""First retry waits up to this many seconds; each later one doubles it."""
BACKOFF_CAP = 8.0
"""Longest wait between two attempts."""


def client(settings: S3Settings, workers: int) -> Minio:
    """A thread-safe client with a connection pool big enough for WORKERS threads.

    The data tool's only MinIO client constructor.
    """
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=5.0, read=60.0),
        maxsize=max(10, workers),
        retries=urllib3.Retry(total=0, connect=0, read=0, redirect=0, status=0),
    )
    return Minio(**settings.minio_kwargs(), http_client=http)


def is_transient(exc: BaseException) -> bool:
    """Would trying again plausibly succeed?"""
    if isinstance(exc, S3Error):
        return exc.code in TRANSIENT_CODES
    if isinstance(exc, ServerError):
        return exc.status_code >= 500
    if isinstance(exc, InvalidResponseError):
        return True
    return isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError))


def describe(exc: BaseException) -> str:
    """One line for an S3/network error."""
    if isinstance(exc, S3Error):
        return f"{exc.code}: {exc.message}"
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return "cannot connect" + (f": {exc.__context__}" if exc.__context__ else "")
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def with_retries(
    fn: Callable[[], T],
    retries: int,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    """Call FN; on a transient error wait (full jitter, capped doubling) and try again."""
    rng = rng or random.Random()
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if attempt >= retries or not is_transient(exc):
                raise
            sleep(rng.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)))
            attempt += 1


def ensure_bucket(
    mc: Minio, settings: S3Settings, bucket: str, create: bool, retries: int, dry_run: bool = False
) -> bool:
    """Check BUCKET exists (creating it if CREATE); returns whether it exists now."""
    try:
        exists = with_retries(lambda: mc.bucket_exists(bucket), retries)
    except S3Error as exc:  # the server answered: wrong keys, no permission, ...
        raise DataError(
            f"MinIO at {settings.endpoint} refused access to bucket {bucket!r}: {describe(exc)}"
        ) from None
    except Exception as exc:
        raise DataError(f"cannot reach MinIO at {settings.endpoint}: {describe(exc)}") from None
    if exists:
        return True
    if not create:
        raise DataError(
            f"bucket {bucket!r} does not exist at {settings.endpoint} (pass --create-bucket)"
        )
    if dry_run:
        return False
    try:
        with_retries(lambda: mc.make_bucket(bucket), retries)
    except S3Error as exc:
        if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise DataError(f"cannot create bucket {bucket!r}: {describe(exc)}") from None
    except Exception as exc:
        raise DataError(f"cannot create bucket {bucket!r}: {describe(exc)}") from None
    return True
