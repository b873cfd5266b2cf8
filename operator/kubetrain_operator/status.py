"""The DatasetWatch status: durable run state in, status patches out. Pure.

The operator keeps no local disk. What must survive a restart lives in the watch's status:
- `runCounter`: the last run number used (Job names `<watch>-train-<n>` are deterministic);
- `baseline`: the manifest key and digest of the snapshot the current model was trained on
  (the manifest itself is an object in the bucket, see `contract.manifest_key`);
- `activeRun`: the run in flight (written *before* its Job is created, so a crash between the
  two re-creates the same Job name, which is idempotent) and `lastRun`;
- `thresholdCrossedAt`: when the pending crossing was first seen (for `maxDelay`).
Everything else in the status (label counts, phase, conditions) is derived and rewritten.

Conditions are keyed by type; `lastTransitionTime` changes only when `status` does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from kubetrain_operator.constants import rfc3339
from kubetrain_operator.tally import LabelCounts

PHASE_PENDING = "Pending"
PHASE_WATCHING = "Watching"
PHASE_TRAINING = "Training"
PHASE_FAILED = "Failed"
PHASE_SUSPENDED = "Suspended"

COND_SOURCE_READY = "SourceReady"
COND_TRAINING = "Training"
COND_READY = "Ready"

RESULT_SUCCEEDED = "Succeeded"
RESULT_FAILED = "Failed"


def iso(ts: float | dt.datetime | None, *, millis: bool = False) -> str | None:
    """`constants.rfc3339` of TS, except that a missing time stays missing (None)."""
    return None if ts is None else rfc3339(ts, millis=millis)


def parse_time(text: Any) -> float | None:
    """Epoch seconds of an RFC 3339 string, None for empty or unparseable input."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class Baseline:
    manifest_key: str
    digest: str
    objects: int = 0
    since: str = ""
    """When this snapshot became the baseline (RFC 3339)."""

    def to_status(self) -> dict[str, Any]:
        return {
            "manifestKey": self.manifest_key,
            "digest": self.digest,
            "objects": self.objects,
            "since": self.since,
        }

    @classmethod
    def from_status(cls, doc: Any) -> Baseline | None:
        if not isinstance(doc, Mapping) or not doc.get("manifestKey"):
            return None
        return cls(
            manifest_key=str(doc["manifestKey"]),
            digest=str(doc.get("digest") or ""),
            objects=int(doc.get("objects") or 0),
            since=str(doc.get("since") or ""),
        )


@dataclass(frozen=True)
class ActiveRun:
    job_name: str
    run: int
    start_time: str
    trigger_reason: str
    manifest_key: str
    dataset_digest: str
    generation: int = 0
    job_created: bool = False
    """False between the status write and a confirmed Job creation: if the operator dies in
    that window, a restart creates the (same-named) Job; if True and the Job is gone, the run
    is failed instead of silently re-run."""

    def to_status(self) -> dict[str, Any]:
        return {
            "jobName": self.job_name,
            "run": self.run,
            "startTime": self.start_time,
            "triggerReason": self.trigger_reason,
            "manifestKey": self.manifest_key,
            "datasetDigest": self.dataset_digest,
            "generation": self.generation,
            "jobCreated": self.job_created,
        }

    @classmethod
    def from_status(cls, doc: Any) -> ActiveRun | None:
        if not isinstance(doc, Mapping) or not doc.get("jobName"):
            return None
        return cls(
            job_name=str(doc["jobName"]),
            run=int(doc.get("run") or 0),
            start_time=str(doc.get("startTime") or ""),
            trigger_reason=str(doc.get("triggerReason") or ""),
            manifest_key=str(doc.get("manifestKey") or ""),
            dataset_digest=str(doc.get("datasetDigest") or ""),
            generation=int(doc.get("generation") or 0),
            job_created=bool(doc.get("jobCreated")),
        )


@dataclass(frozen=True)
class LastRun:
    job_name: str
    run: int
    result: str
    """Succeeded or Failed."""
    reason: str
    message: str
    start_time: str = ""
    finish_time: str = ""
    model_name: str = ""
    model_version: str = ""
    promoted: bool = False
    accuracy: float | None = None
    bento_uri: str = ""
    dataset_digest: str = ""
    manifest_key: str = ""
    generation: int = 0
    rollout_pending: bool = False
    """A promoted result whose rollout hook has not returned yet (re-invoked after restart)."""

    @property
    def failed(self) -> bool:
        return self.result == RESULT_FAILED

    def to_status(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "jobName": self.job_name,
            "run": self.run,
            "result": self.result,
            "reason": self.reason,
            "message": self.message[:2000],
            "startTime": self.start_time,
            "finishTime": self.finish_time,
            "modelName": self.model_name,
            "modelVersion": self.model_version,
            "promoted": self.promoted,
            "bentoUri": self.bento_uri,
            "datasetDigest": self.dataset_digest,
            "manifestKey": self.manifest_key,
            "generation": self.generation,
            "rolloutPending": self.rollout_pending,
        }
        if self.accuracy is not None:
            doc["accuracy"] = self.accuracy
        return doc

    @classmethod
    def from_status(cls, doc: Any) -> LastRun | None:
        if not isinstance(doc, Mapping) or not doc.get("jobName"):
            return None
        acc = doc.get("accuracy")
        return cls(
            job_name=str(doc["jobName"]),
            run=int(doc.get("run") or 0),
            result=str(doc.get("result") or ""),
            reason=str(doc.get("reason") or ""),
            message=str(doc.get("message") or ""),
            start_time=str(doc.get("startTime") or ""),
            finish_time=str(doc.get("finishTime") or ""),
            model_name=str(doc.get("modelName") or ""),
            model_version=str(doc.get("modelVersion") or ""),
            promoted=bool(doc.get("promoted")),
            accuracy=float(acc) if isinstance(acc, int | float) else None,
            bento_uri=str(doc.get("bentoUri") or ""),
            dataset_digest=str(doc.get("datasetDigest") or ""),
            manifest_key=str(doc.get("manifestKey") or ""),
            generation=int(doc.get("generation") or 0),
            rollout_pending=bool(doc.get("rolloutPending")),
        )


@dataclass(frozen=True)
class Durable:
    """The part of the status that is state, not report."""

    run_counter: int = 0
    baseline: Baseline | None = None
    active_run: ActiveRun | None = None
    last_run: LastRun | None = None
    crossed_at: str | None = None
    model: str = ""
    """`<modelName>:<version>` of the last successful run (printer column Model)."""

    @classmethod
    def from_status(cls, status: Mapping[str, Any] | None) -> Durable:
        status = status or {}
        crossed = status.get("thresholdCrossedAt")
        return cls(
            run_counter=int(status.get("runCounter") or 0),
            baseline=Baseline.from_status(status.get("baseline")),
            active_run=ActiveRun.from_status(status.get("activeRun")),
            last_run=LastRun.from_status(status.get("lastRun")),
            crossed_at=str(crossed) if crossed else None,
            model=str(status.get("model") or ""),
        )

    def to_status(self) -> dict[str, Any]:
        """Merge-patch fragment; None deletes a field (activeRun after a run ends)."""
        return {
            "runCounter": self.run_counter,
            "baseline": self.baseline.to_status() if self.baseline else None,
            "activeRun": self.active_run.to_status() if self.active_run else None,
            "lastRun": self.last_run.to_status() if self.last_run else None,
            "thresholdCrossedAt": self.crossed_at,
            "model": self.model,
        }

    def with_(self, **changes: Any) -> Durable:
        return replace(self, **changes)


def compute_phase(*, source_ready: bool, active: bool, suspended: bool, last_failed: bool) -> str:
    if not source_ready:
        return PHASE_PENDING
    if active:
        return PHASE_TRAINING
    if suspended:
        return PHASE_SUSPENDED
    if last_failed:
        return PHASE_FAILED
    return PHASE_WATCHING


def pending_summary(changes: Mapping[str, int], threshold: int) -> tuple[str, str, int]:
    """("143/200", label, 143) for the most-changed label (ties: the smallest name)."""
    if not changes:
        return f"0/{threshold}", "", 0
    label, n = min(changes.items(), key=lambda item: (-item[1], item[0]))
    return f"{n}/{threshold}", label, n


def labels_patch(
    counts: Mapping[str, LabelCounts], previous: Mapping[str, Any] | None, limit: int
) -> dict[str, Any]:
    """status.labels as a merge patch: current labels (most changed first, at most `limit`),
    and None for labels shown before but no longer present."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1].changes, -kv[1].objects, kv[0]))
    shown = {label: c.as_status() for label, c in ranked[:limit]}
    patch: dict[str, Any] = {label: None for label in (previous or {}) if label not in shown}
    patch.update(shown)
    return patch


@dataclass
class Conditions:
    """Conditions keyed by type, preserving lastTransitionTime across unchanged statuses.

    The one condition writer: the watch's `status.conditions` and the rollout's
    `status.serving.conditions` both go through it, each condition with the
    `observedGeneration` of the watch it was computed from.
    """

    items: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_status(cls, conditions: Sequence[Mapping[str, Any]] | None) -> Conditions:
        return cls(
            {
                str(c.get("type")): dict(c)
                for c in conditions or []
                if isinstance(c, Mapping) and c.get("type")
            }
        )

    def set(
        self, kind: str, status: bool, reason: str, message: str, *, now: str, generation: int
    ) -> bool:
        """Set one condition; True when anything visible changed."""
        text = "True" if status else "False"
        old = self.items.get(kind)
        transition = (
            now
            if old is None or old.get("status") != text
            else old.get("lastTransitionTime") or now
        )
        new = {
            "type": kind,
            "status": text,
            "reason": reason,
            "message": message[:1000],
            "lastTransitionTime": transition,
            "observedGeneration": generation,
        }
        changed = old != new
        self.items[kind] = new
        return changed

    def get(self, kind: str) -> dict[str, Any] | None:
        return self.items.get(kind)

    def to_status(self) -> list[dict[str, Any]]:
        order = {COND_READY: 0, COND_SOURCE_READY: 1, COND_TRAINING: 2}
        return [self.items[k] for k in sorted(self.items, key=lambda k: (order.get(k, 9), k))]
