"""The service module imports without a model (tooling keeps working) but will not serve."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # two subprocesses importing BentoML (several seconds each)

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json
from kubetrain_serving import service
svc = service.MnistClassifier
out = {
    "name": svc.name,
    "routes": sorted(api.route for api in svc.apis.values()),
    "batchable": {api.route: api.batchable for api in svc.apis.values()},
    "model_ref": service._model_ref() is None,
    "middleware": [m.__name__ for m, _ in svc.middlewares],
}
try:
    svc.inner()
except RuntimeError as exc:
    out["error"] = str(exc)
print(json.dumps(out))
"""


def _run(tmp_path: Path, **extra: str) -> dict[str, object]:
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBETRAIN_")}
    env.update(BENTOML_HOME=str(tmp_path / "empty-home"), BENTOML_DO_NOT_TRACK="true", **extra)
    env["PYTHONPATH"] = os.pathsep.join(
        str(REPO / p) for p in ("serving", "tools", "tools/harness")
    )
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_import_without_model_env_works_but_the_service_refuses_to_start(tmp_path: Path) -> None:
    out = _run(tmp_path)
    assert out["name"] == "kubetrain_mnist"
    assert out["routes"] == ["/classify", "/predict"]
    assert out["batchable"] == {"/classify": False, "/predict": False}
    assert out["model_ref"] is True
    assert out["middleware"] == ["RequestGuard"]
    assert "no model to serve: set KUBETRAIN_BENTO_MODEL=<name>:<version>" in str(out["error"])


def test_bentoml_batcher_setting_makes_classify_batchable(tmp_path: Path) -> None:
    out = _run(tmp_path, KUBETRAIN_SERVING_BATCHER="bentoml")
    assert out["batchable"] == {"/classify": True, "/predict": False}
