"""Which Jobs are this watch's, and what the status must say about them. Pure.

Job names are deterministic (`<watch>-train-<n>`, n = `status.runCounter`), so after a crash
the Jobs themselves tell what happened; the worker (`runs.py`) lists or reads them and these
functions decide:

- `owned`: a Job is ours only with our watch label *and* an ownerReference to this watch's
  uid; a same-named Job of someone else (or of a deleted and re-created watch) is never
  adopted.
- `classify`: the Job named by `status.activeRun`: missing and never confirmed created ->
  create it (the crash window between the status write and the creation; creating the same
  name again is idempotent); missing although created -> the run failed (`JobDeleted`);
  not ours -> the run failed (`JobNotOwned`); ours -> read its outcome.
- `adopt_by_labels` (session start): the newest Job found by labels raises `runCounter`
  past a status that was lost or restored from an old copy, and becomes the active run when
  the status knows no newer run, so no run is lost and no Job name is used twice.
- `prunable`: finished Jobs beyond `jobHistoryLimit`, oldest first out.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubetrain_operator import jobspec
from kubetrain_operator.outcome import RunOutcome, RunState, interpret
from kubetrain_operator.status import ActiveRun, Durable


def owned(job: Mapping[str, Any], *, watch: str, uid: str) -> bool:
    meta = job.get("metadata") or {}
    if (meta.get("labels") or {}).get(jobspec.LABEL_WATCH) != watch:
        return False
    return any(ref.get("uid") == uid for ref in meta.get("ownerReferences") or [])


class Found(enum.Enum):
    MISSING = "Missing"
    """No Job of that name and none confirmed: create it (or, after a 409, retry later)."""
    DELETED = "Deleted"
    """No Job of that name although its creation was confirmed."""
    FOREIGN = "Foreign"
    """A Job of that name that is not this watch's."""
    OURS = "Ours"


def classify(job: Mapping[str, Any] | None, active: ActiveRun, *, watch: str, uid: str) -> Found:
    if job is None:
        return Found.DELETED if active.job_created else Found.MISSING
    return Found.OURS if owned(job, watch=watch, uid=uid) else Found.FOREIGN


def lost_outcome(found: Found, active: ActiveRun) -> RunOutcome:
    """The failed outcome of a run whose Job is gone (DELETED) or not ours (FOREIGN)."""
    if found is Found.DELETED:
        return RunOutcome(
            RunState.FAILED, "JobDeleted", f"Job {active.job_name} was deleted before it finished"
        )
    if found is Found.FOREIGN:
        return RunOutcome(
            RunState.FAILED,
            "JobNotOwned",
            f"Job {active.job_name} does not belong to this watch",
        )
    raise ValueError(f"Job {active.job_name} is {found.value}: its run is not lost")


@dataclass(frozen=True)
class LabelAdoption:
    durable: Durable
    job_name: str
    """The newest of our Jobs, named in the JobAdopted Event."""


def _numbered(
    jobs: Sequence[Mapping[str, Any]], *, watch: str, uid: str
) -> dict[int, Mapping[str, Any]]:
    numbered: dict[int, Mapping[str, Any]] = {}
    for job in jobs:
        if not owned(job, watch=watch, uid=uid):
            continue
        n = jobspec.run_number(str(job["metadata"]["name"]), watch)
        if n is not None:
            numbered[n] = job
    return numbered


def active_run_of(job: Mapping[str, Any], run: int) -> ActiveRun:
    """The activeRun a Job stands for, from the annotations `jobspec.build_job` wrote."""
    meta = job["metadata"]
    ann = meta.get("annotations") or {}
    return ActiveRun(
        job_name=meta["name"],
        run=run,
        start_time=str(meta.get("creationTimestamp") or ""),
        trigger_reason=str(ann.get(jobspec.ANN_REASON) or ""),
        manifest_key=str(ann.get(jobspec.ANN_MANIFEST_KEY) or ""),
        dataset_digest=str(ann.get(jobspec.ANN_DIGEST) or ""),
        generation=int(ann.get(jobspec.ANN_GENERATION) or 0),
        job_created=True,
    )


def adopt_by_labels(
    durable: Durable, jobs: Sequence[Mapping[str, Any]], *, watch: str, uid: str
) -> LabelAdoption | None:
    """The state reconciled with the watch's Jobs (listed by labels); None: nothing to do."""
    numbered = _numbered(jobs, watch=watch, uid=uid)
    if not numbered:
        return None
    newest = max(numbered)
    d = durable
    changed = False
    if newest > d.run_counter:
        d = d.with_(run_counter=newest)
        changed = True
    last_run = d.last_run.run if d.last_run else 0
    if d.active_run is None and newest > last_run:
        d = d.with_(active_run=active_run_of(numbered[newest], newest))
        changed = True
    if not changed:
        return None
    return LabelAdoption(d, str(numbered[newest]["metadata"]["name"]))


def prunable(jobs: Sequence[Mapping[str, Any]], *, watch: str, uid: str, keep: int) -> list[str]:
    """Names of our finished Jobs beyond the newest `keep` (by run number), newest first."""
    finished = [
        j
        for j in jobs
        if owned(j, watch=watch, uid=uid) and interpret(j, []).state is not RunState.RUNNING
    ]
    finished.sort(key=lambda j: jobspec.run_number(j["metadata"]["name"], watch) or 0, reverse=True)
    return [str(j["metadata"]["name"]) for j in finished[keep:]]
