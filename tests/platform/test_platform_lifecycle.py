"""`up` starts a real node and is idempotent; `down` leaves nothing behind on the host.

This module brings up its own platform, so it runs before the session platform starts
(`own_node` marker, ordered first by tests/conftest.py): one node runs on a machine at a time.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest
from kubetrain_platform.node import LOCK, OUTSIDE_PATHS, SYSCTLS
from kubetrain_platform.platform import COMPONENT_ORDER, Platform, reclaim_stale_node

pytestmark = [pytest.mark.platform, pytest.mark.own_node, pytest.mark.timeout(900)]

REQUIRED = {
    "KUBECONFIG",
    "KUBETRAIN_BIN",
    "MINIO_ENDPOINT",
    "MINIO_ACCESS_KEY",
    "MINIO_SECRET_KEY",
    "MLFLOW_TRACKING_URI",
    "KUBETRAIN_INGRESS_URL",
    "KUBETRAIN_REGISTRY",
}
SERVERS = set(COMPONENT_ORDER)  # every server `up` starts, the node included


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _sysctls() -> dict[str, str]:
    return {k: (Path("/proc/sys") / k).read_text().strip() for k in SYSCTLS}


def _chains() -> list[str]:
    found = []
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            out = subprocess.run(
                [tool, "-w", "-t", table, "-S"], capture_output=True, text=True, check=True
            ).stdout
            found += [
                f"{tool}/{table}/{line.split()[1]}"
                for line in out.splitlines()
                if line.startswith("-N ") and line.split()[1].startswith(("KUBE-", "CNI-"))
            ]
    return found


def _kubectl(plat: Platform, *args: str) -> str:
    return plat.kubectl(list(args))


def test_node_up_is_idempotent_and_down_leaves_nothing(tmp_path: Path) -> None:
    from kubetrain_platform.envfile import read_env_file

    reclaim_stale_node(print)  # a node killed with an earlier session must not count here
    before_sysctls = _sysctls()
    before_outside = {str(p): p.exists() for p in OUTSIDE_PATHS}
    assert not _chains(), "KUBE-/CNI- chains exist before the test: another node is running"
    plat = Platform(tmp_path / "p", ports="free", log=lambda _m: None)
    lay = plat.layout
    shim_pids: list[int] = []
    try:
        plat.up()
        pids = dict(plat.record.pids)
        assert set(pids) == SERVERS
        env = read_env_file(plat.env_path)
        assert set(env) >= REQUIRED
        assert oct(plat.env_path.stat().st_mode & 0o777) == "0o600"
        rows = {r.name: r for r in plat.status()}
        assert all(rows[n].state == "ready" for n in SERVERS), rows
        assert all(rows[n].rss_bytes > 0 for n in SERVERS)

        # The node is Ready, CoreDNS and Traefik run as pods with real pod IPs.
        node = json.loads(_kubectl(plat, "get", "node", lay.node_name, "-o", "json"))
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True"
        pods = json.loads(_kubectl(plat, "-n", "kube-system", "get", "pods", "-o", "json"))
        by_app = {
            p["metadata"]["labels"].get("k8s-app")
            or p["metadata"]["labels"].get("app.kubernetes.io/name"): p
            for p in pods["items"]
        }
        assert by_app["kube-dns"]["status"]["podIP"].startswith(f"10.244.{lay.index}.")
        slices = json.loads(
            _kubectl(
                plat,
                "-n",
                "kube-system",
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=kube-dns",
                "-o",
                "json",
            )
        )
        addrs = [a for s in slices["items"] for e in s["endpoints"] for a in e["addresses"]]
        assert addrs == [by_app["kube-dns"]["status"]["podIP"]]
        # Traefik answers on loopback (404: no Ingress yet) and kubectl logs works.
        with socket.create_connection(("127.0.0.1", plat.record.ports["ingress"]), timeout=5):
            pass
        assert _kubectl(plat, "-n", "kube-system", "logs", "deploy/coredns").strip()
        shim_pids = plat.node_host.shim_pids()
        assert shim_pids, "no containerd shim for the add-on pods"

        again = Platform(tmp_path / "p", log=print)
        again.up()
        assert again.record.pids == pids, "a second `up` must not restart anything"
        assert again.record.ports == plat.record.ports
        assert read_env_file(again.env_path) == env
    finally:
        stopped = Platform(tmp_path / "p", log=lambda _m: None).down()
    assert set(stopped) == set(pids)
    # processes and shims
    for pid in [*pids.values(), *shim_pids]:
        assert not Platform.pid_alive(pid), f"pid {pid} survived down"
    for name in ("etcd", "apiserver", "minio", "mlflow", "registry", "ingress"):
        assert not _listening(plat.record.ports[name]), f"{name} still listening"
    # mounts, bridge, netns
    mountinfo = Path("/proc/self/mountinfo").read_text()
    assert str(tmp_path) not in mountinfo
    assert not Path(f"/sys/class/net/{lay.bridge}").exists()
    netns = lay.containerd_state / "netns"
    assert not netns.exists() or not any(netns.iterdir())
    # iptables chains and cgroups
    assert not _chains()
    for ctrl in Path("/sys/fs/cgroup").iterdir():
        assert not (ctrl / lay.cgroup_root.lstrip("/")).exists(), f"cgroup left in {ctrl}"
    # files outside the state dir, the lock
    assert {str(p): p.exists() for p in OUTSIDE_PATHS} == before_outside
    assert not LOCK.exists()
    # host sysctls that kubelet and the pod network changed
    assert _sysctls() == before_sysctls
    assert plat.leftovers() == []


def test_second_node_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    """While one node runs, another platform says which one holds the machine."""
    first = Platform(tmp_path / "a", ports="free", log=lambda _m: None)
    try:
        first.up()
        second = Platform(tmp_path / "b", ports="free", log=lambda _m: None)
        with pytest.raises(Exception, match="another kubetrain node is running") as info:
            second.up()
        assert str(tmp_path / "a") in str(info.value)
        second.down()
    finally:
        first.down()
    assert first.leftovers() == []
