"""Configuration of the local node: pure functions from a `NodeLayout` to config files.

Design
------
Everything the node's daemons read (containerd's TOML, the CNI conflist, kubelet's and
kube-proxy's component configs, the scheduler's) is rendered here from one frozen
`NodeLayout`, with no I/O, so every setting this VM needs is unit-tested and commented in one
place (see docs/node.md for why each exists). `node.py` writes the files and runs the
processes.

Every path a daemon writes to lives under the platform's state dir (`layout.root`), and every
name that is global on the host (bridge, CNI network, cgroup root) carries the node's network
index, so a node's traces are findable, and removable, by name.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Where Debian's containernetworking-plugins package installs the CNI plugins.
CNI_BIN_DIR = Path("/usr/lib/cni")


@dataclass(frozen=True)
class NodeLayout:
    """Names, addresses, ports and paths of one local node."""

    root: Path
    """The node's directory inside the platform's state dir."""
    index: int
    """Network index 0-254: picks the bridge name, pod CIDR and Service CIDR."""
    node_name: str
    """The Node object's name."""
    kubelet_port: int
    """kubelet's HTTPS port (logs, exec, port-forward go through it)."""
    kubelet_healthz_port: int
    """kubelet's plain-HTTP /healthz port (loopback only)."""
    proxy_healthz_port: int
    """kube-proxy's /healthz port (loopback only)."""
    proxy_metrics_port: int
    """kube-proxy's /metrics port (loopback only)."""
    scheduler_port: int
    """kube-scheduler's HTTPS port (loopback only)."""
    registry: str
    """host:port of the local image registry (plain HTTP, loopback)."""
    pause_image: str
    """Full reference of the sandbox (pause) image in that registry."""

    # ------------------------------------------------------------------ network
    @property
    def bridge(self) -> str:
        return f"ktbr{self.index}"

    @property
    def cni_network(self) -> str:
        return f"kubetrain-{self.index}"

    @property
    def pod_cidr(self) -> str:
        return f"10.244.{self.index}.0/24"

    @property
    def gateway(self) -> str:
        """The bridge's address: the node IP, the apiserver's advertise address."""
        return f"10.244.{self.index}.1"

    @property
    def service_cidr(self) -> str:
        return f"10.96.{self.index}.0/24"

    @property
    def kubernetes_service_ip(self) -> str:
        return str(ipaddress.ip_network(self.service_cidr)[1])

    @property
    def dns_ip(self) -> str:
        return str(ipaddress.ip_network(self.service_cidr)[10])

    @property
    def cgroup_root(self) -> str:
        """kubelet puts `kubepods` under this cgroup in every hierarchy."""
        return f"/kubetrain-{self.index}"

    # ------------------------------------------------------------------ paths
    @property
    def containerd_dir(self) -> Path:
        return self.root / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd_dir / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.containerd_dir / "config.toml"

    @property
    def containerd_state(self) -> Path:
        return self.containerd_dir / "state"

    @property
    def registry_hosts_dir(self) -> Path:
        return self.containerd_dir / "certs.d"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet_dir(self) -> Path:
        return self.root / "kubelet"

    @property
    def pod_logs_dir(self) -> Path:
        return self.root / "pod-logs"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet-config.yaml"

    @property
    def proxy_config(self) -> Path:
        return self.root / "kube-proxy-config.yaml"

    @property
    def scheduler_config(self) -> Path:
        return self.root / "kube-scheduler-config.yaml"


def containerd_toml(layout: NodeLayout, runc: Path) -> str:
    """containerd v2 (config version 3) for a kubelet on this VM."""
    d = layout.containerd_dir
    return f"""\
# Written by kubetrain-platform; every path is inside the platform's state dir.
version = 3
root = {_q(d / "root")}
state = {_q(layout.containerd_state)}
# Nothing from the host's /etc/containerd: this containerd is the node's alone.
imports = []

[grpc]
  address = {_q(layout.containerd_socket)}

[ttrpc]
  address = {_q(d / "containerd.sock.ttrpc")}

[debug]
  level = "warn"

[plugins]
  [plugins."io.containerd.cri.v1.runtime"]
    enable_selinux = false
    # The VM lacks CAP_SYS_RESOURCE: without this, runc fails to lower oom_score_adj and
    # every sandbox dies with "can't get final child's PID from pipe: EOF".
    restrict_oom_score_adj = true
    # Lets non-root pods bind ports below 1024 (CoreDNS on :53) without a capability.
    enable_unprivileged_ports = true
    enable_unprivileged_icmp = true
    # Pod network namespaces under the state dir, not /run/netns.
    netns_mounts_under_state_dir = true
    [plugins."io.containerd.cri.v1.runtime".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
          BinaryName = {_q(runc)}
          Root = {_q(d / "runc")}
          SystemdCgroup = false
    [plugins."io.containerd.cri.v1.runtime".cni]
      bin_dirs = [{_q(CNI_BIN_DIR)}]
      conf_dir = {_q(layout.cni_conf_dir)}
      max_conf_num = 1

  [plugins."io.containerd.cri.v1.images"]
    snapshotter = "overlayfs"
    [plugins."io.containerd.cri.v1.images".pinned_images]
      sandbox = {_q(layout.pause_image)}
    [plugins."io.containerd.cri.v1.images".registry]
      config_path = {_q(layout.registry_hosts_dir)}

  # NRI would open a socket in /var/run/nri; nothing here uses it.
  [plugins."io.containerd.nri.v1.nri"]
    disable = true

  [plugins."io.containerd.transfer.v1.local"]
    config_path = {_q(layout.registry_hosts_dir)}

  [plugins."io.containerd.internal.v1.opt"]
    path = {_q(d / "opt")}
"""


def registry_hosts_toml(registry: str) -> str:
    """hosts.toml that lets containerd pull from the plain-HTTP loopback registry."""
    return f"""\
server = "http://{registry}"

[host."http://{registry}"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
"""


def cni_conflist(layout: NodeLayout) -> dict[str, Any]:
    """A bridge network whose pods route only to the pod and Service CIDRs.

    No default route: a pod cannot send a packet off this machine, which is the workplace's
    network rule enforced by construction rather than by policy.
    """
    return {
        "cniVersion": "1.0.0",
        "name": layout.cni_network,
        "plugins": [
            {
                "type": "bridge",
                "bridge": layout.bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(layout.cni_ipam_dir),
                    "ranges": [[{"subnet": layout.pod_cidr, "gateway": layout.gateway}]],
                    "routes": [{"dst": layout.pod_cidr}, {"dst": layout.service_cidr}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(layout: NodeLayout, *, ca: Path, cert: Path, key: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": layout.gateway,
        "port": layout.kubelet_port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": layout.kubelet_healthz_port,
        "tlsCertFile": str(cert),
        "tlsPrivateKeyFile": str(key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        # This VM mounts cgroup v1 (hybrid); kubelet 1.36 refuses it unless told otherwise.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": layout.cgroup_root,
        "failSwapOn": False,
        "podLogsDir": str(layout.pod_logs_dir),
        "clusterDNS": [layout.dns_ip],
        "clusterDomain": "cluster.local",
        # Images cannot be pulled back from anywhere but the local registry: never collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # A small laptop-like node: evict only when the disk is really full.
        "evictionHard": {
            "nodefs.available": "2%",
            "imagefs.available": "2%",
            "memory.available": "200Mi",
        },
        "serializeImagePulls": False,
        "maxPods": 110,
        "registerNode": True,
        "staticPodPath": "",
        "resolvConf": "/etc/resolv.conf",
        "shutdownGracePeriod": "0s",
        "volumePluginDir": str(layout.kubelet_dir / "volume-plugins"),
    }


def kube_proxy_config(layout: NodeLayout, kubeconfig: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": layout.node_name,
        "mode": "iptables",
        "clusterCIDR": layout.pod_cidr,
        # Pod -> Service -> pod on the same bridge: SNAT to the bridge so replies come back
        # through the host instead of being bridged straight past conntrack.
        "iptables": {"masqueradeAll": True},
        # Zeros leave the host's conntrack sysctls alone (nothing to restore at teardown).
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "nodePortAddresses": [f"{layout.gateway}/32"],
        "healthzBindAddress": f"127.0.0.1:{layout.proxy_healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{layout.proxy_metrics_port}",
    }


def scheduler_config(kubeconfig: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "leaderElection": {"leaderElect": False},
    }


def to_json(doc: dict[str, Any]) -> str:
    """YAML is a superset of JSON: component configs are written as JSON, no PyYAML needed."""
    return json.dumps(doc, indent=2) + "\n"


def _q(value: object) -> str:
    return json.dumps(str(value))
