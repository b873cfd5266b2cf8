"""Unit tests of the node agent's local machinery: processes, probes, volumes files, CLI.

Real local processes and a loopback HTTP server; no Kubernetes.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import aiohttp
import psutil
import pytest
from aiohttp import web
from kubetrain_nodeagent import cli, pod, podnet, probes, runtime, settings, volumes

ENV = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}


def _alive(pid: int) -> bool:
    """Running (a zombie whose parent is gone counts as dead: only PID 1 may reap it)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_process_exit_code_log_and_group_kill(tmp_path: Path) -> None:
    async def main() -> None:
        log = tmp_path / "c.log"
        p = runtime.Process.start(
            [
                "python",
                "-c",
                "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)",
            ],
            ENV,
            str(tmp_path),
            log,
        )
        assert await p.wait() == 3
        text = log.read_text()
        assert "out" in text and "err" in text

        # A child in the same process group dies with the container.
        pidfile = tmp_path / "child.pid"
        script = (
            "import subprocess, sys, time;"
            f"c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
            f"open({str(pidfile)!r}, 'w').write(str(c.pid));"
            "time.sleep(60)"
        )
        p2 = runtime.Process.start(["python", "-c", script], ENV, str(tmp_path), log)
        for _ in range(100):
            if pidfile.exists() and pidfile.read_text():
                break
            await asyncio.sleep(0.05)
        child = int(pidfile.read_text())
        t0 = time.monotonic()
        rc = await p2.terminate(grace=5)
        assert rc == 128 + 15  # SIGTERM
        assert time.monotonic() - t0 < 4
        await asyncio.sleep(0.2)
        assert not _alive(child)

    run(main())


def test_terminate_escalates_to_sigkill(tmp_path: Path) -> None:
    async def main() -> None:
        script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
        log = tmp_path / "k.log"
        p = runtime.Process.start(["python", "-c", script], ENV, str(tmp_path), log)
        for _ in range(100):
            if "up" in log.read_text():
                break
            await asyncio.sleep(0.05)
        t0 = time.monotonic()
        assert await p.terminate(grace=0.5) == 128 + 9
        assert 0.4 < time.monotonic() - t0 < 5

    run(main())


def test_start_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(
        runtime.StartError, match='exec: "no-such-binary-xyz": executable file not found in \\$PATH'
    ):
        runtime.Process.start(["no-such-binary-xyz"], ENV, str(tmp_path), tmp_path / "x.log")


def test_termination_message_and_log_tail(tmp_path: Path) -> None:
    f = tmp_path / "term"
    f.write_bytes(b"x" * 5000)
    assert len(runtime.read_termination_message(f)) == 4096
    assert runtime.read_termination_message(tmp_path / "missing") == ""
    log = tmp_path / "log"
    log.write_text("".join(f"line {i}\n" for i in range(200)))
    tail = runtime.tail_log(log)
    assert tail.endswith("line 199") and "line 119" not in tail and len(tail) <= 2048


def test_probes_http_tcp_exec(tmp_path: Path) -> None:
    async def main() -> None:
        app = web.Application()

        async def ok(_: web.Request) -> web.Response:
            return web.Response(text="ok")

        async def bad(_: web.Request) -> web.Response:
            return web.Response(status=500)

        app.router.add_get("/ok", ok)
        app.router.add_get("/bad", bad)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            async with aiohttp.ClientSession() as s:
                kw = {
                    "pod_ip": "127.0.0.1",
                    "ports": {"http": port},
                    "env": ENV,
                    "cwd": str(tmp_path),
                    "session": s,
                }
                assert await probes.run_probe(
                    {"httpGet": {"path": "/ok", "port": "http"}}, **kw
                ) == (True, "")
                ok_, msg = await probes.run_probe({"httpGet": {"path": "/bad", "port": port}}, **kw)
                assert not ok_ and "statuscode: 500" in msg
                assert (await probes.run_probe({"tcpSocket": {"port": port}}, **kw))[0]
                assert not (await probes.run_probe({"tcpSocket": {"port": 1}}, **kw))[0]
                assert (
                    await probes.run_probe({"exec": {"command": ["python", "-c", "pass"]}}, **kw)
                )[0]
                ok_, msg = await probes.run_probe(
                    {
                        "exec": {"command": ["python", "-c", "import time; time.sleep(5)"]},
                        "timeoutSeconds": 1,
                    },
                    **kw,
                )
                assert not ok_ and "timed out" in msg
                ok_, msg = await probes.run_probe({"httpGet": {"port": "nope"}}, **kw)
                assert not ok_ and "not a named port" in msg
                assert not (await probes.run_probe({"grpc": {"port": 1}}, **kw))[0]
                # Only loopback targets: an explicit non-loopback host is refused, not dialled.
                for handler in ("httpGet", "tcpSocket"):
                    ok_, msg = await probes.run_probe(
                        {handler: {"host": "192.0.2.1", "port": port}}, **kw
                    )
                    assert not ok_ and "'192.0.2.1' is not a loopback address" in msg
                ok_, msg = await probes.run_probe(
                    {"httpGet": {"host": "example.com", "port": port}}, **kw
                )
                assert not ok_ and "not a loopback address" in msg
                assert await probes.run_probe(
                    {"httpGet": {"host": "localhost", "path": "/ok", "port": port}}, **kw
                ) == (True, "")
        finally:
            await runner.cleanup()

    run(main())


def test_probe_timing_defaults() -> None:
    t = probes.ProbeTiming.of({})
    assert (t.initial_delay, t.period, t.timeout, t.success_threshold, t.failure_threshold) == (
        0,
        10,
        1,
        1,
        3,
    )


def test_volume_key_projection(tmp_path: Path) -> None:
    volumes._project_keys(tmp_path, {"a": "1", "b": "2"}, None, 0o644, "configmap x", False)
    assert (tmp_path / "a").read_text() == "1"
    volumes._project_keys(
        tmp_path / "items",
        {"a": "1"},
        [{"key": "a", "path": "sub/file", "mode": 0o600}],
        0o644,
        "cm",
        False,
    )
    f = tmp_path / "items" / "sub" / "file"
    assert f.read_text() == "1" and (f.stat().st_mode & 0o777) == 0o600
    with pytest.raises(volumes.VolumeError, match="non-existent key: zz"):
        volumes._project_keys(
            tmp_path, {"a": "1"}, [{"key": "zz", "path": "p"}], 0o644, "configmap x", False
        )
    with pytest.raises(volumes.VolumeError, match="escapes"):
        volumes._safe_join(tmp_path, "../../etc/passwd")


def test_token_refresh_schedule() -> None:
    tok = volumes.TokenFile(
        path=Path("/x"), audience="", expiration_seconds=3600, mode=0o644, expires_at=1000.0 + 3600
    )
    when = volumes.next_refresh([tok], 1000.0)
    assert when is not None and abs(when - (1000.0 + 0.8 * 3600)) < 1e-6
    assert volumes.next_refresh([], 0.0) is None


def test_podnet_ranges_are_loopback_only() -> None:
    assert podnet.resolve("auto") == "127.0.0.0/24"
    assert podnet.resolve("127.0.77.0/24") == "127.0.77.0/24"
    assert podnet.resolve("127.3.0.9/16") == "127.3.0.0/16"  # host bits are dropped
    assert podnet.is_local("127.0.0.9")
    assert not podnet.is_local("203.0.113.254")  # TEST-NET-3: never local here
    for cidr in ("10.244.0.0/24", "192.168.1.0/24", "8.8.8.0/24", "126.255.255.0/24"):
        with pytest.raises(podnet.PodNetworkError, match=r"must lie inside 127\.0\.0\.0/8"):
            podnet.resolve(cidr)
    with pytest.raises(podnet.PodNetworkError, match="may only send traffic to loopback"):
        podnet.check_range("10.244.0.0/24")
    with pytest.raises(podnet.PodNetworkError, match="must lie inside"):
        podnet.check_range("::1/128")
    with pytest.raises(podnet.PodNetworkError, match="between /16 and /30"):
        podnet.check_range("127.0.0.0/8")
    with pytest.raises(podnet.PodNetworkError, match="between /16 and /30"):
        podnet.check_range("127.0.0.4/31")
    with pytest.raises(podnet.PodNetworkError, match="not a CIDR range"):
        podnet.check_range("127.0.0.0/24x")
    # The route-adding code path is gone for good.
    assert not hasattr(podnet, "add_local_route") and not hasattr(podnet, "prepare")


def test_ip_allocator_never_hands_out_host_addresses() -> None:
    async def main() -> None:
        ips = pod.IPAllocator(podnet.resolve("auto"), "127.0.0.1", None)
        got = [await ips.allocate(f"uid-{i}") for i in range(253)]
        assert got[:2] == ["127.0.0.2", "127.0.0.3"] and got[-1] == "127.0.0.254"
        assert len(set(got)) == 253
        assert not {"127.0.0.0", "127.0.0.1", "127.0.0.255"} & set(got)
        with pytest.raises(volumes.VolumeError, match="no free pod IP left"):
            await ips.allocate("one-too-many")
        assert await ips.allocate("uid-7") == got[7]  # a pod keeps its IP
        ips.release("uid-7")
        assert await ips.allocate("new") == got[7]  # the only free one
        # A range elsewhere in 127/8 still never contains 127.0.0.1; the host IP is skipped.
        other = pod.IPAllocator("127.0.9.0/30", "127.0.9.1", None)
        assert [await other.allocate("a")] == ["127.0.9.2"]
        with pytest.raises(volumes.VolumeError):
            await other.allocate("b")

    run(main())


def test_settings_validation(tmp_path: Path) -> None:
    settings.AgentSettings(pod_cidr="127.0.3.0/24").validate()
    settings.AgentSettings(pod_cidr="auto").validate()
    with pytest.raises(ValueError, match=r"must lie inside 127\.0\.0\.0/8"):
        settings.AgentSettings(pod_cidr="10.244.3.0/24").validate()
    with pytest.raises(ValueError, match=r"must lie inside 127\.0\.0\.0/8"):
        settings.AgentSettings(pod_cidr="8.8.8.0/24").validate()
    with pytest.raises(ValueError, match="between /16 and /30"):
        settings.AgentSettings(pod_cidr="127.0.0.0/8").validate()
    with pytest.raises(ValueError, match="venv-bin"):
        settings.AgentSettings(venv_bin=str(tmp_path / "nope")).validate()
    assert not hasattr(settings.AgentSettings(), "manage_routes")
    assert not hasattr(settings.IngressSettings(), "endpoints_from_pods")


def test_cli_help_and_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    assert "run" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--help"])
    assert exc.value.code == 0
    assert "--pod-cidr" in capsys.readouterr().out
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("KUBETRAIN_PLATFORM_ENV", str(tmp_path / "none.env"))
    with pytest.raises(SystemExit, match="no kubeconfig"):
        cli.main(["run"])
    with pytest.raises(SystemExit, match="does not exist"):
        cli.main(["run", "--kubeconfig", str(tmp_path / "missing")])
    env = tmp_path / "platform.env"
    kc = tmp_path / "kc"
    kc.write_text("{}")
    env.write_text(f"export KUBECONFIG={kc}\n")
    monkeypatch.setenv("KUBETRAIN_PLATFORM_ENV", str(env))
    assert cli.resolve_kubeconfig(None) == str(kc)
    # A non-loopback pod range is refused before anything starts, with the reason.
    capsys.readouterr()
    assert cli.main(["run", "--kubeconfig", str(kc), "--pod-cidr", "10.244.0.0/24"]) == 2
    err = capsys.readouterr().err
    assert "error: --pod-cidr '10.244.0.0/24' must lie inside 127.0.0.0/8" in err
    assert "loopback" in err
    for gone in (["run", "--no-pod-routes"], ["ingress", "--endpoints-from-pods"]):
        with pytest.raises(SystemExit) as exc:
            cli.main([*gone, "--kubeconfig", str(kc)])
        assert exc.value.code == 2
        assert "unrecognized arguments" in capsys.readouterr().err
