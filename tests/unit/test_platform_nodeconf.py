"""The node's configs and add-on manifests: the settings this VM needs, and isolation by index."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from kubetrain_platform import addons, nodeconf
from kubetrain_platform.nodeconf import NodeLayout


def _layout(tmp_path: Path, index: int = 7) -> NodeLayout:
    return NodeLayout(
        root=tmp_path / "node",
        index=index,
        node_name=f"kubetrain-node-{index}",
        kubelet_port=30250,
        kubelet_healthz_port=30248,
        proxy_healthz_port=30256,
        proxy_metrics_port=30249,
        scheduler_port=30259,
        registry="127.0.0.1:35001",
        pause_image="127.0.0.1:35001/pause:abc",
    )


def test_containerd_config_keeps_everything_in_the_state_dir(tmp_path: Path) -> None:
    lay = _layout(tmp_path)
    doc = tomllib.loads(nodeconf.containerd_toml(lay, Path("/opt/runc")))
    assert doc["version"] == 3
    assert doc["imports"] == []
    for path in (doc["root"], doc["state"], doc["grpc"]["address"], doc["ttrpc"]["address"]):
        assert path.startswith(str(tmp_path)), path
    rt = doc["plugins"]["io.containerd.cri.v1.runtime"]
    # The VM lacks CAP_SYS_RESOURCE: every sandbox fails without this.
    assert rt["restrict_oom_score_adj"] is True
    assert rt["netns_mounts_under_state_dir"] is True
    runc = rt["containerd"]["runtimes"]["runc"]
    assert runc["options"]["BinaryName"] == "/opt/runc"
    assert runc["options"]["SystemdCgroup"] is False
    assert runc["options"]["Root"].startswith(str(tmp_path))
    assert rt["cni"]["conf_dir"] == str(lay.cni_conf_dir)
    images = doc["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == lay.pause_image
    assert images["registry"]["config_path"] == str(lay.registry_hosts_dir)
    assert doc["plugins"]["io.containerd.nri.v1.nri"]["disable"] is True


def test_registry_hosts_is_plain_http_on_loopback() -> None:
    doc = tomllib.loads(nodeconf.registry_hosts_toml("127.0.0.1:35001"))
    assert doc["server"] == "http://127.0.0.1:35001"
    assert doc["host"]["http://127.0.0.1:35001"]["capabilities"] == ["pull", "resolve"]


def test_pod_network_has_no_default_route(tmp_path: Path) -> None:
    lay = _layout(tmp_path)
    conf = nodeconf.cni_conflist(lay)
    bridge = conf["plugins"][0]
    assert bridge["bridge"] == "ktbr7" and bridge["isGateway"] and not bridge["ipMasq"]
    routes = [r["dst"] for r in bridge["ipam"]["routes"]]
    assert routes == ["10.244.7.0/24", "10.96.7.0/24"]
    assert "0.0.0.0/0" not in routes
    assert bridge["ipam"]["dataDir"].startswith(str(tmp_path))


def test_indexes_never_share_names_or_addresses(tmp_path: Path) -> None:
    a, b = _layout(tmp_path, 0), _layout(tmp_path, 1)
    for attr in (
        "bridge",
        "pod_cidr",
        "service_cidr",
        "gateway",
        "dns_ip",
        "cgroup_root",
        "cni_network",
    ):
        assert getattr(a, attr) != getattr(b, attr), attr
    assert a.dns_ip == "10.96.0.10" and a.kubernetes_service_ip == "10.96.0.1"


def test_kubelet_config_has_this_vms_settings(tmp_path: Path) -> None:
    lay = _layout(tmp_path)
    cfg = nodeconf.kubelet_config(lay, ca=Path("/ca"), cert=Path("/c"), key=Path("/k"))
    assert cfg["failCgroupV1"] is False
    assert cfg["cgroupDriver"] == "cgroupfs"
    assert cfg["failSwapOn"] is False
    assert cfg["imageGCHighThresholdPercent"] == 100
    assert cfg["authentication"]["anonymous"]["enabled"] is False
    assert cfg["authorization"]["mode"] == "Webhook"
    assert cfg["readOnlyPort"] == 0
    assert cfg["clusterDNS"] == [lay.dns_ip]
    assert cfg["podLogsDir"].startswith(str(tmp_path))
    assert cfg["containerRuntimeEndpoint"] == f"unix://{lay.containerd_socket}"
    json.loads(nodeconf.to_json(cfg))


def test_kube_proxy_leaves_host_conntrack_alone(tmp_path: Path) -> None:
    cfg = nodeconf.kube_proxy_config(_layout(tmp_path), Path("/kp"))
    assert cfg["mode"] == "iptables"
    assert cfg["conntrack"]["maxPerCore"] == 0 and cfg["conntrack"]["min"] == 0
    assert cfg["nodePortAddresses"] == ["10.244.7.1/32"]
    assert cfg["healthzBindAddress"].startswith("127.0.0.1:")


def test_addons_dns_service_ip_and_ingress_on_loopback(tmp_path: Path) -> None:
    lay = _layout(tmp_path)
    images = {"coredns": "r/coredns:1", "traefik": "r/traefik:1"}
    docs = [
        json.loads(line)
        for line in addons.manifests(
            lay, images=images, ingress_port=38080, ingress_admin_port=38090, volumes_dir=tmp_path
        ).splitlines()
    ]
    svc = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "kube-dns")
    assert svc["spec"]["clusterIP"] == lay.dns_ip
    ic = next(d for d in docs if d["kind"] == "IngressClass")
    assert ic["metadata"]["name"] == "traefik"
    traefik = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "traefik"
    )
    args = traefik["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--entryPoints.web.address=127.0.0.1:38080" in args
    pvs = [d for d in docs if d["kind"] == "PersistentVolume"]
    assert len(pvs) == addons.VOLUMES
    assert all(p["spec"]["hostPath"]["path"].startswith(str(tmp_path)) for p in pvs)
    sc = next(d for d in docs if d["kind"] == "StorageClass")
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    for d in docs:
        if d["kind"] == "Deployment":
            for c in d["spec"]["template"]["spec"]["containers"]:
                assert c["securityContext"]["runAsNonRoot"] is True
                assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
