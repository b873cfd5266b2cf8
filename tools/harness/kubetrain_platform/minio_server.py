"""A MinIO server of its own, beside the platform's: for tests that kill and restart MinIO
and for benchmarks that need extra webhook targets.

Same binary as the platform (built from source by tools/harness/platform/build.sh), loopback only,
free ports, `MINIO_UPDATE=off`, no console UI. Each webhook target is enabled without a
queue dir, so MinIO posts events as they happen and drops them when the receiver (or the
target itself, right after a restart) is not reachable -- the behaviour the operator's
re-listing is there to repair.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubetrain_platform.platform import free_port


class StandaloneMinio:
    """One `minio server` process on 127.0.0.1 with its own data directory."""

    def __init__(
        self,
        bin_dir: Path,
        data: Path,
        user: str,
        password: str,
        webhooks: Mapping[str, str] | None = None,
    ) -> None:
        """WEBHOOKS maps a target name (KUBETRAIN -> ARN arn:minio:sqs::KUBETRAIN:webhook)
        to the URL MinIO posts its events to. The log goes to DATA's parent/minio.log."""
        self.bin = bin_dir / "minio"
        self.data = data
        self.user, self.password = user, password
        self.webhooks = dict(webhooks or {})
        self.port, self.console = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The variables `kubetrain-data` and the tests read (as in .kubetrain/platform.env)."""
        return {
            "MINIO_ENDPOINT": self.endpoint,
            "MINIO_ACCESS_KEY": self.user,
            "MINIO_SECRET_KEY": self.password,
        }

    def client(self) -> Any:
        from minio import Minio

        return Minio(
            f"127.0.0.1:{self.port}", access_key=self.user, secret_key=self.password, secure=False
        )

    def start(self, timeout: float = 60) -> StandaloneMinio:
        """Start the server (again, after kill) and wait until it reports ready."""
        self.data.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "MINIO_ROOT_USER": self.user,
            "MINIO_ROOT_PASSWORD": self.password,
            "MINIO_UPDATE": "off",
            "MINIO_BROWSER": "off",
        }
        for name, url in self.webhooks.items():
            env[f"MINIO_NOTIFY_WEBHOOK_ENABLE_{name}"] = "on"
            env[f"MINIO_NOTIFY_WEBHOOK_ENDPOINT_{name}"] = url
        with open(self.data.parent / "minio.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.bin),
                    "server",
                    str(self.data),
                    f"--address=127.0.0.1:{self.port}",
                    f"--console-address=127.0.0.1:{self.console}",
                    "--quiet",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"MinIO exited with {self.proc.returncode}; see {self.data.parent / 'minio.log'}"
                )
            try:
                with urllib.request.urlopen(f"{self.endpoint}/minio/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"MinIO on {self.endpoint} not ready after {timeout:.0f} s")

    def kill(self) -> None:
        """SIGKILL: a crash, with whatever was in flight lost."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """Orderly shutdown (SIGTERM), SIGKILL after 20 s."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
