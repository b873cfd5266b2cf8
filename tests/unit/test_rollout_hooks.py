"""hooks.Rollout, the worker's seam to serving_rollout: it hands over the operator's one
Kube client and the rollout settings, and sorts errors into Permanent and transient."""

from __future__ import annotations

from typing import Any

import pytest
from kubetrain_contract import TrainResult
from kubetrain_operator import hooks
from kubetrain_operator.kube import KubeError
from kubetrain_operator.settings import OperatorSettings, RolloutSettings

from tests.support.fakes import FakeKube, as_kube

DEP = "/apis/apps/v1/namespaces/ml/deployments/digits-serving"
URI = "s3://data/.kubetrain/bentos/mnist-1.bento"
PROMOTED = TrainResult(
    status="succeeded", promoted=True, modelName="mnist", modelVersion="1", bentoUri=URI
)


def body(**serving: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "digits", "namespace": "ml", "uid": "u", "generation": 1},
        "spec": {
            "source": {
                "endpoint": "http://minio:9000",
                "bucket": "data",
                "credentialsSecretRef": {"name": "creds"},
            },
            "serving": serving,
        },
    }


def rollout(fake: FakeKube) -> hooks.Rollout:
    settings = OperatorSettings(rollout=RolloutSettings(request_timeout_seconds=3.0))
    return hooks.Rollout(as_kube(fake), settings)


def test_promoted_and_check_reach_the_rollout_with_the_operators_client() -> None:
    fake = FakeKube()
    # No MinIO here: the prune reads the Secret through the same client and fails softly.
    r = rollout(fake)
    assert r.enabled
    status = r.promoted(body(), PROMOTED)
    assert status is not None and status["modelVersion"] == "1"
    assert DEP in fake.objects and fake.timeouts[0] == 3.0
    assert fake.reasons() == ["RolloutStarted", "BentoPruneFailed"]
    assert "Secret ml/creds" in fake.events[1].message
    again = r.check({**body(), "status": {"serving": status}})
    assert again is not None and again["bentoUri"] == URI
    assert r.check(body(enabled=False)) is None


@pytest.mark.parametrize(
    ("watch", "fail", "match"),
    [
        (body(replicas=0), None, r"spec\.serving\.replicas"),
        ({**body(), "metadata": {"name": "digits", "namespace": "ml"}}, None, "metadata.uid"),
        (
            {**body(), "spec": {**body()["spec"], "trigger": {"threshold": 0}}},
            None,
            r"spec\.trigger\.threshold",
        ),
        (body(), KubeError(422, "Invalid", "bad"), "apiserver rejected Deployment"),
    ],
)
def test_what_retrying_cannot_fix_is_permanent(
    watch: dict[str, Any], fail: KubeError | None, match: str
) -> None:
    fake = FakeKube()
    if fail is not None:
        fake.fail_next[("APPLY", DEP)] = [fail]
    with pytest.raises(hooks.Permanent, match=match) as err:
        rollout(fake).promoted(watch, PROMOTED)
    assert isinstance(err.value.__cause__, hooks.PERMANENT_ERRORS)
    if fail is None:  # a bad spec fails the periodic check the same way
        with pytest.raises(hooks.Permanent, match=match):
            rollout(fake).check(watch)


def test_everything_else_is_transient() -> None:
    fake = FakeKube()
    fake.fail_next[("GET", DEP)] = [KubeError(503, "ServiceUnavailable", ""), KubeError(0, "x", "")]
    with pytest.raises(KubeError):
        rollout(fake).promoted(body(), PROMOTED)
    with pytest.raises(KubeError):
        rollout(fake).check(body())
