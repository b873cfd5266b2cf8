"""Package a promoted model as a BentoML Bento and export it to the bucket.

Contract (docs/trainer.md, HELPER-BRIEF): the Keras model is saved into the BentoML
model store as `model.keras` under `<bento model name>:v<version>` with metadata
{model_name, model_version, mlflow_run_id, dataset_digest, classes, input_shape}; the
Bento is built from the serving/ folder (`bentofile.yaml`, service
`kubetrain_serving.service:MnistClassifier`), whose class attribute
`bentoml.models.BentoModel(os.environ["KUBETRAIN_BENTO_MODEL"])` picks that model up at
build time and packs it. The bentofile disables package locking, so the build never
talks to a package index (it works offline, in the Job's pod).

The Bento is exported to a local file and uploaded with the same MinIO client that read
the dataset (bounded retries, one error classification) to
`s3://<bucket>/<bento prefix><model>-<version>.bento`, where `kubetrain-serve` imports it.
The BentoML home is a scratch directory of the run (BENTOML_HOME), never the user's.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from minio import Minio
from minio.error import S3Error

from kubetrain_trainer.errors import BadInput, Transient

SERVICE_MODULE = "kubetrain_serving.service"


def bento_model_name(model_name: str) -> str:
    """A BentoML-safe name: lowercase letters, digits, '-', '_' and '.'."""
    name = re.sub(r"[^a-z0-9._-]+", "-", model_name.lower()).strip("-._")
    return name or "kubetrain-model"


def bento_key(prefix: str, model_name: str, version: str) -> str:
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return f"{prefix}{bento_model_name(model_name)}-{version}.bento"


def default_serving_dir() -> Path:
    """The serving/ folder holding bentofile.yaml (next to the kubetrain_serving package)."""
    import kubetrain_serving

    return Path(kubetrain_serving.__file__).resolve().parent.parent


@dataclass(frozen=True)
class BentoExport:
    bento_tag: str
    model_tag: str
    uri: str
    size_bytes: int
    seconds: float


def package_and_export(
    model: Any,
    *,
    client: Minio,
    bucket: str,
    prefix: str,
    model_name: str,
    version: str,
    metadata: dict[str, Any],
    serving_dir: Path,
    scratch: Path,
    extra_files: Mapping[str, bytes] | None = None,
) -> BentoExport:
    """Save, build, export and upload; returns where the Bento went.

    `extra_files` (name -> content, e.g. the ONNX and TFLite exports) are packed beside
    `model.keras` in the Bento's model."""
    start = time.perf_counter()
    bentofile = serving_dir / "bentofile.yaml"
    if not bentofile.is_file():
        raise BadInput(f"no bentofile.yaml in the serving directory {serving_dir}")
    import bentoml

    name = bento_model_name(model_name)
    model_tag = f"{name}:v{version}"
    with bentoml.models.create(
        name=model_tag,
        metadata=metadata,
        labels={"kubetrain.dev/model": name, "kubetrain.dev/version": str(version)},
    ) as ref:
        model.save(ref.path_of("model.keras"))
        for filename, content in (extra_files or {}).items():
            Path(ref.path_of(filename)).write_bytes(content)

    # The service reads the model tag from the environment when its module is
    # imported; drop an earlier import so a second build in one process sees the new tag.
    os.environ["KUBETRAIN_BENTO_MODEL"] = model_tag
    for mod in [m for m in sys.modules if m == SERVICE_MODULE]:
        del sys.modules[mod]
    try:
        bento = bentoml.bentos.build_bentofile(
            bentofile=str(bentofile),
            build_ctx=str(serving_dir),
            version=f"v{version}",
            labels={"kubetrain.dev/model": name, "kubetrain.dev/version": str(version)},
        )
    except Exception as exc:  # BentoML raises many types; the build is deterministic
        raise BadInput(f"building the Bento from {serving_dir} failed: {exc}") from exc

    out_dir = scratch / "export"
    out_dir.mkdir(parents=True, exist_ok=True)
    local = out_dir / f"{name}-{version}.bento"
    bentoml.bentos.export_bento(bento.tag, str(local))
    key = bento_key(prefix, model_name, version)
    try:
        client.fput_object(bucket, key, str(local), content_type="application/octet-stream")
    except S3Error as exc:
        raise Transient(f"uploading the Bento to s3://{bucket}/{key}: {exc.code}") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise Transient(f"uploading the Bento to s3://{bucket}/{key}: {exc}") from exc
    return BentoExport(
        bento_tag=str(bento.tag),
        model_tag=model_tag,
        uri=f"s3://{bucket}/{key}",
        size_bytes=local.stat().st_size,
        seconds=time.perf_counter() - start,
    )
