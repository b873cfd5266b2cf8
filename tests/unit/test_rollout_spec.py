"""The one typed model of the spec, serving included: `spec.parse_watch` parses
`spec.serving` with the same rules the rollout applies, a bad `spec.serving` stays the
rollout's problem, and `serving_rollout.spec.parse_target` adds only the owner's identity."""

from __future__ import annotations

from typing import Any

import pytest
from kubetrain_operator import constants, spec
from kubetrain_operator.serving_rollout.spec import ServingTarget, WatchRef, parse_target
from kubetrain_operator.settings import RolloutSettings
from kubetrain_operator.spec import (
    IngressSpec,
    ServingSpec,
    ServingSpecError,
    SpecError,
    parse_serving,
    parse_watch,
)

SETTINGS = RolloutSettings(default_image="fallback:1")


def body(serving: Any = None, **meta: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "metadata": {"name": "digits", "namespace": "ml", "uid": "u1", "generation": 7, **meta},
        "spec": {
            "source": {
                "endpoint": "http://minio:9000",
                "bucket": "data",
                "credentialsSecretRef": {"name": "creds"},
            },
            "training": {"image": "train:2"},
        },
    }
    if serving is not None:
        doc["spec"]["serving"] = serving
    return doc


def test_the_watch_spec_carries_the_serving_spec() -> None:
    watch = parse_watch(body({"replicas": 3, "ingress": {"host": "d.example.com"}}))
    assert watch.serving == ServingSpec(replicas=3, ingress=IngressSpec(host="d.example.com"))
    assert watch.serving_problem == ""
    assert parse_watch(body()).serving == ServingSpec() == parse_serving({})


def test_a_bad_serving_spec_is_kept_for_the_rollout_and_does_not_stop_the_watch() -> None:
    watch = parse_watch(body({"port": 80}))
    assert watch.serving == ServingSpec()
    assert watch.serving_problem.startswith("spec.serving.port: 80 is out of range")
    with pytest.raises(ServingSpecError, match=r"^spec\.serving\.port: 80 is out of range"):
        parse_target(body({"port": 80}), SETTINGS)
    assert issubclass(ServingSpecError, SpecError) and issubclass(ServingSpecError, ValueError)


def test_parse_target_reads_the_parsed_watch() -> None:
    target = parse_target(body({"replicas": 2}), SETTINGS)
    assert target == ServingTarget(
        watch=WatchRef("ml", "digits", "u1", 7),
        endpoint="http://minio:9000",
        credentials_secret="creds",
        image="train:2",
        serving=ServingSpec(replicas=2),
    )
    assert parse_target(body({"image": "serve:3"}), SETTINGS).image == "serve:3"
    no_image = body()
    del no_image["spec"]["training"]
    assert parse_target(no_image, SETTINGS).image == "fallback:1"


def test_every_spec_problem_reaches_the_rollout_as_a_serving_spec_error() -> None:
    bad_trigger = body()
    bad_trigger["spec"]["trigger"] = {"threshold": 0}
    with pytest.raises(ServingSpecError, match=r"spec\.trigger\.threshold"):
        parse_target(bad_trigger, SETTINGS)
    no_bucket = body()
    del no_bucket["spec"]["source"]["bucket"]
    with pytest.raises(ServingSpecError, match=r"spec\.source\.bucket"):
        parse_target(no_bucket, SETTINGS)
    no_uid = body()
    del no_uid["metadata"]["uid"]
    assert parse_watch(no_uid).uid == ""  # the worker does not need it; the rollout does
    with pytest.raises(ServingSpecError, match=r"metadata\.uid is required"):
        parse_target(no_uid, SETTINGS)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("trigger.threshold", "2", "spec.trigger.threshold: expected an integer, got '2'"),
        ("trigger.threshold", True, "spec.trigger.threshold: expected an integer, got True"),
        ("training.minAccuracy", True, "spec.training.minAccuracy: expected a number, got True"),
        ("suspend", "yes", "spec.suspend: expected bool, got 'yes'"),
    ],
)
def test_one_type_rule_for_every_field(path: str, value: Any, message: str) -> None:
    doc = body()
    node = doc["spec"]
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    with pytest.raises(SpecError) as err:
        parse_watch(doc)
    assert str(err.value) == message
    assert not isinstance(err.value, ServingSpecError)
    serving_message = message.replace(f"spec.{path}", "spec.serving.replicas")
    if "integer" in message:
        with pytest.raises(ServingSpecError) as serr:
            parse_serving({"serving": {"replicas": value}})
        assert str(serr.value) == serving_message


def test_the_crd_names_have_one_home() -> None:
    assert (spec.GROUP, spec.VERSION, spec.PLURAL, spec.KIND, spec.API_VERSION) == (
        constants.GROUP,
        constants.VERSION,
        constants.PLURAL,
        constants.KIND,
        constants.API_VERSION,
    )
    assert constants.API_VERSION == "kubetrain.dev/v1alpha1"
    assert WatchRef("ml", "w", "u").owner_reference()["apiVersion"] == constants.API_VERSION
