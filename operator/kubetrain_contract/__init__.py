"""The contract shared by the operator and the trainer: snapshot manifest in, result out.

The operator freezes "what the model must train on" as a *snapshot manifest*: the
key -> ETag map of every included object under the watch's prefix, stored as a JSON
object in the watched bucket (too big for env or args). The trainer downloads exactly
those objects, verifies each ETag, and reports one small JSON result in the pod's
termination message. Both sides import this package, so the format lives in one place;
docs/contract.md describes it for humans.

Pure data and functions: no Kubernetes or S3 I/O here. It is a package of its own, not
part of the operator, and imports only the standard library (tests/unit/test_contract_stdlib.py
checks it, and .importlinter keeps it from importing any other kubetrain package), so the
trainer image can carry it without the operator. The submodule `kubetrain_contract.s3`
(`S3Connection`) holds the one rule set for an S3 endpoint and its credentials, used by every
component that creates a MinIO client.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

API_VERSION = "kubetrain.dev/v1alpha1"
MANIFEST_KIND = "SnapshotManifest"
#: Objects under this prefix of the watched bucket belong to kubetrain, never to the dataset.
RESERVED_PREFIX = ".kubetrain/"
#: The kubelet truncates termination messages at 4096 bytes.
TERMINATION_MESSAGE_LIMIT = 4096

#: Trainer exit codes. A Job's podFailurePolicy maps BAD_INPUT to "fail the Job now"
#: (retrying cannot help); any other non-zero code counts against backoffLimit.
EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_TRANSIENT = 75  # EX_TEMPFAIL


def normalize_etag(etag: str) -> str:
    """S3 ETags arrive quoted from some APIs and bare from others; compare them bare."""
    return etag.strip().strip('"')


def label_of(key: str, prefix: str) -> str | None:
    """The label of an object is the first path segment under the watch's prefix.

    Returns None for keys outside the prefix, directly at its top, or reserved.
    """
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix) :]
    if rest.startswith(RESERVED_PREFIX) or "/" not in rest:
        return None
    label = rest.split("/", 1)[0]
    return label or None


def manifest_digest(objects: Mapping[str, str]) -> str:
    """A content digest of a key -> ETag map, independent of order and ETag quoting."""
    h = hashlib.sha256()
    for key in sorted(objects):
        h.update(key.encode())
        h.update(b"\0")
        h.update(normalize_etag(objects[key]).encode())
        h.update(b"\n")
    return "sha256:" + h.hexdigest()


def manifest_key(watch: str, digest: str) -> str:
    """Where the manifest of a snapshot lives in the watched bucket (content-addressed)."""
    return f"{RESERVED_PREFIX}snapshots/{watch}/{digest.removeprefix('sha256:')}.json"


@dataclass(frozen=True)
class SnapshotManifest:
    """The exact set of objects one training run must use."""

    watch: str
    """`<namespace>/<name>` of the DatasetWatch that froze this snapshot."""
    bucket: str
    """The bucket the keys live in."""
    prefix: str
    """The watch's prefix; every key starts with it and its next segment is the label."""
    objects: dict[str, str]
    """Object key -> bare ETag."""
    created_at: str = ""
    """RFC 3339 time the operator froze the snapshot."""

    @property
    def digest(self) -> str:
        return manifest_digest(self.objects)

    def labels(self) -> dict[str, int]:
        """Objects per label, for logs and status."""
        counts: dict[str, int] = {}
        for key in self.objects:
            label = label_of(key, self.prefix)
            if label is not None:
                counts[label] = counts.get(label, 0) + 1
        return counts

    def to_json(self) -> str:
        doc = {
            "apiVersion": API_VERSION,
            "kind": MANIFEST_KIND,
            "watch": self.watch,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "createdAt": self.created_at,
            "digest": self.digest,
            "objects": dict(sorted(self.objects.items())),
        }
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> SnapshotManifest:
        """Parse and validate; raises ValueError naming what is wrong."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"snapshot manifest is not JSON: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("kind") != MANIFEST_KIND:
            raise ValueError(
                f"not a {MANIFEST_KIND}: kind={doc.get('kind') if isinstance(doc, dict) else type(doc).__name__!r}"
            )
        objects = doc.get("objects")
        if not isinstance(objects, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in objects.items()
        ):
            raise ValueError("snapshot manifest: 'objects' must map keys to ETag strings")
        manifest = cls(
            watch=str(doc.get("watch", "")),
            bucket=str(doc.get("bucket", "")),
            prefix=str(doc.get("prefix", "")),
            objects={k: normalize_etag(v) for k, v in objects.items()},
            created_at=str(doc.get("createdAt", "")),
        )
        claimed = doc.get("digest")
        if claimed and claimed != manifest.digest:
            raise ValueError(
                f"snapshot manifest digest mismatch: file says {claimed}, content is {manifest.digest}"
            )
        return manifest


@dataclass
class TrainResult:
    """What the trainer writes to /dev/termination-log (JSON, camelCase, < 4 KiB)."""

    status: str
    """"succeeded" or "failed"."""
    reason: str = ""
    """Why: the gate's verdict on success, the error on failure."""
    modelName: str = ""
    modelVersion: str = ""
    promoted: bool = False
    """True when the new version became `champion` and a Bento was exported."""
    accuracy: float | None = None
    championAccuracy: float | None = None
    bentoUri: str = ""
    datasetDigest: str = ""
    mlflowRunId: str = ""
    skipped: int = 0
    """Files in the manifest that were not used (corrupt, changed or missing)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_message(self) -> str:
        doc = {k: v for k, v in asdict(self).items() if k != "extra"}
        doc.update(self.extra)
        text = json.dumps(doc, separators=(",", ":"))
        if len(text.encode()) > TERMINATION_MESSAGE_LIMIT:
            doc = {k: v for k, v in asdict(self).items() if k != "extra"}
            doc["reason"] = str(doc["reason"])[:1000]
            text = json.dumps(doc, separators=(",", ":"))
        return text

    @classmethod
    def from_message(cls, text: str) -> TrainResult:
        """Parse a termination message; raises ValueError when it is not a result."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"termination message is not JSON: {text[:200]!r}") from exc
        if not isinstance(doc, dict) or "status" not in doc:
            raise ValueError(f"termination message has no 'status': {text[:200]!r}")
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        return cls(
            **{k: v for k, v in doc.items() if k in known},
            extra={k: v for k, v in doc.items() if k not in known},
        )
