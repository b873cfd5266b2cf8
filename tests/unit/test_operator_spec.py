"""operator spec.py: durations and the errors an invalid DatasetWatch spec gets."""

from __future__ import annotations

import pytest
from kubetrain_operator.spec import SpecError, parse_duration, parse_watch


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
