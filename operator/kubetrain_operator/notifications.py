"""MinIO bucket notification records -> object changes. Pure.

The listen stream (`GET /<bucket>?events=...&ping=N`) sends one JSON document per line:
`{"Records": [...]}` for events and `{"Records": null}` as the keep-alive every N seconds.
Keys in listen-stream records are plain; webhook-target records are URL-escaped
(`escaped=True` decodes them), so either transport can feed the same tally.
Remove events carry no ETag. A create event without an ETag (rare: metadata-only events)
becomes a `refresh`: the caller asks the server for the object's current ETag.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote_plus

import kubetrain_contract as contract

ChangeKind = Literal["put", "delete", "refresh"]

#: What the operator subscribes to.
EVENTS = ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")


@dataclass(frozen=True)
class Change:
    kind: ChangeKind
    key: str
    etag: str = ""


class NotificationError(ValueError):
    """A line of the stream that is not a notification document."""


def parse_record(record: Mapping[str, Any], *, escaped: bool = False) -> Change | None:
    """One S3 event record -> Change, or None for events that do not change object state."""
    name = str(record.get("eventName") or "")
    obj = (record.get("s3") or {}).get("object") or {}
    key = obj.get("key")
    if not isinstance(key, str) or not key:
        return None
    if escaped:
        key = unquote_plus(key)
    if name.startswith("s3:ObjectRemoved:"):
        return Change("delete", key)
    if name.startswith("s3:ObjectCreated:"):
        etag = obj.get("eTag")
        if isinstance(etag, str) and etag:
            return Change("put", key, contract.normalize_etag(etag))
        return Change("refresh", key)
    return None


def parse_line(line: bytes | str, *, escaped: bool = False) -> list[Change]:
    """All changes in one stream line; [] for a keep-alive or a blank line."""
    text = line.decode() if isinstance(line, bytes) else line
    text = text.strip()
    if not text:
        return []
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotificationError(f"not JSON: {text[:200]!r}") from exc
    if not isinstance(doc, dict):
        raise NotificationError(f"not a notification document: {text[:200]!r}")
    records = doc.get("Records") or []
    if not isinstance(records, list):
        raise NotificationError(f"'Records' is not a list: {text[:200]!r}")
    changes = []
    for rec in records:
        if isinstance(rec, Mapping):
            change = parse_record(rec, escaped=escaped)
            if change is not None:
                changes.append(change)
    return changes
