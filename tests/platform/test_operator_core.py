"""Operator core against the real apiserver, Job controller and MinIO.

Counting semantics, threshold, resync-only detection, Job launch and completion (success and
failure), changes during a run. The training Jobs run the scripted stub image on the real
node (tests/support/stub.py): the test ends a run with the exit code and termination message
it chooses, and the real Job controller completes or fails the Job.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kubetrain_operator.kube import Kube

from tests.support.operator import (
    create_watch,
    event_reasons,
    get_status,
    jobs_of,
    label_counts,
    manifest_from_bucket,
    png_bytes,
    put,
    put_many,
    result_message,
    wait_for,
    watch_body,
)
from tests.support.stub import StubWorkload

pytestmark = pytest.mark.platform


def wait_label(
    k8s: Kube, ns: str, name: str, label: str, changes: int, timeout: float = 30
) -> dict[str, int]:
    return dict(
        wait_for(
            lambda: (c := label_counts(k8s, ns, name, label)).get("changes") == changes and c,
            timeout,
            f"status.labels[{label}].changes == {changes}",
        )
    )


def assert_no_job_for(k8s: Kube, ns: str, name: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert jobs_of(k8s, ns, name) == [], (
            "a Job was created although no label crossed the threshold"
        )
        time.sleep(0.25)


def test_threshold_is_strictly_more_than_200(
    k8s: Kube, namespace: str, s3: Any, source: dict[str, str], operators: Any
) -> None:
    op = operators()
    create_watch(k8s, namespace, watch_body("digits", **source))
    wait_for(
        lambda: get_status(k8s, namespace, "digits").get("phase") == "Watching",
        30,
        "phase Watching",
    )
    put_many(s3, source["bucket"], [(f"7/{i:04d}.png", png_bytes(f"7-{i}")) for i in range(200)])
    counts = wait_label(k8s, namespace, "digits", "7", 200)
    assert counts == {"objects": 200, "added": 200, "modified": 0, "deleted": 0, "changes": 200}
    assert get_status(k8s, namespace, "digits")["pendingSummary"] == "200/200"
    assert_no_job_for(k8s, namespace, "digits", 3)

    t0 = time.monotonic()
    put(s3, source["bucket"], "7/0200.png", png_bytes("7-200"))
    jobs = wait_for(lambda: jobs_of(k8s, namespace, "digits"), 10, "a training Job")
    latency = time.monotonic() - t0
    assert [j["metadata"]["name"] for j in jobs] == ["digits-train-1"]
    assert latency < 10
    job = jobs[0]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["kubetrain-train"]
    manifest_uri = container["args"][1]
    assert manifest_uri.startswith(
        f"s3://{source['bucket']}/.kubetrain/snapshots/{namespace}-digits/"
    )
    manifest = manifest_from_bucket(s3, source["bucket"], manifest_uri.split("/", 3)[3])
    assert len(manifest.objects) == 201 and manifest.watch == f"{namespace}/digits"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "DatasetWatch"

    status = wait_for(
        lambda: (
            (s := get_status(k8s, namespace, "digits")).get("activeRun", {}).get("jobCreated") and s
        ),
        10,
        "activeRun.jobCreated",
    )
    assert status["phase"] == "Training" and status["activeRun"]["jobName"] == "digits-train-1"
    assert status["runCounter"] == 1
    assert "7=201" in status["activeRun"]["triggerReason"]
    wait_for(
        lambda: (
            {"ThresholdCrossed", "JobLaunched", "WatchReady"}
            <= set(event_reasons(k8s, namespace, "digits"))
        ),
        15,
        "Events",
    )
    # More changes during the run: still exactly one Job.
    put_many(s3, source["bucket"], [(f"7/x{i}.png", png_bytes(f"x{i}")) for i in range(20)])
    wait_label(k8s, namespace, "digits", "7", 221)
    assert len(jobs_of(k8s, namespace, "digits")) == 1
    # Prometheus: the tally, notifications, the run and the crossing-to-Job latency.
    text = op.metrics()
    sel = f'namespace="{namespace}",watch="digits"'
    assert f'kubetrain_label_changes{{label="7",{sel}}} 221.0' in text
    assert f'kubetrain_label_objects{{label="7",{sel}}} 221.0' in text
    assert f"kubetrain_runs_started_total{{{sel}}} 1.0" in text
    assert f"kubetrain_trigger_to_job_seconds_count{{{sel}}} 1.0" in text
    assert f"kubetrain_listen_connected{{{sel}}} 1.0" in text
    notified = [
        line for line in text.splitlines() if line.startswith("kubetrain_notifications_total{")
    ]
    assert notified and float(notified[0].split()[-1]) >= 221


def test_adds_overwrites_deletes_count_and_nets(
    k8s: Kube,
    namespace: str,
    s3: Any,
    source: dict[str, str],
    operators: Any,
    stub: StubWorkload,
) -> None:
    bucket = source["bucket"]
    put_many(
        s3,
        bucket,
        [(f"a/{i}.png", png_bytes(f"a{i}")) for i in range(10)]
        + [(f"b/{i}.png", png_bytes(f"b{i}")) for i in range(5)],
    )
    op = operators()
    create_watch(k8s, namespace, watch_body("nets", **source, trigger={"initialTraining": True}))
    # Initial training on the non-empty bucket; complete it so that it becomes the baseline.
    wait_for(lambda: jobs_of(k8s, namespace, "nets"), 20, "the initial training Job")
    stub.finish_job(
        namespace,
        "nets-train-1",
        exit_code=0,
        message=result_message(
            status="succeeded",
            reason="first model",
            modelName="nets",
            modelVersion="1",
            promoted=False,
        ),
        expect="Complete",
    )
    wait_for(
        lambda: (get_status(k8s, namespace, "nets").get("baseline") or {}).get("objects") == 15,
        20,
        "baseline of 15 objects",
    )
    assert label_counts(k8s, namespace, "nets", "a")["changes"] == 0

    put(s3, bucket, "a/new1.png", png_bytes("n1"))  # added
    put(s3, bucket, "a/new2.png", png_bytes("n2"))  # added
    put(s3, bucket, "a/0.png", png_bytes("changed"))  # modified
    put(s3, bucket, "a/1.png", png_bytes("v2"))  # overwritten twice: one change
    put(s3, bucket, "a/1.png", png_bytes("v3"))
    s3.remove_object(bucket, "a/2.png")  # deleted
    put(s3, bucket, "a/tmp.png", png_bytes("tmp"))  # added then deleted: nothing
    s3.remove_object(bucket, "a/tmp.png")
    put(s3, bucket, "a/3.png", png_bytes("a3"))  # identical bytes again: nothing
    put(s3, bucket, "a/notes.txt", b"not included")  # excluded by include=*.png
    counts = wait_label(k8s, namespace, "nets", "a", 5)
    time.sleep(1.5)  # nothing late may change the figures
    assert (
        label_counts(k8s, namespace, "nets", "a")
        == counts
        == {"objects": 11, "added": 2, "modified": 2, "deleted": 1, "changes": 5}
    )
    assert label_counts(k8s, namespace, "nets", "b")["changes"] == 0
    status = get_status(k8s, namespace, "nets")
    assert status["model"] == "nets:1" and status["lastRun"]["result"] == "Succeeded"
    # The same figures after a restart: baseline from the bucket, live state from a listing.
    op.stop()
    operators()
    wait_for(
        lambda: (
            "WatchReady" in event_reasons(k8s, namespace, "nets")
            and get_status(k8s, namespace, "nets")["phase"] == "Watching"
        ),
        30,
        "restarted",
    )
    time.sleep(1)
    assert label_counts(k8s, namespace, "nets", "a") == counts
    assert len(jobs_of(k8s, namespace, "nets")) == 1


def test_150_changes_on_each_of_10_labels_trigger_nothing(
    k8s: Kube, namespace: str, s3: Any, source: dict[str, str], operators: Any
) -> None:
    operators()
    create_watch(k8s, namespace, watch_body("spread", **source))
    wait_for(
        lambda: get_status(k8s, namespace, "spread").get("phase") == "Watching",
        30,
        "phase Watching",
    )
    items = [
        (f"{lab}/{i:03d}.png", png_bytes(f"{lab}-{i}")) for lab in range(10) for i in range(150)
    ]
    put_many(s3, source["bucket"], items, workers=12)
    wait_for(
        lambda: get_status(k8s, namespace, "spread").get("pendingChanges") == 1500,
        60,
        "1500 pending changes",
    )
    status = get_status(k8s, namespace, "spread")
    assert all(status["labels"][str(lab)]["changes"] == 150 for lab in range(10))
    assert status["pendingSummary"] == "150/200"
    assert_no_job_for(k8s, namespace, "spread", 3)


def test_resync_alone_triggers_within_interval(
    k8s: Kube, namespace: str, s3: Any, source: dict[str, str], operators: Any
) -> None:
    operators()
    body = watch_body(
        "polled",
        **source,
        trigger={"threshold": 5},
        detection={"notifications": "None", "resyncInterval": "3s"},
    )
    create_watch(k8s, namespace, body)
    status = wait_for(
        lambda: (s := get_status(k8s, namespace, "polled")).get("phase") == "Watching" and s,
        30,
        "Watching",
    )
    assert status["notifications"] == "Disabled"
    t0 = time.monotonic()
    put_many(s3, source["bucket"], [(f"3/{i}.png", png_bytes(f"p{i}")) for i in range(6)])
    wait_for(lambda: jobs_of(k8s, namespace, "polled"), 3 + 5, "a Job found by resync only")
    assert time.monotonic() - t0 < 3 + 5
    assert get_status(k8s, namespace, "polled")["labels"]["3"]["changes"] == 6


def test_failed_job_keeps_baseline_and_reports_why(
    k8s: Kube,
    namespace: str,
    s3: Any,
    source: dict[str, str],
    operators: Any,
    stub: StubWorkload,
) -> None:
    bucket = source["bucket"]
    put_many(s3, bucket, [(f"1/{i}.png", png_bytes(f"o{i}")) for i in range(4)])
    operators()
    create_watch(
        k8s,
        namespace,
        watch_body("fails", **source, trigger={"threshold": 3, "initialTraining": True}),
    )
    wait_for(lambda: jobs_of(k8s, namespace, "fails"), 20, "initial Job")
    stub.finish_job(
        namespace,
        "fails-train-1",
        exit_code=0,
        message=result_message(
            status="succeeded", modelName="fails", modelVersion="1", promoted=True
        ),
        expect="Complete",
    )
    first = wait_for(
        lambda: (
            (s := get_status(k8s, namespace, "fails")).get("baseline")
            and s["phase"] == "Watching"
            and s
        ),
        20,
        "first baseline",
    )
    baseline = first["baseline"]

    put_many(s3, bucket, [(f"1/n{i}.png", png_bytes(f"n{i}")) for i in range(4)])
    wait_for(lambda: len(jobs_of(k8s, namespace, "fails")) == 2, 20, "second Job")
    bad = result_message(status="failed", reason="no decodable images under 1/")
    stub.finish_job(namespace, "fails-train-2", exit_code=2, message=bad, expect="Failed")
    status = wait_for(
        lambda: (s := get_status(k8s, namespace, "fails")).get("phase") == "Failed" and s,
        20,
        "phase Failed",
    )
    last = status["lastRun"]
    assert last["result"] == "Failed" and last["jobName"] == "fails-train-2"
    assert last["reason"] == "PodFailurePolicy", last
    assert "exit code 2" in last["message"] and "no decodable images" in last["message"]
    assert status["baseline"] == baseline
    assert "activeRun" not in status
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert ready["status"] == "False" and ready["reason"] == "TrainingFailed"
    assert (
        label_counts(k8s, namespace, "fails", "1")["changes"] == 4
    )  # still against the old baseline
    wait_for(
        lambda: "TrainingFailed" in event_reasons(k8s, namespace, "fails"),
        10,
        "TrainingFailed Event",
    )
    # The same pending changes do not relaunch a failing run; a new change does.
    assert_no_job_for_more(k8s, namespace, "fails", 2, seconds=2.5)
    put(s3, bucket, "1/n9.png", png_bytes("n9"))
    wait_for(lambda: len(jobs_of(k8s, namespace, "fails")) == 3, 20, "a run after new data")


def assert_no_job_for_more(k8s: Kube, ns: str, name: str, count: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert len(jobs_of(k8s, ns, name)) == count
        time.sleep(0.25)


def test_changes_during_a_run_count_against_the_new_baseline(
    k8s: Kube,
    namespace: str,
    s3: Any,
    source: dict[str, str],
    operators: Any,
    stub: StubWorkload,
) -> None:
    bucket = source["bucket"]
    put_many(s3, bucket, [(f"5/{i}.png", png_bytes(f"s{i}")) for i in range(5)])
    operators()
    create_watch(
        k8s,
        namespace,
        watch_body("during", **source, trigger={"threshold": 3, "initialTraining": True}),
    )
    wait_for(lambda: jobs_of(k8s, namespace, "during"), 20, "initial Job")
    # While run 1 trains on 5 objects, two more arrive and one trained object changes.
    put(s3, bucket, "5/late1.png", png_bytes("l1"))
    put(s3, bucket, "5/late2.png", png_bytes("l2"))
    put(s3, bucket, "5/0.png", png_bytes("s0-v2"))
    wait_label(k8s, namespace, "during", "5", 7)  # against the empty baseline: 7 added
    assert len(jobs_of(k8s, namespace, "during")) == 1  # one run at a time
    stub.finish_job(
        namespace,
        "during-train-1",
        exit_code=0,
        message=result_message(status="succeeded", modelName="during", modelVersion="1"),
        expect="Complete",
    )
    counts = wait_label(k8s, namespace, "during", "5", 3)
    assert counts == {"objects": 7, "added": 2, "modified": 1, "deleted": 0, "changes": 3}
    assert_no_job_for_more(k8s, namespace, "during", 1, seconds=2)
    put(s3, bucket, "5/late3.png", png_bytes("l3"))
    jobs = wait_for(
        lambda: (j := jobs_of(k8s, namespace, "during")) and len(j) == 2 and j, 20, "run 2"
    )
    job2 = next(j for j in jobs if j["metadata"]["name"] == "during-train-2")
    key = job2["spec"]["template"]["spec"]["containers"][0]["args"][1].split("/", 3)[3]
    assert len(manifest_from_bucket(s3, bucket, key).objects) == 8


def test_promoted_run_calls_the_rollout_hook_once(
    k8s: Kube,
    namespace: str,
    s3: Any,
    source: dict[str, str],
    operators: Any,
    stub: StubWorkload,
) -> None:
    """The seam to serving: a promoted result reaches serving_rollout.on_promoted (a
    `<watch>-serving` Deployment appears, status.serving is written, rolloutPending clears);
    a result that is not promoted touches nothing."""
    bucket = source["bucket"]
    put_many(s3, bucket, [(f"0/{i}.png", png_bytes(f"z{i}")) for i in range(3)])
    operators()
    create_watch(
        k8s,
        namespace,
        watch_body("serve", **source, trigger={"threshold": 2, "initialTraining": True}),
    )
    wait_for(lambda: jobs_of(k8s, namespace, "serve"), 20, "initial Job")
    stub.finish_job(
        namespace,
        "serve-train-1",
        exit_code=0,
        message=result_message(
            status="succeeded", modelName="serve", modelVersion="1", promoted=False
        ),
        expect="Complete",
    )
    wait_for(
        lambda: (get_status(k8s, namespace, "serve").get("lastRun") or {}).get("run") == 1,
        20,
        "run 1 recorded",
    )
    time.sleep(1)
    assert k8s.request("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments")["items"] == []

    put_many(s3, bucket, [(f"0/n{i}.png", png_bytes(f"n{i}")) for i in range(3)])
    wait_for(lambda: len(jobs_of(k8s, namespace, "serve")) == 2, 20, "run 2")
    bento = f"s3://{bucket}/.kubetrain/bentos/serve-2.bento"
    stub.finish_job(
        namespace,
        "serve-train-2",
        exit_code=0,
        message=result_message(
            status="succeeded",
            modelName="serve",
            modelVersion="2",
            promoted=True,
            bentoUri=bento,
            accuracy=0.97,
        ),
        expect="Complete",
    )
    status = wait_for(
        lambda: (
            (s := get_status(k8s, namespace, "serve")).get("lastRun", {}).get("run") == 2
            and s.get("lastRun", {}).get("rolloutPending") is False
            and s
        ),
        30,
        "run 2 rolled out",
    )
    assert status["lastRun"]["promoted"] is True and status["model"] == "serve:2"
    deployments = k8s.request("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments")["items"]
    assert [d["metadata"]["name"] for d in deployments] == ["serve-serving"]
    assert bento in json.dumps(deployments[0]["spec"]["template"])
    assert status.get("serving"), "status.serving was not written from the rollout's report"
