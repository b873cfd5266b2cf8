"""Per-label change tally: the live bucket state diffed against the trained baseline.

A *change* is defined against the **baseline**, the key -> ETag manifest of the snapshot the
current model was trained on, never by counting notifications:

- a key in live but not in the baseline is *added*; in the baseline but not live, *deleted*;
  in both with different ETags, *modified*. Each such key counts one, whatever happened in
  between. So add-then-delete nets zero, overwriting twice counts one, re-uploading identical
  bytes counts zero, and a duplicated or replayed notification is a no-op. A *missed*
  notification is repaired by the next full listing (`resync()`), which is just a sequence of
  the same idempotent `put`s plus a sweep of keys that were not listed.

Memory is the point of the data layout (goal: < 200 bytes RSS per object at 100k objects).
There is one dict per label mapping the key *relative to its label* to either
- one `bytes` ETag code when live == baseline (the common case: one object for both sides),
- the present side's code for an added / deleted key, which side being recorded in two
  per-label sets that are empty in the steady state (so no per-entry wrapper objects, and
  a listing that confirms the baseline allocates nothing that survives),
- a `(baseline_code, live_code)` tuple only for modified keys.
ETag codes are the 16 raw bytes of an MD5 ETag (49 bytes as a Python object, not 81 for the
hex str); multipart or other ETags are kept as text with a marker byte (see `encode_etag`).
Per-label counters are maintained incrementally, so a notification costs O(1) and reading the
counts costs O(labels).

Pure and single-threaded: no I/O; callers serialize access (the watch worker owns it).

Why one module of this length (about 400 lines): the entry encoding, the counters and the
diff share one invariant (counts equal a fresh diff of live against baseline); kept
together, every method that changes an entry visibly keeps the counters in step.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import kubetrain_contract as contract

_MD5_HEX = re.compile(r"[0-9a-fA-F]{32}")

#: An entry: one ETag code (both sides, or the one side present), or (baseline, live).
_Entry = bytes | tuple[bytes, bytes]


def encode_etag(etag: str) -> bytes:
    """Compact, lossless encoding of an ETag (quotes stripped).

    32 hex digits (a plain MD5 ETag) -> 16 raw bytes. Anything else (multipart `hex-N`, SSE,
    other servers) -> b"\\x01" + UTF-8 text, or b"\\x02" + text + b"\\x02" should that be
    exactly 16 bytes long; so length 16 always means "raw MD5" and decoding is unambiguous.
    """
    bare = contract.normalize_etag(etag)
    if len(bare) == 32 and _MD5_HEX.fullmatch(bare):
        return bytes.fromhex(bare)
    raw = b"\x01" + bare.encode()
    if len(raw) == 16:
        raw = b"\x02" + bare.encode() + b"\x02"
    return raw


def decode_etag(code: bytes) -> str:
    """Inverse of `encode_etag` (MD5 ETags come back as lowercase hex)."""
    if len(code) == 16:
        return code.hex()
    if code[:1] == b"\x02":
        return code[1:-1].decode()
    return code[1:].decode()


@dataclass(frozen=True)
class LabelCounts:
    """What status.labels[label] shows."""

    objects: int
    """Keys of this label in the live bucket."""
    added: int
    modified: int
    deleted: int

    @property
    def changes(self) -> int:
        return self.added + self.modified + self.deleted

    def as_status(self) -> dict[str, int]:
        return {
            "objects": self.objects,
            "added": self.added,
            "modified": self.modified,
            "deleted": self.deleted,
            "changes": self.changes,
        }


class _Label:
    """One label's entries. `entries[rest]` holds the ETag code for both sides when they
    agree, the one side's code for a one-sided key (which side: membership in `base_only` /
    `live_only`), or a (baseline, live) tuple for a modified key. The sets are non-empty only
    while keys are one-sided (startup, pending changes); steady state is dict + codes only."""

    __slots__ = ("added", "base_only", "deleted", "entries", "live_only", "modified", "objects")

    def __init__(self) -> None:
        self.entries: dict[str, _Entry] = {}
        self.base_only: set[str] = set()
        self.live_only: set[str] = set()
        self.objects = 0
        self.added = 0
        self.modified = 0
        self.deleted = 0

    def state(self, rest: str) -> tuple[bytes | None, bytes | None]:
        """(baseline code, live code) of a key; None for an absent side."""
        entry = self.entries.get(rest)
        if entry is None:
            return None, None
        if type(entry) is tuple:
            return entry
        if self.base_only and rest in self.base_only:
            return entry, None  # type: ignore[return-value]
        if self.live_only and rest in self.live_only:
            return None, entry  # type: ignore[return-value]
        return entry, entry  # type: ignore[return-value]

    def store(self, rest: str, base: bytes | None, live: bytes | None) -> None:
        """Record the new state of a key (no accounting)."""
        if base is None and live is None:
            self.entries.pop(rest, None)
            self.base_only.discard(rest)
            self.live_only.discard(rest)
            return
        if base is None:
            self.entries[rest] = live  # type: ignore[assignment]
            self.live_only.add(rest)
            self.base_only.discard(rest)
        elif live is None:
            self.entries[rest] = base
            self.base_only.add(rest)
            self.live_only.discard(rest)
        else:
            if base == live:
                if self.entries.get(rest) is not base:
                    self.entries[rest] = base  # one shared object for both sides
            else:
                self.entries[rest] = (base, live)
            self.base_only.discard(rest)
            self.live_only.discard(rest)

    def is_live(self, rest: str, entry: _Entry) -> bool:
        return type(entry) is tuple or not (self.base_only and rest in self.base_only)

    def live_of(self, rest: str, entry: _Entry) -> bytes | None:
        if type(entry) is tuple:
            return entry[1]
        if self.base_only and rest in self.base_only:
            return None
        return entry  # type: ignore[return-value]

    def compact(self) -> None:
        """Drop emptied one-sided sets (a set never shrinks its table by itself)."""
        if not self.base_only:
            self.base_only = set()
        if not self.live_only:
            self.live_only = set()

    def account(self, base: bytes | None, live: bytes | None, sign: int) -> None:
        if base is None:
            if live is not None:
                self.added += sign
        elif live is None:
            self.deleted += sign
        elif base != live:
            self.modified += sign


class ListingOrderError(RuntimeError):
    """A streaming resync saw keys out of lexicographic order (S3 guarantees it; be safe)."""


@dataclass(frozen=True)
class ResyncResult:
    listed: int
    """Included keys the listing returned."""
    changed: int
    """Keys whose live state the listing corrected (new, different ETag or gone): what the
    notifications had missed (or what happened before the operator started)."""


class Tally:
    """Baseline vs live state of one watch, counted per label."""

    def __init__(self, prefix: str, include: str = "*") -> None:
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.prefix = prefix
        self.include = include
        self._match: Callable[[str], object] = (
            (lambda rel: True)
            if include in ("", "*")
            else re.compile(fnmatch.translate(include)).match
        )
        self._labels: dict[str, _Label] = {}

    # -- key handling -------------------------------------------------------------------
    def split(self, key: str) -> tuple[str, str] | None:
        """(label, key relative to the label) for an included dataset key, else None.

        Same rule as `contract.label_of`, plus the `include` glob over the key relative to
        the prefix (fnmatch: `*` matches `/` too, so `*.png` means "any .png below").
        """
        if not key.startswith(self.prefix):
            return None
        rel = key[len(self.prefix) :]
        if rel.startswith(contract.RESERVED_PREFIX):
            return None
        label, sep, rest = rel.partition("/")
        if not sep or not label or not self._match(rel):
            return None
        return label, rest

    def join(self, label: str, rest: str) -> str:
        return f"{self.prefix}{label}/{rest}"

    # -- baseline -----------------------------------------------------------------------
    def set_baseline(self, objects: Mapping[str, str]) -> None:
        """Make `objects` (key -> ETag) the baseline, keeping the live state; O(N), in place.

        Every entry first becomes live-only (its live code, no new objects), then the
        baseline keys are applied on top; no intermediate copy of the live state is made, so
        a 100k-object switch allocates little besides the new baseline codes.
        """
        for label in list(self._labels):
            old = self._labels[label]
            for rest in list(old.base_only):
                del old.entries[rest]
            old.base_only = set()
            for rest, entry in old.entries.items():
                if type(entry) is tuple:
                    old.entries[rest] = entry[1]
            old.live_only = set(old.entries)
            old.objects = old.added = len(old.entries)
            old.modified = old.deleted = 0
            if not old.entries:
                del self._labels[label]
        for key, etag in objects.items():
            parts = self.split(key)
            if parts is None:
                continue
            label, rest = parts
            st = self._labels.get(label)
            if st is None:
                st = self._labels[label] = _Label()
            code = encode_etag(etag)
            old_base, live = st.state(rest)
            if old_base is not None:
                continue  # duplicate key in the baseline
            st.account(None, live, -1)
            st.store(rest, code, live)
            st.account(code, live, +1)
        for st in self._labels.values():
            st.compact()

    def _iter_live(self) -> Iterator[tuple[str, str, bytes]]:
        for label, st in self._labels.items():
            for rest, entry in st.entries.items():
                live = st.live_of(rest, entry)
                if live is not None:
                    yield label, rest, live

    # -- live updates -------------------------------------------------------------------
    def put(self, key: str, etag: str) -> bool:
        """An object now exists with this ETag; True if the live state changed."""
        parts = self.split(key)
        if parts is None:
            return False
        return self._put(parts[0], parts[1], encode_etag(etag))

    def _put(self, label: str, rest: str, code: bytes) -> bool:
        st = self._labels.get(label)
        if st is None:
            st = self._labels[label] = _Label()
        base, live = st.state(rest)
        if live == code:
            return False
        st.account(base, live, -1)
        st.store(rest, base, code)
        st.account(base, code, +1)
        if live is None:
            st.objects += 1
        return True

    def delete(self, key: str) -> bool:
        """The object is gone; True if the live state changed."""
        parts = self.split(key)
        if parts is None:
            return False
        return self._delete(*parts)

    def _delete(self, label: str, rest: str) -> bool:
        st = self._labels.get(label)
        if st is None:
            return False
        base, live = st.state(rest)
        if live is None:
            return False
        st.account(base, live, -1)
        st.store(rest, base, None)
        st.account(base, None, +1)
        st.objects -= 1
        if not st.entries:
            del self._labels[label]
        return True

    def resync(self, *, streaming: bool = True) -> ResyncSession:
        """Start a full-listing repair: feed every listed (key, etag), then `finish()`."""
        return ResyncSession(self, streaming=streaming)

    # -- reading ------------------------------------------------------------------------
    def counts(self) -> dict[str, LabelCounts]:
        return {
            label: LabelCounts(st.objects, st.added, st.modified, st.deleted)
            for label, st in self._labels.items()
            if st.objects or st.added or st.modified or st.deleted
        }

    def changes(self) -> dict[str, int]:
        return {
            label: st.added + st.modified + st.deleted
            for label, st in self._labels.items()
            if st.added or st.modified or st.deleted
        }

    def live_objects(self) -> int:
        return sum(st.objects for st in self._labels.values())

    def live_snapshot(self) -> dict[str, str]:
        """Full key -> bare ETag of every included live object (what a run trains on)."""
        return {
            self.join(label, rest): decode_etag(code) for label, rest, code in self._iter_live()
        }


class ResyncSession:
    """One full listing applied to a Tally.

    Listed keys are applied as idempotent puts; keys the listing did not return are deleted.
    With `streaming=True` the sweep of a label happens as soon as the (lexicographically
    sorted, as S3 guarantees) listing moves past it, so only one label's set of seen keys is
    held at a time; a key out of order raises ListingOrderError (rerun with streaming=False,
    which keeps every label's seen set until `finish()`).
    """

    def __init__(self, tally: Tally, *, streaming: bool) -> None:
        self._tally = tally
        self._streaming = streaming
        self._seen: dict[str, set[str]] = {}
        self._swept: set[str] = set()
        self._current: str | None = None
        self._last_key = ""
        self.listed = 0
        self.changed = 0

    def feed(self, key: str, etag: str) -> None:
        tally = self._tally
        parts = tally.split(key)
        if parts is None:
            return
        label, rest = parts
        if self._streaming:
            if key < self._last_key:
                raise ListingOrderError(f"listing out of order: {key!r} after {self._last_key!r}")
            self._last_key = key
            if label != self._current:
                if self._current is not None:
                    self._sweep(self._current)
                self._current = label
        seen = self._seen.get(label)
        if seen is None:
            seen = self._seen[label] = set()
        seen.add(rest)
        self.listed += 1
        if tally._put(label, rest, encode_etag(etag)):
            self.changed += 1

    def _sweep(self, label: str) -> None:
        seen = self._seen.pop(label, set())
        self._swept.add(label)
        st = self._tally._labels.get(label)
        if st is None:
            return
        gone = [
            rest
            for rest, entry in st.entries.items()
            if rest not in seen and st.is_live(rest, entry)
        ]
        for rest in gone:
            if self._tally._delete(label, rest):
                self.changed += 1

    def finish(self) -> ResyncResult:
        for label in list(self._seen):
            self._sweep(label)
        for label in list(self._tally._labels):
            if label not in self._swept:
                self._sweep(label)
        for st in self._tally._labels.values():
            st.compact()
        return ResyncResult(listed=self.listed, changed=self.changed)
