"""The termination result: contract fields, size limit, unwritable path fallback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubetrain_contract import TERMINATION_MESSAGE_LIMIT, TrainResult
from kubetrain_trainer.logs import register_secret
from kubetrain_trainer.result import write_result

REQUIRED = {
    "status",
    "modelName",
    "modelVersion",
    "promoted",
    "reason",
    "accuracy",
    "championAccuracy",
    "bentoUri",
    "datasetDigest",
    "mlflowRunId",
    "skipped",
}


def test_written_to_path_and_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "termination-log"
    r = TrainResult(
        status="succeeded",
        reason="promoted",
        modelName="m",
        modelVersion="3",
        promoted=True,
        accuracy=0.98,
        championAccuracy=0.97,
        bentoUri="s3://b/.kubetrain/bentos/m-3.bento",
        datasetDigest="sha256:ab",
        mlflowRunId="r1",
        skipped=2,
        extra={"snapshotDigest": "sha256:cd"},
    )
    assert write_result(r, str(path))
    doc = json.loads(path.read_text())
    assert set(doc) >= REQUIRED
    assert doc["promoted"] is True and doc["modelVersion"] == "3" and doc["skipped"] == 2
    assert doc["snapshotDigest"] == "sha256:cd"
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == doc
    assert TrainResult.from_message(path.read_text()).bentoUri == r.bentoUri


def test_unwritable_path_falls_back_to_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "missing-dir" / "termination-log"
    assert not write_result(TrainResult(status="failed", reason="x"), str(target))
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["status"] == "failed"


def test_huge_reason_stays_under_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "t"
    write_result(
        TrainResult(status="failed", reason="e" * 10000, extra={"big": "x" * 5000}), str(path)
    )
    assert len(path.read_bytes()) < TERMINATION_MESSAGE_LIMIT
    assert json.loads(path.read_text())["status"] == "failed"


def test_registered_secrets_are_scrubbed(tmp_path: Path) -> None:
    register_secret("s3cr3t-value-xyz")
    path = tmp_path / "t"
    write_result(TrainResult(status="failed", reason="auth s3cr3t-value-xyz failed"), str(path))
    assert "s3cr3t-value-xyz" not in path.read_text()
