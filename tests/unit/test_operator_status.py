"""Status rendering: durable state round trip, conditions, phase, pending summary, outcomes."""

from __future__ import annotations

from typing import Any

import kubetrain_contract as contract
import pytest
from kubetrain_operator.notifications import NotificationError, parse_line
from kubetrain_operator.outcome import RunState, interpret
from kubetrain_operator.settings import load_settings
from kubetrain_operator.spec import SpecError, parse_duration, parse_watch
from kubetrain_operator.status import (
    ActiveRun,
    Baseline,
    Conditions,
    Durable,
    LastRun,
    compute_phase,
    labels_patch,
    pending_summary,
)
from kubetrain_operator.tally import LabelCounts


def test_durable_roundtrip() -> None:
    d = Durable(
        run_counter=3,
        baseline=Baseline("k", "sha256:x", 10, "2026-01-01T00:00:00Z"),
        active_run=ActiveRun("w-train-3", 3, "t", "why", "k2", "sha256:y", 2, True),
        last_run=LastRun("w-train-2", 2, "Succeeded", "Completed", "ok", accuracy=0.97),
        crossed_at="2026-01-01T00:00:00Z",
        model="m:2",
    )
    assert Durable.from_status(d.to_status()) == d
    assert Durable.from_status(None) == Durable()
    assert Durable().to_status()["activeRun"] is None  # merge patch deletes it


def test_conditions_keep_transition_time_until_status_changes() -> None:
    c = Conditions()
    assert c.set("Ready", True, "Watching", "ok", now="t1", generation=1)
    assert not c.set("Ready", True, "Watching", "ok", now="t2", generation=1)
    assert c.get("Ready")["lastTransitionTime"] == "t1"  # type: ignore[index]
    c.set("Ready", True, "Watching", "new message", now="t3", generation=2)
    assert c.get("Ready")["lastTransitionTime"] == "t1"  # type: ignore[index]
    c.set("Ready", False, "Failed", "x", now="t4", generation=2)
    assert c.get("Ready")["lastTransitionTime"] == "t4"  # type: ignore[index]
    again = Conditions.from_status(c.to_status())
    assert again.items == c.items


def test_phase_priority() -> None:
    assert (
        compute_phase(source_ready=False, active=True, suspended=True, last_failed=True)
        == "Pending"
    )
    assert (
        compute_phase(source_ready=True, active=True, suspended=True, last_failed=True)
        == "Training"
    )
    assert (
        compute_phase(source_ready=True, active=False, suspended=True, last_failed=True)
        == "Suspended"
    )
    assert (
        compute_phase(source_ready=True, active=False, suspended=False, last_failed=True)
        == "Failed"
    )
    assert (
        compute_phase(source_ready=True, active=False, suspended=False, last_failed=False)
        == "Watching"
    )


def test_pending_summary_and_labels_patch() -> None:
    assert pending_summary({"3": 143, "9": 12, "1": 143}, 200) == ("143/200", "1", 143)
    assert pending_summary({}, 200) == ("0/200", "", 0)
    counts = {"a": LabelCounts(5, 1, 0, 0), "b": LabelCounts(7, 0, 0, 0)}
    patch = labels_patch(counts, {"gone": {}, "a": {}}, limit=10)
    assert patch["gone"] is None
    assert patch["a"] == {"objects": 5, "added": 1, "modified": 0, "deleted": 0, "changes": 1}
    assert list(labels_patch(counts, None, limit=1)) == ["a"]


def job(cond: str | None, reason: str = "") -> dict[str, Any]:
    conds = [{"type": cond, "status": "True", "reason": reason, "message": "m"}] if cond else []
    return {"status": {"conditions": conds}}


def pod(code: int, message: str, finished: str = "2026-01-01T00:00:01Z") -> dict[str, Any]:
    return {
        "metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {
            "containerStatuses": [
                {
                    "name": "trainer",
                    "state": {
                        "terminated": {"exitCode": code, "message": message, "finishedAt": finished}
                    },
                }
            ]
        },
    }


def test_outcomes() -> None:
    ok = contract.TrainResult(
        status="succeeded", reason="gate passed", modelName="m", modelVersion="4", promoted=True
    ).to_message()
    assert interpret(job(None), []).state is RunState.RUNNING
    assert interpret(job("SuccessCriteriaMet"), []).state is RunState.RUNNING
    out = interpret(job("Complete"), [pod(0, ok)])
    assert out.state is RunState.SUCCEEDED and out.result and out.result.modelVersion == "4"
    out = interpret(job("Complete"), [pod(0, "")])
    assert out.state is RunState.FAILED and out.reason == "NoResult"
    bad = contract.TrainResult(status="failed", reason="no images under prefix").to_message()
    out = interpret(job("Failed", "PodFailurePolicy"), [pod(2, bad)])
    assert out.state is RunState.FAILED and out.reason == "PodFailurePolicy"
    assert "exit code 2" in out.message and "no images under prefix" in out.message
    out = interpret(
        job("Failed", "BackoffLimitExceeded"),
        [pod(75, "Traceback...", "2026-01-01T00:00:01Z"), pod(1, "oom", "2026-01-01T00:00:09Z")],
    )
    assert (
        out.exit_code == 1 and "oom" not in out.message
    )  # log tail is not a result; Job message used
    assert "BackoffLimitExceeded" in out.message


def test_notification_lines() -> None:
    line = (
        '{"Records":[{"eventName":"s3:ObjectCreated:Put","s3":{"object":{"key":"7/a b.png",'
        '"eTag":"\\"abc\\""}}},{"eventName":"s3:ObjectRemoved:Delete","s3":{"object":{"key":"7/x.png"}}},'
        '{"eventName":"s3:ObjectAccessed:Get","s3":{"object":{"key":"7/y.png"}}}]}'
    )
    changes = parse_line(line)
    assert [(c.kind, c.key, c.etag) for c in changes] == [
        ("put", "7/a b.png", "abc"),
        ("delete", "7/x.png", ""),
    ]
    assert parse_line('{"Records":null}') == []
    assert parse_line("   ") == []
    escaped = parse_line(
        '{"Records":[{"eventName":"s3:ObjectCreated:Put","s3":{"object":{"key":"7/a+b%21.png","eTag":"e"}}}]}',
        escaped=True,
    )
    assert escaped[0].key == "7/a b!.png"
    with pytest.raises(NotificationError):
        parse_line("{not json")


def test_durations_and_spec_errors() -> None:
    assert parse_duration("1h30m") == 5400
    assert parse_duration("500ms") == 0.5
    assert parse_duration("1.5m") == 90
    for bad in ["5", "5 m", "-1s", "1d", ""]:
        with pytest.raises(SpecError, match="not a duration"):
            parse_duration(bad)
    base = {
        "metadata": {"name": "w", "namespace": "n"},
        "spec": {
            "source": {
                "endpoint": "http://h:9000",
                "bucket": "b",
                "credentialsSecretRef": {"name": "s"},
            }
        },
    }
    spec = parse_watch(base)
    assert spec.trigger.threshold == 200 and spec.source.include == "*.png"
    assert spec.detection.resync_interval == 300
    with pytest.raises(SpecError, match=r"spec\.source\.endpoint"):
        parse_watch(
            {**base, "spec": {"source": {**base["spec"]["source"], "endpoint": "minio:9000"}}}
        )
    with pytest.raises(SpecError, match=r"spec\.trigger\.threshold"):
        parse_watch({**base, "spec": {**base["spec"], "trigger": {"threshold": 0}}})
    with pytest.raises(SpecError, match=r"spec\.trigger\.debounce"):
        parse_watch({**base, "spec": {**base["spec"], "trigger": {"debounce": "soon"}}})


def test_settings_flags_env_defaults() -> None:
    s = load_settings([], {})
    assert s.namespaces == ("default",) and s.health_port == 8080 and s.metrics_port == 9090
    assert s.priority > 0
    s = load_settings(
        ["-n", "a", "-n", "b", "--metrics-port", "0"],
        {"KUBETRAIN_OPERATOR_METRICS_PORT": "1", "KUBETRAIN_OPERATOR_STANDALONE": "true"},
    )
    assert s.namespaces == ("a", "b") and s.metrics_port == 0 and s.standalone
    s = load_settings([], {"KUBETRAIN_OPERATOR_NAMESPACES": "x, y", "POD_NAMESPACE": "z"})
    assert s.namespaces == ("x", "y")
    assert load_settings([], {"POD_NAMESPACE": "z"}).namespaces == ("z",)
    with pytest.raises(ValueError, match="KUBETRAIN_OPERATOR_HEALTH_PORT"):
        load_settings([], {"KUBETRAIN_OPERATOR_HEALTH_PORT": "http"})
    # Training and serving pods must stay PodSecurity "restricted": never UID 0.
    assert load_settings(["--trainer-uid", "2000"], {}).trainer_uid == 2000
    with pytest.raises(ValueError, match="trainer_uid must be a non-root UID"):
        load_settings(["--trainer-uid", "0"], {})
    with pytest.raises(ValueError, match="mutually exclusive"):
        load_settings(
            [], {"KUBETRAIN_OPERATOR_NAMESPACES": "a", "KUBETRAIN_OPERATOR_ALL_NAMESPACES": "1"}
        )


def test_every_setting_has_a_flag() -> None:
    """The settings module promises a CLI flag per field (namespaces is -n/--namespace;
    the webhook token is env-only so it never shows in a process list; the nested rollout
    settings are --rollout-<field>, except the image and UID, which follow --default-image
    and --trainer-uid)."""
    from dataclasses import fields

    from kubetrain_operator.settings import OperatorSettings, RolloutSettings, build_parser

    options = {o for action in build_parser()._actions for o in action.option_strings}
    missing = [
        f.name
        for f in fields(OperatorSettings)
        if "--" + f.name.replace("_", "-") not in options
        and f.name not in ("namespaces", "webhook_token", "rollout")
    ]
    missing += [
        f"rollout.{f.name}"
        for f in fields(RolloutSettings)
        if "--rollout-" + f.name.replace("_", "-") not in options
        and f.name not in ("default_image", "run_as_user")
    ]
    assert missing == []
    assert "--namespace" in options
    s = load_settings(["--source-settle-seconds", "2.5"], {})
    assert s.source_settle_seconds == 2.5
    with pytest.raises(ValueError, match="source_settle_seconds must be > 0"):
        load_settings([], {"KUBETRAIN_OPERATOR_SOURCE_SETTLE_SECONDS": "0"})
