"""operator worker.py + detection.py + runs.py against fakes of `Kube` and `ObjectStore`.

The worker's branches without the platform: launch then finish, a crash at each step of a
launch followed by a restart, Jobs found by labels, source outages, failed and lost runs,
status write failures, the rollout hook. `tests/support/worker_fakes.py` holds the fakes; a
"restart" is a new worker (a new operator process) over the same fakes.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import kubetrain_contract as contract
import pytest
from kubetrain_operator import detection, hooks, jobspec
from kubetrain_operator.context import Restart
from kubetrain_operator.kube import KubeError
from kubetrain_operator.objectstore import SourceError
from kubetrain_operator.settings import OperatorSettings
from kubetrain_operator.spec import parse_watch
from kubetrain_operator.worker import WatchWorker

from tests.support.worker_fakes import (
    NAMESPACE,
    FakeRollout,
    FakeStore,
    Stopped,
    WorkerKube,
    job_path,
    result_message,
    runtime,
    watch_body,
    watch_path,
)

STATUS_PATH = watch_path(NAMESPACE, "w") + "/status"


class Crash(BaseException):
    """The operator process dies (nothing in the worker catches a BaseException)."""


class Harness:
    """One operator process with one watch `w` over shared fakes."""

    def __init__(
        self,
        kube: WorkerKube | None = None,
        store: FakeStore | None = None,
        *,
        body: dict[str, Any] | None = None,
        waits: int = 1_000_000,
        **settings: Any,
    ) -> None:
        self.kube = kube or WorkerKube()
        self.store = store or FakeStore()
        if watch_path(NAMESPACE, "w") not in self.kube.objects:
            self.kube.add_watch(body or watch_body())
        self.settings = settings
        self.rt = runtime(self.kube, **settings)
        self.rollout: FakeRollout = self.rt.rollout  # type: ignore[assignment]
        self.body = self.kube.get_watch(NAMESPACE, "w")  # kopf's live view of the object
        self.stopped = Stopped(waits)
        self.opened = 0
        self.worker = WatchWorker(
            self.rt,
            namespace=NAMESPACE,
            name="w",
            body=self.body,
            stopped=self.stopped,
            open_source=self._open,
        )

    def _open(self, kube: Any, spec: Any, settings: OperatorSettings) -> tuple[Any, Any]:
        self.opened += 1
        return self.store, None

    def restart(self, **settings: Any) -> Harness:
        return Harness(self.kube, self.store, **{**self.settings, **settings})

    def start(self) -> Harness:
        self.worker.start_session()
        return self

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            self.worker.tick(time.time())

    def upload(self, *keys: str) -> None:
        """Objects written to the bucket and, once the session routes them, notified."""
        records = []
        for key in keys:
            self.store.upload(key)
            records.append(
                {
                    "eventName": "s3:ObjectCreated:Put",
                    "s3": {
                        "bucket": {"name": "data"},
                        "object": {"key": key, "eTag": self.store.objects[key]},
                    },
                }
            )
        assert self.rt.webhook is not None
        self.rt.webhook.dispatch({"Records": records})

    def status(self) -> dict[str, Any]:
        return self.kube.status(NAMESPACE, "w")

    def reasons(self) -> list[str]:
        return self.kube.reasons()

    def finish(self, run: int = 1, *, ok: bool = True, **result: Any) -> None:
        fields = {"modelName": "w", "modelVersion": str(run), **result}
        if ok:
            message = result_message(**fields)
        else:
            message = result_message(status="failed", reason="diverged", **fields)
        self.kube.finish_job(
            NAMESPACE, f"w-train-{run}", exit_code=0 if ok else 1, message=message, complete=ok
        )


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def next_second() -> None:
    time.sleep(1.01 - time.time() % 1)


def launched(h: Harness, *keys: str) -> None:
    h.upload(*keys)
    h.tick()
    assert h.kube.job_names(NAMESPACE) == [f"w-train-{h.status()['runCounter']}"]


# -- session start ----------------------------------------------------------------------
def test_session_start_lists_the_bucket_subscribes_and_reports() -> None:
    h = Harness()
    for key in ("3/a.png", "3/b.png", "7/c.png", "7/notes.txt"):
        h.store.upload(key)
    h.start()
    status = h.status()
    assert status["phase"] == "Watching" and status["notifications"] == "Connected"
    assert status["totalObjects"] == 3 and status["pendingChanges"] == 3
    assert status["pendingSummary"] == "2/2" and status["observedGeneration"] == 1
    assert conditions(status)["SourceReady"] == ("True", "Notified")
    assert status["runCounter"] == 0 and "activeRun" not in status
    assert h.reasons() == ["WatchReady"]
    assert h.kube.events[0].message == (
        "watching s3://data/ (3 objects, baseline none, notifications Webhook)"
    )
    assert h.store.subscribed == {OperatorSettings().webhook_arn}
    assert h.kube.job_names(NAMESPACE) == []


def test_open_source_names_the_credentials_problem() -> None:
    kube = WorkerKube()
    spec = parse_watch(watch_body())
    with pytest.raises(SourceError) as missing:
        detection.open_source(kube, spec, OperatorSettings())  # type: ignore[arg-type]
    assert missing.value.reason == "CredentialsNotFound" and "'creds'" in missing.value.message
    kube.fail_next[("GET", f"/api/v1/namespaces/{NAMESPACE}/secrets/creds")] = [
        KubeError(403, "Forbidden", "no")
    ]
    with pytest.raises(SourceError) as forbidden:
        detection.open_source(kube, spec, OperatorSettings())  # type: ignore[arg-type]
    assert forbidden.value.reason == "CredentialsUnreadable"


# -- launch and finish ------------------------------------------------------------------
def test_launch_then_success_moves_the_baseline_and_rolls_out_once() -> None:
    h = Harness().start()
    h.upload("3/a.png", "3/b.png")
    h.tick()
    assert h.kube.job_names(NAMESPACE) == []  # 2 changes: not more than the threshold
    h.upload("3/c.png")
    h.tick()

    status = h.status()
    active = status["activeRun"]
    assert (status["runCounter"], status["phase"]) == (1, "Training")
    assert active["jobName"] == "w-train-1" and active["jobCreated"] is True
    manifest = contract.SnapshotManifest.from_json(
        h.store.manifests[active["manifestKey"]].encode()
    )
    assert sorted(manifest.objects) == ["3/a.png", "3/b.png", "3/c.png"]
    assert active["datasetDigest"] == manifest.digest
    assert h.reasons() == ["WatchReady", "ThresholdCrossed", "JobLaunched"]
    # The Job is exactly jobspec's, for the run the status recorded.
    job = h.kube.get_job(NAMESPACE, "w-train-1")
    assert job is not None
    expected = jobspec.build_job(
        parse_watch(h.body),
        run=1,
        manifest_key=active["manifestKey"],
        dataset_digest=manifest.digest,
        trigger_reason=active["triggerReason"],
        default_image=h.rt.settings.default_image,
        default_mlflow_uri=h.rt.settings.default_mlflow_uri,
        trainer_uid=h.rt.settings.trainer_uid,
    )
    assert job["spec"] == expected["spec"]
    assert {
        k: job["metadata"][k] for k in ("name", "labels", "annotations", "ownerReferences")
    } == {k: expected["metadata"][k] for k in ("name", "labels", "annotations", "ownerReferences")}
    # Status before the side effect: activeRun (not created) -> POST -> jobCreated=true.
    post = h.kube.writes.index(("POST", job_path(NAMESPACE, "w-train-1")))
    patches_before = h.kube.writes[:post].count(("PATCH", STATUS_PATH))
    assert h.kube.status_patches[patches_before - 1]["activeRun"]["jobCreated"] is False
    assert h.kube.status_patches[patches_before]["activeRun"]["jobCreated"] is True

    h.tick(2)
    assert h.kube.job_names(NAMESPACE) == ["w-train-1"]  # one run at a time
    h.upload("5/during-the-run.png")
    h.finish(1, promoted=True, accuracy=0.93, bentoUri="s3://data/.kubetrain/bentos/w-1")
    h.tick()

    status = h.status()
    assert "activeRun" not in status and status["phase"] == "Watching"
    last = status["lastRun"]
    assert (last["result"], last["reason"], last["modelVersion"]) == ("Succeeded", "Completed", "1")
    assert last["promoted"] is True and last["rolloutPending"] is False
    assert status["baseline"]["digest"] == manifest.digest and status["baseline"]["objects"] == 3
    assert status["model"] == "w:1" and status["serving"] == {"phase": "Serving"}
    # Counted against the new baseline: only the change made during the run is pending.
    assert (status["pendingChanges"], status["pendingLabel"]) == (1, "5")
    assert [r.modelVersion for r in h.rollout.promoted_calls] == ["1"]
    assert h.rollout.promoted_calls[0].bentoUri == "s3://data/.kubetrain/bentos/w-1"
    h.tick(3)
    assert len(h.rollout.promoted_calls) == 1
    assert h.reasons().count("TrainingSucceeded") == 1


def test_failed_run_keeps_the_baseline_and_waits_for_new_changes() -> None:
    h = Harness().start()
    launched(h, "3/a.png", "3/b.png", "3/c.png")
    next_second()  # finishTime has seconds precision: the changes must be older than it
    h.finish(1, ok=False)
    h.tick()
    status = h.status()
    assert status["phase"] == "Failed" and "baseline" not in status
    assert status["lastRun"]["result"] == "Failed"
    assert "diverged" in status["lastRun"]["message"]
    assert conditions(status)["Ready"] == ("False", "TrainingFailed")
    assert h.reasons()[-1] == "TrainingFailed"
    h.tick(3)
    assert h.kube.job_names(NAMESPACE) == ["w-train-1"]  # the same changes do not relaunch
    h.upload("3/d.png")
    h.tick()
    assert h.kube.job_names(NAMESPACE) == ["w-train-1", "w-train-2"]
    assert h.status()["activeRun"]["run"] == 2


def test_job_deleted_during_the_run_fails_it() -> None:
    h = Harness().start()
    launched(h, "3/a.png", "3/b.png", "3/c.png")
    h.kube.delete_job(NAMESPACE, "w-train-1")
    h.tick()
    last = h.status()["lastRun"]
    assert (last["result"], last["reason"]) == ("Failed", "JobDeleted")
    assert h.reasons()[-1] == "TrainingFailed"


def test_a_job_name_taken_by_someone_else_is_skipped() -> None:
    h = Harness().start()
    h.kube.put(
        job_path(NAMESPACE, "w-train-1"),
        {"metadata": {"name": "w-train-1", "labels": {jobspec.LABEL_WATCH: "w"}}},
    )
    h.upload("3/a.png", "3/b.png", "3/c.png")
    h.tick()
    assert "JobNameTaken" in h.reasons()
    status = h.status()
    assert status["runCounter"] == 1 and "activeRun" not in status
    h.tick()
    assert h.status()["activeRun"]["jobName"] == "w-train-2"


def test_a_job_gone_between_the_conflict_and_the_read_is_created_next_tick() -> None:
    h = Harness().start()
    h.kube.fail_next[("POST", job_path(NAMESPACE, "w-train-1"))] = [
        KubeError(409, "AlreadyExists", "jobs w-train-1 already exists")
    ]
    h.upload("3/a.png", "3/b.png", "3/c.png")
    h.tick()
    assert h.kube.job_names(NAMESPACE) == []
    assert h.status()["activeRun"]["jobCreated"] is False
    assert "JobLaunched" not in h.reasons()
    h.tick()
    assert h.kube.job_names(NAMESPACE) == ["w-train-1"]
    assert h.status()["activeRun"]["jobCreated"] is True and h.status()["runCounter"] == 1


def test_old_jobs_are_pruned_to_the_history_limit() -> None:
    h = Harness(body=watch_body(training={"jobHistoryLimit": 1})).start()
    launched(h, "3/a.png", "3/b.png", "3/c.png")
    h.finish(1)
    h.tick()
    h.upload("4/a.png", "4/b.png", "4/c.png")
    h.tick()
    assert h.kube.job_names(NAMESPACE) == ["w-train-1", "w-train-2"]  # the running one stays
    h.finish(2)
    h.tick()
    assert h.kube.job_names(NAMESPACE) == ["w-train-2"]


# -- crashes and restarts ---------------------------------------------------------------
@pytest.mark.parametrize("point", ["manifest", "status", "job"])
def test_crash_at_each_step_of_a_launch_ends_with_exactly_one_job(point: str) -> None:
    h = Harness().start()

    def fault(at: str) -> None:
        if at == point:
            raise Crash(at)

    h.rt.fault = fault  # type: ignore[method-assign]
    with pytest.raises(Crash):
        launched(h, "3/a.png", "3/b.png", "3/c.png")
    after_crash = h.status()
    if point == "manifest":
        assert "activeRun" not in after_crash and after_crash["runCounter"] == 0
    else:
        assert after_crash["activeRun"]["jobCreated"] is False
    assert h.kube.job_names(NAMESPACE) == (["w-train-1"] if point == "job" else [])

    again = h.restart().start()
    again.tick(3)
    status = again.status()
    assert h.kube.job_names(NAMESPACE) == ["w-train-1"]
    assert status["runCounter"] == 1 and status["activeRun"]["jobCreated"] is True
    assert len(h.store.manifests) == 1  # content-addressed: written again under the same key
    assert h.reasons().count("JobAdopted") == (1 if point == "job" else 0)
    again.finish(1)
    again.tick()
    assert again.status()["lastRun"]["result"] == "Succeeded"


def test_job_found_by_labels_when_the_status_is_lost() -> None:
    h = Harness().start()
    launched(h, "3/a.png", "3/b.png", "3/c.png")
    h.kube.objects[watch_path(NAMESPACE, "w")]["status"] = {}
    again = h.restart().start()
    status = again.status()
    assert status["runCounter"] == 1 and status["activeRun"]["jobName"] == "w-train-1"
    assert status["activeRun"]["manifestKey"] in h.store.manifests
    assert h.kube.events[-2].reason == "JobAdopted"
    assert h.kube.events[-2].message == "adopted Job w-train-1 found by its labels"
    again.tick(3)
    assert h.kube.job_names(NAMESPACE) == ["w-train-1"]
    again.finish(1)
    again.tick()
    assert again.status()["lastRun"]["result"] == "Succeeded"
    assert again.status()["baseline"]["objects"] == 3


def test_a_lost_baseline_manifest_counts_everything_again() -> None:
    h = Harness().start()
    launched(h, "3/a.png", "3/b.png", "3/c.png")
    h.finish(1)
    h.tick()
    assert h.status()["pendingChanges"] == 0
    h.store.manifests.clear()
    again = h.restart().start()
    assert "BaselineLost" in again.reasons()
    assert again.status()["pendingChanges"] == 3


# -- the source -------------------------------------------------------------------------
def test_source_down_at_start_is_reported_once_and_retried_until_back() -> None:
    h = Harness(waits=3)
    h.store.upload("3/a.png")
    h.store.down = SourceError("EndpointUnreachable", "http://minio.test:9000: refused")
    h.worker.run()
    status = h.status()
    assert status["phase"] == "Pending" and status["notifications"] == "Disconnected"
    assert conditions(status)["SourceReady"] == ("False", "EndpointUnreachable")
    assert conditions(status)["Ready"] == ("False", "SourceNotReady")
    assert h.reasons() == ["EndpointUnreachable"]  # one Warning per reason, not per attempt
    assert h.kube.events[0].type == "Warning" and h.opened == 3
    assert h.rt.workers == {}  # forgotten by the liveness probe when the daemon ends

    h.store.down = None
    h.stopped.left = 2
    h.worker.run()
    status = h.status()
    assert status["phase"] == "Watching" and status["totalObjects"] == 1
    assert h.reasons() == ["EndpointUnreachable", "WatchReady"]


def test_an_outage_mid_session_is_reported_and_repaired_by_a_listing() -> None:
    h = Harness(source_probe_seconds=0.0, source_settle_seconds=0.0).start()
    assert h.worker.detection is not None
    h.store.down = SourceError("ListingFailed", "listing s3://data/: refused")
    h.tick()  # the probe notices: notifications may be lost from now on
    assert h.status()["notifications"] == "Disconnected"
    h.worker.detection.next_resync = 0.0
    h.tick()
    status = h.status()
    assert status["phase"] == "Pending"
    assert conditions(status)["SourceReady"] == ("False", "ListingFailed")
    assert h.reasons() == ["WatchReady", "ListingFailed"]
    h.worker.detection.next_resync = 0.0
    h.tick()  # failing again: no second Event
    assert h.reasons() == ["WatchReady", "ListingFailed"]

    h.store.upload("3/a.png")  # written during the outage: no notification arrives
    h.store.down = None
    h.tick()  # the probe sees it back: re-list now (and once more after the settle time)
    status = h.status()
    assert status["phase"] == "Watching" and status["notifications"] == "Connected"
    assert status["totalObjects"] == 1
    assert h.store.calls.count("iter_listing") == 4  # start, two failed, the repair
    h.tick()
    assert h.store.calls.count("iter_listing") == 5  # after the settle time


def test_a_refresh_notification_stats_the_key() -> None:
    h = Harness().start()
    h.store.upload("3/a.png")
    assert h.rt.webhook is not None
    h.rt.webhook.dispatch(
        {
            "Records": [
                {
                    "eventName": "s3:ObjectCreated:Copy",
                    "s3": {"bucket": {"name": "data"}, "object": {"key": "3/a.png"}},
                }
            ]
        }
    )
    h.tick()
    assert h.status()["pendingChanges"] == 1 and "stat_etag" in h.store.calls


def test_a_source_change_restarts_the_session_other_changes_apply_in_place() -> None:
    h = Harness().start()
    h.body["metadata"]["generation"] = 2
    h.body["spec"]["trigger"]["threshold"] = 5
    h.tick()
    assert h.status()["observedGeneration"] == 2
    assert h.status()["pendingSummary"] == "0/5"
    h.body["metadata"]["generation"] = 3
    h.body["spec"]["source"]["bucket"] = "other"
    with pytest.raises(Restart):
        h.tick()


def test_an_invalid_spec_is_reported_and_waits_for_a_new_generation() -> None:
    body = watch_body(trigger={"threshold": 0})
    h = Harness(body=body, waits=2)
    h.worker.run()
    status = h.status()
    assert status["phase"] == "Pending"
    assert conditions(status)["Ready"] == ("False", "InvalidSpec")
    assert h.reasons() == ["InvalidSpec"] and h.opened == 0


# -- status writes ----------------------------------------------------------------------
def test_a_failed_status_write_before_the_launch_creates_nothing() -> None:
    h = Harness().start()
    h.kube.fail_next[("PATCH", STATUS_PATH)] = [KubeError(500, "InternalError", "etcd")]
    h.upload("3/a.png", "3/b.png", "3/c.png")
    h.tick()
    assert h.kube.job_names(NAMESPACE) == []
    assert "activeRun" not in h.status() and h.status()["runCounter"] == 0
    h.tick()
    assert h.kube.job_names(NAMESPACE) == ["w-train-1"]
    assert h.status()["runCounter"] == 1


def test_a_failed_status_write_at_the_finish_is_retried_with_the_old_baseline() -> None:
    h = Harness().start()
    launched(h, "3/a.png", "3/b.png", "3/c.png")
    h.finish(1)
    h.kube.fail_next[("PATCH", STATUS_PATH)] = [KubeError(500, "InternalError", "etcd")]
    h.tick()
    h.worker.patch_status(force=True)
    status = h.status()
    assert status["activeRun"]["jobName"] == "w-train-1" and "lastRun" not in status
    assert status["pendingChanges"] == 3  # the in-memory baseline switch was undone
    assert "TrainingSucceeded" not in h.reasons()
    h.tick()
    assert h.status()["lastRun"]["result"] == "Succeeded"
    assert h.status()["pendingChanges"] == 0
    assert h.reasons().count("TrainingSucceeded") == 1


def test_the_loop_gives_up_when_the_watch_is_gone() -> None:
    h = Harness().start()
    h.kube.fail_next[("PATCH", STATUS_PATH)] = [KubeError(404, "NotFound", "gone")]
    h.worker.ctx.dirty = True
    with pytest.raises(KubeError):
        h.tick()


# -- the rollout hook -------------------------------------------------------------------
def promoted_run(h: Harness) -> None:
    launched(h, "3/a.png", "3/b.png", "3/c.png")
    h.finish(1, promoted=True)


def test_transient_rollout_errors_are_retried_until_the_hook_returns() -> None:
    h = Harness(rollout=replace(OperatorSettings().rollout, retry_seconds=0.0)).start()
    h.rollout.fail = RuntimeError("apiserver unavailable")
    promoted_run(h)
    h.tick()
    assert h.status()["lastRun"]["rolloutPending"] is True
    assert h.reasons()[-1] == "RolloutRetrying"
    h.rollout.fail = None
    h.tick()
    assert h.status()["lastRun"]["rolloutPending"] is False
    assert len(h.rollout.promoted_calls) == 2

    # After a restart nothing is pending: the hook is not called again.
    again = h.restart().start()
    again.tick(2)
    assert again.rollout.promoted_calls == []


def test_a_permanent_rollout_error_is_reported_once_and_not_retried() -> None:
    h = Harness().start()
    h.rollout.fail = hooks.Permanent("spec.serving.port: must be 1..65535")
    promoted_run(h)
    h.tick(3)
    assert h.status()["lastRun"]["rolloutPending"] is False
    assert h.reasons().count("RolloutFailed") == 1 and len(h.rollout.promoted_calls) == 1
    assert "serving" not in h.status()


def test_a_pending_rollout_is_resumed_after_a_restart() -> None:
    h = Harness().start()
    h.rollout.fail = Crash("killed inside the hook")
    promoted_run(h)
    with pytest.raises(Crash):
        h.tick()
    assert h.status()["lastRun"]["rolloutPending"] is True  # recorded before the hook
    again = h.restart().start()
    again.tick()
    assert [r.modelVersion for r in again.rollout.promoted_calls] == ["1"]
    assert again.status()["lastRun"]["rolloutPending"] is False
