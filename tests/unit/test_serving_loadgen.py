"""The load generator's guard rails and arithmetic (no server needed)."""

from __future__ import annotations

import json
import math

import pytest
from kubetrain_loadgen.core import (
    LoadResult,
    LoadSpec,
    Payload,
    TargetRefused,
    _answer_ok,
    check_loopback,
    percentile,
)
from kubetrain_loadgen.payloads import (
    classify_json_payloads,
    classify_multipart_payloads,
    predict_payloads,
)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:3000/predict",
        "http://127.8.9.10/x",
        "http://[::1]:80/",
        "http://localhost:1/",
    ],
)
def test_loopback_targets_are_allowed(url: str) -> None:
    check_loopback(url)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://10.0.0.1:3000/predict", "non-loopback"),
        ("http://8.8.8.8/", "non-loopback"),
        ("http://[2001:db8::1]/", "non-loopback"),
        ("http://0.0.0.0:3000/", "non-loopback"),
        ("ftp://127.0.0.1/", "only http"),
        ("http:///predict", "no host"),
        ("http://no-such-host.invalid/", "cannot resolve"),
    ],
)
def test_other_targets_are_refused(url: str, why: str) -> None:
    with pytest.raises(TargetRefused, match=why):
        check_loopback(url)


def test_spec_bounds() -> None:
    ok = LoadSpec("http://127.0.0.1:1/", concurrency=8, max_requests=10, max_seconds=1)
    ok.validate()
    for bad in (
        LoadSpec("http://127.0.0.1:1/", concurrency=0, max_requests=10, max_seconds=1),
        LoadSpec("http://127.0.0.1:1/", concurrency=8, max_requests=0, max_seconds=1),
        LoadSpec("http://127.0.0.1:1/", concurrency=8, max_requests=10, max_seconds=601),
        LoadSpec("http://127.0.0.1:1/", concurrency=5000, max_requests=10, max_seconds=1),
    ):
        with pytest.raises(ValueError):
            bad.validate()
    with pytest.raises(TargetRefused):
        LoadSpec("http://192.168.1.1/", concurrency=1, max_requests=1, max_seconds=1).validate()


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (
        50,
        99,
        100,
    )
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_result_rates() -> None:
    r = LoadResult(url="u", concurrency=1, requests=12, ok=10, images_ok=40, elapsed_s=2.0)
    r.latencies_ms = [float(v) for v in range(10)]
    r.errors["http_503"] = 2
    s = r.summary()
    assert (s["requests_per_s"], s["images_per_s"], s["failed"]) == (5.0, 20.0, 2)
    assert s["errors"] == {"http_503": 2} and s["p50_ms"] == 4.0


def test_answers_are_checked_for_shape() -> None:
    one = Payload(b"", "application/json", images=1, expect_list=False)
    many = Payload(b"", "application/json", images=2, expect_list=True)
    assert _answer_ok(one, b'{"prediction": 3}')
    assert not _answer_ok(one, b'{"error": "x"}')
    assert not _answer_ok(one, b"not json")
    assert _answer_ok(many, b'[{"prediction": 1}, {"prediction": 2}]')
    assert not _answer_ok(many, b'[{"prediction": 1}]')


def test_payload_builders() -> None:
    images = [b"a", b"b", b"c", b"d", b"e"]
    predict = predict_payloads(images)
    assert len(predict) == 5 and json.loads(predict[0].body) == {"data": "YQ=="}
    batches = classify_json_payloads(images, 2)
    assert [p.images for p in batches] == [2, 2] and json.loads(batches[1].body) == ["Yw==", "ZA=="]
    multi = classify_multipart_payloads(images, 3)
    assert multi[0].images == 3 and multi[0].content_type.startswith(
        "multipart/form-data; boundary="
    )
    assert multi[0].body.count(b'name="images"') == 3
