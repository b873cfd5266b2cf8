"""Restarts at the worst moments, a MinIO restart mid-upload, and CRD validation."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubetrain_operator.kube import Kube, KubeError

from tests.support.operator import (
    GROUP_PATH,
    PrivateMinio,
    create_watch,
    event_reasons,
    get_status,
    jobs_of,
    label_counts,
    png_bytes,
    put,
    put_many,
    result_message,
    wait_for,
    watch_body,
)
from tests.support.stub import StubWorkload

pytestmark = pytest.mark.platform


@pytest.mark.parametrize("point", ["job", "status"])
def test_restart_between_steps_of_a_launch_adopts_and_never_duplicates(
    point: str,
    k8s: Kube,
    namespace: str,
    s3: Any,
    source: dict[str, str],
    operators: Any,
    stub: StubWorkload,
) -> None:
    """Killed right after creating the Job (before status says so), or right after the
    status write (before the Job exists): the restarted operator ends with exactly one Job."""
    crashing = operators("--fault-exit-after", point)
    create_watch(k8s, namespace, watch_body("crash", **source, trigger={"threshold": 2}))
    put_many(s3, source["bucket"], [(f"9/{i}.png", png_bytes(f"c{i}")) for i in range(3)])
    assert crashing.wait_exit(30) == 17, crashing.logs()[-3000:]
    status = get_status(k8s, namespace, "crash")
    assert status["activeRun"]["jobName"] == "crash-train-1"
    assert status["activeRun"]["jobCreated"] is False
    assert [j["metadata"]["name"] for j in jobs_of(k8s, namespace, "crash")] == (
        ["crash-train-1"] if point == "job" else []
    )

    operators()
    wait_for(
        lambda: (get_status(k8s, namespace, "crash").get("activeRun") or {}).get("jobCreated"),
        30,
        "activeRun.jobCreated",
    )
    time.sleep(2)
    assert [j["metadata"]["name"] for j in jobs_of(k8s, namespace, "crash")] == ["crash-train-1"]
    status = get_status(k8s, namespace, "crash")
    assert status["runCounter"] == 1 and status["phase"] == "Training"
    if point == "job":
        assert "JobAdopted" in event_reasons(k8s, namespace, "crash")
    # The adopted run completes normally.
    stub.finish_job(
        namespace,
        "crash-train-1",
        exit_code=0,
        message=result_message(status="succeeded", modelName="crash", modelVersion="1"),
        expect="Complete",
    )
    status = wait_for(
        lambda: (s := get_status(k8s, namespace, "crash")).get("lastRun") and s, 20, "lastRun"
    )
    assert status["lastRun"]["result"] == "Succeeded" and status["baseline"]["objects"] == 3


def test_job_found_by_labels_when_status_lost(
    k8s: Kube, namespace: str, s3: Any, source: dict[str, str], operators: Any
) -> None:
    """A running Job of the watch is adopted by name + labels even if status forgot it."""
    op = operators()
    create_watch(k8s, namespace, watch_body("lost", **source, trigger={"threshold": 1}))
    put_many(s3, source["bucket"], [(f"2/{i}.png", png_bytes(f"l{i}")) for i in range(2)])
    wait_for(lambda: jobs_of(k8s, namespace, "lost"), 20, "Job")
    wait_for(
        lambda: (get_status(k8s, namespace, "lost").get("activeRun") or {}).get("jobCreated"),
        20,
        "jobCreated",
    )
    op.kill()
    k8s.patch_watch_status(namespace, "lost", {"activeRun": None, "runCounter": 0})
    operators()
    status = wait_for(
        lambda: (s := get_status(k8s, namespace, "lost")).get("activeRun") and s,
        30,
        "re-adopted activeRun",
    )
    assert status["activeRun"]["jobName"] == "lost-train-1" and status["runCounter"] == 1
    time.sleep(2)
    assert len(jobs_of(k8s, namespace, "lost")) == 1


def test_minio_restart_during_uploads_counts_stay_right(
    k8s: Kube,
    namespace: str,
    private_minio: PrivateMinio,
    s3: Any,
    source: dict[str, str],
    operators: Any,
) -> None:
    """MinIO killed (SIGKILL) right after a burst of uploads and restarted while more arrive:
    events in flight are lost, the outage is noticed, a re-listing makes the counts exact."""
    bucket = source["bucket"]
    operators()
    body = watch_body("mrestart", **source, detection={"resyncInterval": "1h"})
    create_watch(k8s, namespace, body)
    wait_for(
        lambda: get_status(k8s, namespace, "mrestart").get("notifications") == "Connected",
        30,
        "notifications Connected",
    )
    put_many(s3, bucket, [(f"4/{i:03d}.png", png_bytes(f"r{i}")) for i in range(60)])
    private_minio.kill()
    wait_for(
        lambda: get_status(k8s, namespace, "mrestart").get("notifications") == "Disconnected",
        30,
        "the outage noticed",
    )
    private_minio.start()
    s3 = private_minio.client()
    # Overwrites, new keys and deletes right after the restart, racing the re-listing.
    put_many(s3, bucket, [(f"4/{i:03d}.png", png_bytes(f"r{i}-v2")) for i in range(50, 80)])
    for i in range(10):
        s3.remove_object(bucket, f"4/{i:03d}.png")
    truth = {o.object_name for o in s3.list_objects(bucket, recursive=True)}
    assert len(truth) == 70

    def exact() -> dict[str, int] | None:
        c = label_counts(k8s, namespace, "mrestart", "4")
        return c if c.get("objects") == 70 and c.get("changes") == 70 else None

    counts = wait_for(exact, 60, "exact counts after the restart")
    assert counts == {"objects": 70, "added": 70, "modified": 0, "deleted": 0, "changes": 70}
    wait_for(
        lambda: get_status(k8s, namespace, "mrestart").get("notifications") == "Connected",
        30,
        "notifications Connected again",
    )
    put(s3, bucket, "4/after.png", png_bytes("after"))
    wait_for(
        lambda: label_counts(k8s, namespace, "mrestart", "4").get("changes") == 71,
        10,
        "notifications flow again",
    )


INVALID = [
    ({"trigger": {"threshold": 0}}, "spec.trigger.threshold"),
    ({"trigger": {"debounce": "soon"}}, "spec.trigger.debounce"),
    (
        {"trigger": {"debounce": "20m", "maxDelay": "10m"}},
        "trigger.debounce must not be longer than trigger.maxDelay",
    ),
    ({"detection": {"resyncInterval": "1s"}}, "detection.resyncInterval must be at least 2s"),
    ({"source": {"endpoint": "minio:9000"}}, "spec.source.endpoint"),
    ({"source": {"bucket": "Has_Upper"}}, "spec.source.bucket"),
    ({"source": {"prefix": "/data"}}, "source.prefix must not start with '/'"),
    ({"source": {"prefix": ".kubetrain/x/"}}, "reserves for manifests"),
    ({"source": {"credentialsSecretRef": None}}, "credentialsSecretRef"),
    ({"training": {"imagePullPolicy": "Sometimes"}}, "spec.training.imagePullPolicy"),
    ({"detection": {"notifications": "Sometimes"}}, "spec.detection.notifications"),
    ({"training": {"backoffLimit": -1}}, "spec.training.backoffLimit"),
]


@pytest.mark.parametrize(("patch", "needle"), INVALID, ids=[n for _, n in INVALID])
def test_invalid_specs_are_rejected_with_clear_messages(
    patch: dict[str, Any], needle: str, k8s: Kube, namespace: str, crds: None
) -> None:
    body = watch_body("bad", endpoint="http://127.0.0.1:9000", bucket="some-bucket")
    for section, fields in patch.items():
        for key, value in fields.items():
            if value is None:
                body["spec"][section].pop(key)
            else:
                body["spec"][section][key] = value
    with pytest.raises(KubeError) as err:
        create_watch(k8s, namespace, body)
    assert err.value.status == 422
    assert needle in err.value.message, err.value.message


def test_name_length_and_defaults(k8s: Kube, namespace: str, crds: None) -> None:
    body = watch_body("x" * 46, endpoint="http://127.0.0.1:9000", bucket="some-bucket")
    with pytest.raises(KubeError) as err:
        create_watch(k8s, namespace, body)
    assert "at most 45 characters" in err.value.message
    minimal = {
        "apiVersion": "kubetrain.dev/v1alpha1",
        "kind": "DatasetWatch",
        "metadata": {"name": "defaults"},
        "spec": {
            "source": {
                "endpoint": "http://h:9000",
                "bucket": "b-1",
                "credentialsSecretRef": {"name": "s"},
            }
        },
    }
    spec = create_watch(k8s, namespace, minimal)["spec"]
    assert spec["trigger"] == {
        "threshold": 200,
        "debounce": "10s",
        "maxDelay": "10m",
        "cooldown": "1m",
        "initialTraining": True,
    }
    assert spec["detection"] == {"resyncInterval": "5m", "notifications": "Webhook"}
    assert spec["source"]["include"] == "*.png" and spec["source"]["prefix"] == ""
    assert spec["training"]["backoffLimit"] == 2 and spec["training"]["epochs"] == 25
    k8s.request("DELETE", f"{GROUP_PATH}/namespaces/{namespace}/datasetwatches/defaults")


def test_broken_notifications_still_trigger_by_resync(
    k8s: Kube, namespace: str, s3: Any, source: dict[str, str], operators: Any
) -> None:
    """Notifications broken: `Listen` against this MinIO build, whose listen stream is never
    flushed (not even its headers), so the stream never comes up. The watch reports it
    (notifications Disconnected, SourceReady reason ResyncOnly) and resync alone triggers
    within resyncInterval."""
    operators()
    body = watch_body(
        "broken",
        **source,
        trigger={"threshold": 5},
        detection={"notifications": "Listen", "resyncInterval": "3s"},
    )
    create_watch(k8s, namespace, body)
    status = wait_for(
        lambda: (s := get_status(k8s, namespace, "broken")).get("phase") == "Watching" and s,
        30,
        "Watching",
    )
    assert status["notifications"] == "Disconnected"
    source_ready = {c["type"]: c for c in status["conditions"]}["SourceReady"]
    assert source_ready["status"] == "True" and source_ready["reason"] == "ResyncOnly"
    t0 = time.monotonic()
    put_many(s3, source["bucket"], [(f"6/{i}.png", png_bytes(f"b{i}")) for i in range(6)])
    wait_for(lambda: jobs_of(k8s, namespace, "broken"), 3 + 5, "a Job found by resync")
    assert time.monotonic() - t0 < 3 + 5
    assert get_status(k8s, namespace, "broken")["labels"]["6"]["changes"] == 6


def test_peering_two_replicas_never_both_act(
    k8s: Kube, namespace: str, s3: Any, source: dict[str, str], operators: Any
) -> None:
    """With mandatory peering, the lower-priority replica stays paused: only one works."""
    k8s.request(
        "POST",
        f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings",
        body={
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfPeering",
            "metadata": {"name": "kubetrain"},
        },
    )
    high = operators("--priority", "200")
    high.args.remove("--standalone")
    high.stop()
    high.start()
    low = operators("--priority", "100", "--webhook-port", "0")
    low.args.remove("--standalone")
    low.stop()
    low.start()
    create_watch(k8s, namespace, watch_body("peer", **source, trigger={"threshold": 2}))
    wait_for(lambda: get_status(k8s, namespace, "peer").get("phase") == "Watching", 30, "Watching")
    put_many(s3, source["bucket"], [(f"1/{i}.png", png_bytes(f"p{i}")) for i in range(3)])
    wait_for(lambda: jobs_of(k8s, namespace, "peer"), 20, "a Job")
    time.sleep(2)
    assert f"[{namespace}/peer] WatchReady" in high.logs()
    assert f"[{namespace}/peer]" not in low.logs(), "the paused replica acted"
    assert low.alive() and high.alive()
    assert len(jobs_of(k8s, namespace, "peer")) == 1
