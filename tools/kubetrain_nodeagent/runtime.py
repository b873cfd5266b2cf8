"""Container processes: one process group per container instance, waited on via pidfd.

Each container instance is `subprocess.Popen(..., start_new_session=True)`, so it leads
its own session and process group and `os.killpg` reaches everything it spawned (unless a
child calls setsid itself: a known limit). stdout and stderr go straight to a log file,
so no thread or pipe pumps output. Exit is awaited with a Linux pidfd registered on the
event loop (no thread per child; falls back to polling where pidfd is unavailable).

When the main process exits, the rest of its group is killed, as a container's
processes die with its PID 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class StartError(Exception):
    """The process could not be started (exit code 128, reason StartError)."""


def which(argv0: str, env: Mapping[str, str]) -> str:
    """Resolve argv[0] on the container's PATH, with the runtime's wording on failure."""
    if "/" in argv0:
        if not os.access(argv0, os.X_OK):
            raise StartError(f'exec: "{argv0}": stat {argv0}: no such file or executable')
        return argv0
    found = shutil.which(argv0, path=env.get("PATH", os.defpath))
    if not found:
        raise StartError(f'exec: "{argv0}": executable file not found in $PATH')
    return found


@dataclass
class Process:
    """A running container instance."""

    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    @classmethod
    def start(cls, argv: list[str], env: Mapping[str, str], cwd: str, log_path: Path) -> Process:
        exe = which(argv[0], env)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            try:
                popen = subprocess.Popen(
                    [exe, *argv[1:]],
                    env=dict(env),
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                raise StartError(f"failed to start {argv[0]!r}: {exc}") from exc
        return cls(popen=popen, log_path=log_path)

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    async def wait(self) -> int:
        """Wait for the leader to exit; return its exit code (128+N if killed by signal N)."""
        rc = self.popen.poll()
        if rc is None:
            rc = await wait_pid(self.popen)
        # Orphans of the container die with it.
        self.signal_group(signal.SIGKILL)
        return 128 - rc if rc < 0 else rc

    async def terminate(self, grace: float) -> int:
        """SIGTERM the group, SIGKILL after `grace` seconds; return the exit code."""
        if self.popen.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                return await asyncio.wait_for(asyncio.shield(self.wait()), timeout=max(grace, 0))
            except TimeoutError:
                self.signal_group(signal.SIGKILL)
        return await self.wait()


async def wait_pid(popen: subprocess.Popen[bytes]) -> int:
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(popen.pid)
    except (AttributeError, OSError):
        while (rc := popen.poll()) is None:
            await asyncio.sleep(0.2)
        return rc
    done = loop.create_future()

    def readable() -> None:
        if not done.done():
            done.set_result(None)

    try:
        loop.add_reader(fd, readable)
        try:
            if popen.poll() is None:
                await done
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)
    rc = popen.wait()
    return rc


def read_termination_message(path: Path, limit: int = 4096) -> str:
    """The first `limit` bytes of the termination message file (kubelet's cap), or ""."""
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def tail_log(path: Path, lines: int = 80, limit: int = 2048) -> str:
    """The last `lines` lines, at most `limit` bytes, of a log (FallbackToLogsOnError)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError:
        return ""
    text = b"\n".join(data.splitlines()[-lines:])[-limit:]
    return text.decode("utf-8", "replace")
