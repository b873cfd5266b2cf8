"""`up` is idempotent, writes the documented env file, and `down` leaves nothing behind."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from kubetrain_platform.platform import Platform

pytestmark = pytest.mark.platform

REQUIRED = {
    "KUBECONFIG",
    "KUBETRAIN_BIN",
    "MINIO_ENDPOINT",
    "MINIO_ACCESS_KEY",
    "MINIO_SECRET_KEY",
    "MLFLOW_TRACKING_URI",
}


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_up_is_idempotent_and_down_stops_everything(tmp_path: Path) -> None:
    from kubetrain_platform.envfile import read_env_file

    plat = Platform(tmp_path / "p", ports="free", log=lambda _m: None)
    try:
        plat.up()
        pids = dict(plat.record.pids)
        assert set(pids) == {"etcd", "apiserver", "controller-manager", "minio", "mlflow"}
        env = read_env_file(plat.env_path)
        assert set(env) >= REQUIRED
        assert oct(plat.env_path.stat().st_mode & 0o777) == "0o600"
        assert (
            Path(env["KUBETRAIN_BIN"], "kubectl").exists()
            and Path(env["KUBETRAIN_BIN"], "helm").exists()
        )
        rows = plat.status()
        assert all(r.state == "ready" for r in rows), rows
        assert all(r.rss_bytes > 0 for r in rows)

        again = Platform(tmp_path / "p", log=lambda _m: None)
        again.up()
        assert again.record.pids == pids, "a second `up` must not restart anything"
        assert again.record.ports == plat.record.ports
        assert read_env_file(again.env_path) == env
    finally:
        stopped = Platform(tmp_path / "p", log=lambda _m: None).down()
    assert set(stopped) == set(pids)
    for pid in pids.values():
        assert not Platform.pid_alive(pid)
    for name in ("etcd", "apiserver", "controller-manager", "minio", "minio-console", "mlflow"):
        assert not _listening(plat.record.ports[name]), f"{name} still listening"
