"""S3/MinIO I/O of one watch: listing, snapshot manifests, and the notification listener.

Detection is hybrid (docs/operator.md explains the choice). Notifications arrive through
MinIO's webhook target (`webhook.py`; `ensure_webhook` subscribes the bucket) or, per watch,
through the listen stream implemented here:
- **MinIO ListenBucketNotification stream** (`Listener`, one daemon thread per watch): a
  long-lived GET with `ping=N`, so the server writes `{"Records":null}` every N seconds. The
  read timeout is a few pings, so a silently dead connection is noticed within seconds
  instead of minio-py's default 5 minutes. minio-py's own `listen_bucket_notification`
  reconnects silently on EOF (losing the gap without telling anyone) and cannot send `ping`,
  so the listener issues the request itself through the client's signed `_execute` and
  reports every (re)connect, after which the worker re-lists the bucket: events published
  while nobody listened are gone (MinIO's listen pub/sub is in-memory).
  Reconnects back off exponentially with jitter; nothing here blocks the operator.
  Caveat (measured): the MinIO build of this project never flushes this stream (its S3
  middleware's response writer lacks `Flush`), so there it delivers nothing until ~8 KB of
  events accumulate; `Webhook` is the default for that reason.
- **Full listing** (`iter_listing`) at start, after every reconnect and every
  `resyncInterval`, repairs anything missed. It streams (key, ETag) pairs; the tally keeps
  the compact state.

The endpoint and the keys of the watch's Secret form a `kubetrain_contract.s3.S3Connection`
(`connection_from_secret`), whose repr never shows the keys; `new_client` is the operator's one
place that creates a MinIO client.
"""

from __future__ import annotations

import contextlib
import io
import logging
import queue
import random
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import kubetrain_contract as contract
import urllib3
from kubetrain_contract.s3 import S3ConfigError, S3Connection
from minio import Minio
from minio.error import MinioException, S3Error
from minio.notificationconfig import NotificationConfig, QueueConfig

from kubetrain_operator.notifications import EVENTS, Change, NotificationError, parse_line
from kubetrain_operator.spec import SourceSpec

log = logging.getLogger("kubetrain.operator.objectstore")


class SourceError(RuntimeError):
    """The watch's source is unusable; `reason` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def connection_from_secret(source: SourceSpec, secret: Mapping[str, Any]) -> S3Connection:
    """The source's endpoint with the keys `accessKey` / `secretKey` of its Secret.

    SourceError (CredentialsInvalid) names what is missing or undecodable.
    """
    try:
        return S3Connection.from_secret(source.endpoint, secret, source.credentials_secret)
    except S3ConfigError as exc:
        raise SourceError("CredentialsInvalid", str(exc)) from None


def new_client(conn: S3Connection, http: urllib3.PoolManager) -> Minio:
    """The operator's only MinIO client constructor; `http` sets timeouts and retries."""
    return Minio(**conn.minio_kwargs(), http_client=http)


def _client(conn: S3Connection, *, read_timeout: float, retries: int) -> Minio:
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=min(5.0, read_timeout), read=read_timeout),
        retries=urllib3.Retry(
            total=retries,
            backoff_factor=0.2,
            status_forcelist=(500, 502, 503, 504),
            allowed_methods=None,
        ),
        maxsize=4,
    )
    return new_client(conn, http)


def _s3_message(exc: Exception) -> str:
    if isinstance(exc, S3Error):
        return f"{exc.code}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


class ObjectStore:
    """Blocking S3 calls for one watch's bucket."""

    def __init__(self, source: SourceSpec, conn: S3Connection, *, timeout: float = 30.0) -> None:
        self.source = source
        self.conn = conn
        self.timeout = timeout
        self.client = _client(conn, read_timeout=timeout, retries=2)

    def check_bucket(self) -> None:
        try:
            exists = self.client.bucket_exists(self.source.bucket)
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise SourceError(
                "EndpointUnreachable", f"{self.source.endpoint}: {_s3_message(exc)}"
            ) from exc
        if not exists:
            raise SourceError(
                "BucketNotFound",
                f"bucket {self.source.bucket!r} does not exist at {self.source.endpoint}",
            )

    def ensure_webhook(self, arn: str) -> bool:
        """Subscribe the bucket to the webhook target `arn` for every create/remove event.

        One catch-all queue configuration (id `kubetrain`, no prefix filter) per bucket: the
        operator routes by prefix itself, so several watches on one bucket share it and S3's
        "overlapping configurations" rule cannot bite. Other configurations are kept. Returns
        True when the bucket's configuration was changed. Needs s3:GetBucketNotification and
        s3:PutBucketNotification on the bucket.
        """
        bucket = self.source.bucket
        try:
            config = self.client.get_bucket_notification(bucket)
            for queue_config in config.queue_config_list:
                if (
                    queue_config.queue == arn
                    and not (
                        queue_config.prefix_filter_rule and queue_config.prefix_filter_rule.value
                    )
                    and not (
                        queue_config.suffix_filter_rule and queue_config.suffix_filter_rule.value
                    )
                    and set(EVENTS) <= set(queue_config.events)
                ):
                    return False
            others = [q for q in config.queue_config_list if q.queue != arn]
            ours = QueueConfig(queue=arn, events=list(EVENTS), config_id="kubetrain")
            self.client.set_bucket_notification(
                bucket,
                NotificationConfig(
                    cloud_func_config_list=config.cloud_func_config_list,
                    queue_config_list=[*others, ours],
                    topic_config_list=config.topic_config_list,
                ),
            )
        except S3Error as exc:
            if exc.code == "InvalidArgument" and "ARN" in (exc.message or ""):
                raise SourceError(
                    "WebhookTargetMissing",
                    f"MinIO at {self.source.endpoint} has no notification target {arn} "
                    "(set MINIO_NOTIFY_WEBHOOK_ENABLE_KUBETRAIN=on and "
                    "MINIO_NOTIFY_WEBHOOK_ENDPOINT_KUBETRAIN to the operator's /minio/events)",
                ) from exc
            raise SourceError(
                "NotificationConfigFailed", f"bucket {bucket!r}: {_s3_message(exc)}"
            ) from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise SourceError(
                "NotificationConfigFailed", f"bucket {bucket!r}: {_s3_message(exc)}"
            ) from exc
        return True

    def iter_listing(self) -> Iterator[tuple[str, str]]:
        """Every (key, bare ETag) under the prefix, in S3's lexicographic order."""
        prefix = self.source.prefix
        try:
            for obj in self.client.list_objects(self.source.bucket, prefix=prefix, recursive=True):
                name = obj.object_name
                if name is None or obj.is_dir:
                    continue
                yield name, contract.normalize_etag(obj.etag or "")
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise SourceError(
                "ListingFailed", f"listing s3://{self.source.bucket}/{prefix}: {_s3_message(exc)}"
            ) from exc

    def stat_etag(self, key: str) -> str | None:
        """The object's current ETag, None if it does not exist."""
        try:
            return contract.normalize_etag(
                self.client.stat_object(self.source.bucket, key).etag or ""
            )
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                return None
            raise SourceError("StatFailed", f"stat {key!r}: {_s3_message(exc)}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise SourceError("StatFailed", f"stat {key!r}: {_s3_message(exc)}") from exc

    def put_manifest(self, key: str, manifest: contract.SnapshotManifest) -> None:
        data = manifest.to_json().encode()
        try:
            self.client.put_object(
                self.source.bucket,
                key,
                io.BytesIO(data),
                len(data),
                content_type="application/json",
            )
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise SourceError(
                "ManifestWriteFailed", f"writing {key!r}: {_s3_message(exc)}"
            ) from exc

    def read_manifest(self, key: str) -> contract.SnapshotManifest:
        """Load and validate a snapshot manifest; SourceError names the key."""
        try:
            resp = self.client.get_object(self.source.bucket, key)
            try:
                data = resp.read()
            finally:
                resp.close()
                resp.release_conn()
        except S3Error as exc:
            reason = "ManifestMissing" if exc.code == "NoSuchKey" else "ManifestReadFailed"
            raise SourceError(reason, f"reading manifest {key!r}: {_s3_message(exc)}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise SourceError(
                "ManifestReadFailed", f"reading manifest {key!r}: {_s3_message(exc)}"
            ) from exc
        try:
            return contract.SnapshotManifest.from_json(data)
        except ValueError as exc:
            raise SourceError("ManifestInvalid", f"manifest {key!r}: {exc}") from exc


@dataclass(frozen=True)
class StreamState:
    """Listener -> worker signal: the stream (re)connected or dropped."""

    connected: bool
    error: str = ""


ListenerItem = Change | StreamState


class Listener(threading.Thread):
    """Reads the MinIO listen stream of one bucket/prefix into `sink` until `stop()`."""

    def __init__(
        self,
        source: SourceSpec,
        conn: S3Connection,
        sink: queue.SimpleQueue[ListenerItem],
        *,
        ping_seconds: int = 5,
        read_timeout: float = 15.0,
        backoff_max: float = 30.0,
        name: str = "listener",
    ) -> None:
        super().__init__(name=f"kubetrain-listen-{name}", daemon=True)
        self.source = source
        self.sink = sink
        self.ping_seconds = ping_seconds
        self.backoff_max = backoff_max
        self.client = _client(conn, read_timeout=read_timeout, retries=0)
        self._stopping = threading.Event()
        self._response: Any = None
        self.connected = threading.Event()
        self.connects = 0

    def stop(self) -> None:
        self._stopping.set()
        resp = self._response
        if resp is not None:
            # Unblocks a pending read on most platforms; the read timeout bounds it anyway.
            with contextlib.suppress(Exception):
                resp.shutdown()

    def run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            error = ""
            connects_before = self.connects
            try:
                self._stream_once()
            except Exception as exc:  # network errors, S3 errors, malformed streams
                error = _s3_message(exc)
                if not self._stopping.is_set():
                    log.warning("listen stream of %s: %s", self.source.bucket, error)
            finally:
                if self.connected.is_set():
                    self.connected.clear()
                    self.sink.put(StreamState(False, error))
                self._release()
            if self._stopping.is_set():
                break
            # A stream that did connect starts the backoff over; repeated failures grow it.
            attempt = 1 if self.connects > connects_before else attempt + 1
            delay = min(self.backoff_max, 0.5 * 2 ** min(attempt, 10)) * random.uniform(0.5, 1.0)
            self._stopping.wait(delay)

    def _release(self) -> None:
        resp, self._response = self._response, None
        if resp is not None:
            try:
                resp.close()
                resp.release_conn()
            except Exception:
                pass

    def _stream_once(self) -> None:
        resp = (
            self.client._execute(  # signed GET; see module docstring for why not the public helper
                "GET",
                self.source.bucket,
                query_params={
                    "prefix": self.source.prefix,
                    "suffix": "",
                    "events": list(EVENTS),
                    "ping": str(self.ping_seconds),
                },
                preload_content=False,
            )
        )
        self._response = resp
        self.connects += 1
        self.connected.set()
        self.sink.put(StreamState(True))
        buffer = b""
        while not self._stopping.is_set():
            chunk = resp.read1(65536)
            if not chunk:
                return  # server closed the stream: reconnect (and the worker re-lists)
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                try:
                    for change in parse_line(line):
                        self.sink.put(change)
                except NotificationError as exc:
                    log.warning("listen stream of %s: skipping %s", self.source.bucket, exc)


def wait_connected(listener: Listener, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if listener.connected.wait(0.05):
            return True
        if not listener.is_alive():
            return False
    return listener.connected.is_set()
