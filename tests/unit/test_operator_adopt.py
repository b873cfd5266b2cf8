"""operator decisions/adopt.py: whose Job it is, what a missing one means, label adoption, pruning."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubetrain_operator import jobspec
from kubetrain_operator.decisions.adopt import (
    Found,
    active_run_of,
    adopt_by_labels,
    classify,
    lost_outcome,
    owned,
    prunable,
)
from kubetrain_operator.outcome import RunState
from kubetrain_operator.spec import parse_watch
from kubetrain_operator.status import ActiveRun, Durable, LastRun

from tests.support.worker_fakes import watch_body

SPEC = parse_watch(watch_body("w", uid="uid-w", generation=5))
IDS = {"watch": "w", "uid": "uid-w"}


def job(run: int, *, state: str = "", spec: Any = SPEC, reason: str = "changes") -> dict[str, Any]:
    doc = jobspec.build_job(
        spec,
        run=run,
        manifest_key=f"k{run}",
        dataset_digest=f"sha256:d{run}",
        trigger_reason=reason,
        default_image="img",
        default_mlflow_uri="http://mlflow",
    )
    doc["metadata"]["creationTimestamp"] = f"2026-01-0{run}T00:00:00Z"
    if state:
        doc["status"] = {"conditions": [{"type": state, "status": "True"}]}
    return doc


def foreign(doc: dict[str, Any]) -> dict[str, Any]:
    other = copy.deepcopy(doc)
    other["metadata"]["ownerReferences"][0]["uid"] = "uid-of-a-deleted-watch"
    return other


def test_owned_needs_the_label_and_the_owner_uid() -> None:
    ours = job(1)
    assert owned(ours, **IDS)
    assert not owned(foreign(ours), **IDS)
    unlabelled = copy.deepcopy(ours)
    del unlabelled["metadata"]["labels"][jobspec.LABEL_WATCH]
    assert not owned(unlabelled, **IDS)
    orphan = copy.deepcopy(ours)
    orphan["metadata"]["ownerReferences"] = []
    assert not owned(orphan, **IDS)
    assert not owned({}, **IDS)


def test_classify_the_job_of_the_active_run() -> None:
    pending = ActiveRun("w-train-1", 1, "t", "why", "k1", "sha256:d1", 5, job_created=False)
    created = ActiveRun("w-train-1", 1, "t", "why", "k1", "sha256:d1", 5, job_created=True)
    assert classify(None, pending, **IDS) is Found.MISSING  # crash window: create it
    assert classify(None, created, **IDS) is Found.DELETED
    assert classify(job(1), pending, **IDS) is Found.OURS
    assert classify(job(1), created, **IDS) is Found.OURS
    assert classify(foreign(job(1)), created, **IDS) is Found.FOREIGN
    assert classify(foreign(job(1)), pending, **IDS) is Found.FOREIGN

    deleted = lost_outcome(Found.DELETED, created)
    assert (deleted.state, deleted.reason) == (RunState.FAILED, "JobDeleted")
    assert deleted.message == "Job w-train-1 was deleted before it finished"
    taken = lost_outcome(Found.FOREIGN, created)
    assert (taken.state, taken.reason) == (RunState.FAILED, "JobNotOwned")
    assert taken.message == "Job w-train-1 does not belong to this watch"
    for alive in (Found.OURS, Found.MISSING):
        with pytest.raises(ValueError, match="not lost"):
            lost_outcome(alive, created)


def test_active_run_of_reads_back_what_build_job_wrote() -> None:
    assert active_run_of(job(2, reason="changes over 2: 3=5"), 2) == ActiveRun(
        job_name="w-train-2",
        run=2,
        start_time="2026-01-02T00:00:00Z",
        trigger_reason="changes over 2: 3=5",
        manifest_key="k2",
        dataset_digest="sha256:d2",
        generation=5,
        job_created=True,
    )


def test_status_lost_the_newest_job_becomes_the_active_run() -> None:
    adoption = adopt_by_labels(Durable(), [job(1, state="Complete"), job(2)], **IDS)
    assert adoption is not None and adoption.job_name == "w-train-2"
    assert adoption.durable.run_counter == 2
    assert adoption.durable.active_run == active_run_of(job(2), 2)


def test_a_known_active_run_is_kept_and_only_the_counter_moves() -> None:
    active = ActiveRun("w-train-1", 1, "t", "why", "k1", "sha256:d1", 5, job_created=False)
    adoption = adopt_by_labels(Durable(run_counter=1, active_run=active), [job(1), job(2)], **IDS)
    assert adoption is not None and adoption.job_name == "w-train-2"
    assert adoption.durable == Durable(run_counter=2, active_run=active)


def test_a_finished_run_is_not_adopted_again() -> None:
    last = LastRun("w-train-2", 2, "Succeeded", "Completed", "ok")
    # Counter restored from an old copy of the status: raised, the finished run stays finished.
    adoption = adopt_by_labels(
        Durable(run_counter=1, last_run=last), [job(2, state="Complete")], **IDS
    )
    assert adoption is not None
    assert adoption.durable == Durable(run_counter=2, last_run=last)


def test_nothing_to_adopt() -> None:
    in_sync = Durable(run_counter=2, last_run=LastRun("w-train-2", 2, "Failed", "x", "y"))
    assert adopt_by_labels(in_sync, [job(1), job(2)], **IDS) is None
    assert adopt_by_labels(Durable(), [], **IDS) is None
    other_watch = job(3, spec=parse_watch(watch_body("w2", uid="uid-w")))
    misnamed = copy.deepcopy(job(4))
    misnamed["metadata"]["name"] = "w-train-latest"
    assert adopt_by_labels(Durable(), [foreign(job(5)), other_watch, misnamed], **IDS) is None


def test_prunable_keeps_the_newest_finished_jobs_and_never_a_running_one() -> None:
    jobs = [
        job(1, state="Complete"),
        job(4, state="Failed"),
        job(2, state="Complete"),
        job(3, state="Complete"),
        job(5),  # running
        foreign(job(6, state="Complete")),
    ]
    assert prunable(jobs, **IDS, keep=2) == ["w-train-2", "w-train-1"]
    assert prunable(jobs, **IDS, keep=0) == ["w-train-4", "w-train-3", "w-train-2", "w-train-1"]
    assert prunable(jobs, **IDS, keep=4) == []
