"""The CLI on bad input: exit 2 and a failed result, without any server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubetrain_trainer.cli import main


def test_missing_manifest_is_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    term = tmp_path / "termination-log"
    for var in ("KUBETRAIN_MANIFEST", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KUBETRAIN_TERMINATION_LOG", str(term))
    assert main([]) == 2
    doc = json.loads(term.read_text())
    assert doc["status"] == "failed" and "KUBETRAIN_MANIFEST" in doc["reason"]


def test_unreachable_minio_is_transient(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    term = tmp_path / "termination-log"
    monkeypatch.setenv("KUBETRAIN_TERMINATION_LOG", str(term))
    monkeypatch.setenv("MINIO_ENDPOINT", "http://127.0.0.1:1")  # nothing listens on port 1
    monkeypatch.setenv("MINIO_ACCESS_KEY", "a")
    monkeypatch.setenv("MINIO_SECRET_KEY", "b-secret")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    monkeypatch.setenv("KUBETRAIN_CPU_LIMIT", "1")
    monkeypatch.setenv("KUBETRAIN_WORK_DIR", str(tmp_path / "work"))
    assert (
        main(["--manifest", "s3://data/.kubetrain/snapshots/x/y.json", "--model-name", "m"]) == 75
    )
    doc = json.loads(term.read_text())
    assert doc["status"] == "failed" and doc["reason"].startswith("transient")


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "KUBETRAIN_MANIFEST" in out and "Exit codes" in out


def test_sigterm_becomes_a_transient_error() -> None:
    import signal

    from kubetrain_trainer.cli import Terminated, _on_sigterm
    from kubetrain_trainer.errors import Transient

    with pytest.raises(Terminated, match="signal 15") as exc:
        _on_sigterm(signal.SIGTERM, None)
    assert isinstance(exc.value, Transient)
