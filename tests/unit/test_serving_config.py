"""Serving settings from the environment, and kubetrain-serve's argument/env handling."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubetrain_serving.cli import classify_source, parse_args, prepare_env
from kubetrain_serving.engine import ModelInfo
from kubetrain_serving.settings import ServingSettings


def test_defaults() -> None:
    s = ServingSettings.from_env({"KUBETRAIN_CPU_LIMIT": "2"})
    assert s.model_tag is None
    assert (s.max_body_bytes, s.max_images, s.batcher, s.workers) == (8 << 20, 256, "kubetrain", 1)
    assert s.tf_threads == 2


def test_every_variable_is_read() -> None:
    s = ServingSettings.from_env(
        {
            "KUBETRAIN_BENTO_MODEL": "kubetrain-mnist:v3",
            "KUBETRAIN_SERVING_MAX_BODY_BYTES": "65536",
            "KUBETRAIN_SERVING_MAX_IMAGES": "32",
            "KUBETRAIN_SERVING_MAX_BATCH_SIZE": "16",
            "KUBETRAIN_SERVING_MAX_QUEUE_IMAGES": "100",
            "KUBETRAIN_SERVING_BATCHER": "BentoML",
            "KUBETRAIN_SERVING_MAX_LATENCY_MS": "250",
            "KUBETRAIN_SERVING_WORKERS": "2",
            "KUBETRAIN_CPU_LIMIT": "4",
            "KUBETRAIN_SERVING_TIMEOUT": "5",
        }
    )
    assert s == ServingSettings(
        model_tag="kubetrain-mnist:v3",
        max_body_bytes=65536,
        max_images=32,
        max_batch_size=16,
        max_queue_images=100,
        batcher="bentoml",
        max_latency_ms=250,
        workers=2,
        tf_threads=2,  # 4 CPUs over 2 workers
        timeout_s=5,
    )


def test_millicpu_limit_and_explicit_threads() -> None:
    assert ServingSettings.from_env({"KUBETRAIN_CPU_LIMIT": "1500m"}).tf_threads == 1
    env = {"KUBETRAIN_CPU_LIMIT": "8", "KUBETRAIN_SERVING_TF_THREADS": "3"}
    assert ServingSettings.from_env(env).tf_threads == 3


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "KUBETRAIN_SERVING_MAX_IMAGES",
            "many",
            "KUBETRAIN_SERVING_MAX_IMAGES='many' is not an integer",
        ),
        ("KUBETRAIN_SERVING_MAX_BODY_BYTES", "10", "out of range"),
        ("KUBETRAIN_SERVING_BATCHER", "fast", "must be one of kubetrain, bentoml"),
        ("KUBETRAIN_BENTO_MODEL", "no-version", "must be <name>:<version>"),
        ("KUBETRAIN_CPU_LIMIT", "lots", "not a CPU quantity"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServingSettings.from_env({name: value})


def test_minio_variables_map_onto_aws_ones() -> None:
    env = {
        "MINIO_ENDPOINT": "http://127.0.0.1:9000",
        "MINIO_ACCESS_KEY": "ak",
        "MINIO_SECRET_KEY": "sk",
    }
    prepare_env(env, "/data/bentoml")
    assert env["AWS_ENDPOINT_URL_S3"] == "http://127.0.0.1:9000"
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == ("ak", "sk")
    assert env["BENTOML_HOME"] == "/data/bentoml" and env["BENTOML_DO_NOT_TRACK"] == "true"
    assert env["AWS_EC2_METADATA_DISABLED"] == "true" and env["AWS_DEFAULT_REGION"]


def test_explicit_aws_settings_win() -> None:
    env = {
        "MINIO_ENDPOINT": "http://minio:9000",
        "MINIO_ACCESS_KEY": "ak",
        "AWS_ENDPOINT_URL_S3": "http://other:9000",
        "AWS_ACCESS_KEY_ID": "mine",
        "BENTOML_DO_NOT_TRACK": "false",
    }
    prepare_env(env)
    assert env["AWS_ENDPOINT_URL_S3"] == "http://other:9000" and env["AWS_ACCESS_KEY_ID"] == "mine"
    assert env["BENTOML_DO_NOT_TRACK"] == "false" and "BENTOML_HOME" not in env


def test_bento_source_kinds(tmp_path: Path) -> None:
    exported = tmp_path / "m.bento"
    exported.write_bytes(b"x")
    bento_dir = tmp_path / "b"
    bento_dir.mkdir()
    (bento_dir / "bento.yaml").write_text("service: x\n")
    assert classify_source("s3://bucket/.kubetrain/bentos/m-1.bento") == "s3"
    assert classify_source(str(exported)) == "file"
    assert classify_source(str(bento_dir)) == "dir"
    assert classify_source("kubetrain-mnist:v1") == "tag"
    with pytest.raises(ValueError, match="no such file"):
        classify_source(str(tmp_path / "missing.bento"))
    with pytest.raises(ValueError, match=r"no bento\.yaml"):
        classify_source(str(tmp_path))
    with pytest.raises(ValueError, match="only s3://"):
        classify_source("https://example.com/m.bento")


def test_arguments() -> None:
    o = parse_args(["--bento", "x:1"])
    assert (o.bento, o.host, o.port, o.import_only) == ("x:1", "0.0.0.0", 3000, False)
    o = parse_args(["--bento", "x:1", "--port", "8080", "--host", "127.0.0.1", "--import-only"])
    assert (o.host, o.port, o.import_only) == ("127.0.0.1", 8080, True)
    with pytest.raises(SystemExit):
        parse_args(["--bento", "x:1", "--port", "70000"])
    with pytest.raises(SystemExit):
        parse_args([])


def test_model_info_from_trainer_metadata() -> None:
    meta = {
        "model_name": "digits",
        "model_version": 4,
        "mlflow_run_id": "abc",
        "dataset_digest": "sha256:1",
        "classes": [str(i) for i in range(10)],
    }
    info = ModelInfo.from_metadata(meta, "kubetrain-digits:v4", 10)
    assert (info.model_version, info.class_id(7)) == ("4", 7)
    named = ModelInfo.from_metadata({"classes": '["cat", "dog"]'}, "t:1", 2)
    assert named.classes == ("cat", "dog") and named.class_id(1) == 1
    assert named.model_version == "unknown"
    shuffled = ModelInfo.from_metadata({"classes": ["3", "1"]}, "t:1", 2)
    assert shuffled.class_id(0) == 3
    wrong_len = ModelInfo.from_metadata({"classes": ["a"]}, "t:1", 3)
    assert wrong_len.classes == ("0", "1", "2")
