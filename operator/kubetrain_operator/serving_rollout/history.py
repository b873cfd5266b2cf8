"""Bento history: which old `.bento` objects a promotion may delete. Pure.

`bentos_to_delete()` chooses which `.bento` objects of the same model, in the same bucket
folder as the current Bento (normally `.kubetrain/bentos/`), exceed `historyLimit`; the
current and previous Bentos are never chosen. It sees only keys and times (`StoredObject`),
so the rule is tested without a bucket; apply.py lists and deletes.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from kubetrain_operator.serving_rollout.state import Release, parse_s3_uri

_BENTO_NAME = re.compile(r"^(?P<stem>.+)-(?P<version>[A-Za-z0-9._]+)\.bento$")


@dataclass(frozen=True)
class StoredObject:
    key: str
    last_modified: float
    """Seconds since the epoch."""


def bento_folder(current: Release) -> tuple[str, str]:
    """(bucket, prefix) of the folder that holds the current Bento ("" at the top)."""
    bucket, key = parse_s3_uri(current.bento_uri)
    folder = key.rpartition("/")[0]
    return bucket, f"{folder}/" if folder else ""


def bentos_to_delete(
    objects: Iterable[StoredObject],
    *,
    current: Release,
    previous: Release | None,
    limit: int,
) -> list[str]:
    """Keys of `.bento` objects of the current model beyond `limit`, oldest first.

    Only objects in the current Bento's folder named `<stem>-<version>.bento` with the
    current Bento's stem count (other models in a shared bucket are never touched). The
    current and previous Bentos are always kept, then the newest fill up to `limit`.
    Newest is by version number when every version is an integer (MLflow's), else by time.
    """
    _, cur_key = parse_s3_uri(current.bento_uri)
    folder, _, cur_name = cur_key.rpartition("/")
    m = _BENTO_NAME.match(cur_name)
    if not m:
        return []
    stem = m.group("stem")
    prefix = f"{folder}/" if folder else ""
    candidates: list[tuple[StoredObject, str]] = []
    for obj in objects:
        if not obj.key.startswith(prefix) or "/" in obj.key[len(prefix) :]:
            continue
        om = _BENTO_NAME.match(obj.key[len(prefix) :])
        if om and om.group("stem") == stem:
            candidates.append((obj, om.group("version")))
    protected = {cur_key}
    if previous is not None:
        with contextlib.suppress(ValueError):  # a malformed previous URI protects nothing
            protected.add(parse_s3_uri(previous.bento_uri)[1])
    if all(v.isdigit() for _, v in candidates):
        candidates.sort(key=lambda c: (int(c[1]), c[0].last_modified), reverse=True)
    else:
        candidates.sort(key=lambda c: (c[0].last_modified, c[0].key), reverse=True)
    kept = {o.key for o, _ in candidates if o.key in protected}
    for obj, _ in candidates:
        if len(kept) >= limit:
            break
        kept.add(obj.key)
    return [o.key for o, _ in reversed(candidates) if o.key not in kept]
