"""The local node's host side: bridge, sysctls, the daemons' files, and a teardown that
leaves nothing behind.

Design
------
containerd, kubelet, kube-proxy and kube-scheduler are ordinary platform components (started,
health-checked and stopped by `Platform`); this module does what surrounds them on the host:

* `prepare()` takes the machine-wide node lock, records the host sysctls kubelet and the
  pod network change, creates the bridge with the node's address (so the apiserver can
  advertise it before the first pod exists) and writes every config from `nodeconf`.
* `teardown()` runs after the daemons are stopped, and also after a crash: it kills what is
  left in the node's cgroups and its containerd shims, unmounts everything under the node's
  directory, deletes the bridge, the `KUBE-*`/`CNI-*` iptables chains and the node's
  cgroups, removes the files the node wrote outside the state dir, restores the sysctls and
  releases the lock. Each step is idempotent.
* `leftovers()` says what of all that is still on the host: the teardown test asserts it is
  empty, and `up` uses it to recover from a crash.

Only one node runs on a machine at a time: kube-proxy and kubelet own fixed iptables chain
names in the host's network namespace, so a second node would rewrite the first one's
Service rules. The lock (`/run/kubetrain-node.json`) names the state dir that holds the node,
and a second platform is refused with a message that says which one and how to stop it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from kubetrain_platform import nodeconf
from kubetrain_platform.nodeconf import NodeLayout

LOCK = Path("/run/kubetrain-node.json")
CGROUP_FS = Path("/sys/fs/cgroup")
#: Host sysctls the node changes: kubelet sets the first three at start-up (its "kernel
#: defaults"), the pod network needs forwarding and bridged traffic through iptables.
SYSCTLS = (
    "kernel/panic",
    "kernel/panic_on_oops",
    "vm/overcommit_memory",
    "net/ipv4/ip_forward",
    "net/bridge/bridge-nf-call-iptables",
)
#: Paths outside the state dir that kubelet, the CNI plugins or containerd create when
#: missing (containerd v2 keeps its shims' sockets in /run/containerd/s whatever its state dir).
OUTSIDE_PATHS = (
    Path("/var/lib/kubelet"),
    Path("/var/lib/cni"),
    Path("/etc/cni"),
    Path("/run/containerd"),
    Path("/run/netns"),
)


class NodeError(RuntimeError):
    """A prerequisite of the node is missing, or another node holds the machine."""


@dataclass
class HostRecord:
    """What the host looked like before the node changed it (kept in the node dir)."""

    sysctls: dict[str, str]
    created: list[str]
    """Paths outside the state dir that did not exist before the node started."""

    @classmethod
    def load(cls, path: Path) -> HostRecord | None:
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        return cls(sysctls=raw.get("sysctls", {}), created=raw.get("created", []))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"sysctls": self.sysctls, "created": self.created}, indent=2))


class NodeHost:
    def __init__(self, layout: NodeLayout, bin_dir: Path, state_dir: Path) -> None:
        self.layout = layout
        self.bin = bin_dir
        self.state = state_dir

    @property
    def host_record_path(self) -> Path:
        return self.layout.root / "host-before.json"

    # ------------------------------------------------------------------ checks
    def check_prerequisites(self) -> None:
        """One clear line per missing kernel feature or tool, before anything is changed."""
        problems = []
        for tool in ("ip", "iptables", "mount"):
            if shutil.which(tool) is None:
                problems.append(f"`{tool}` is not installed (apt-get install iproute2 iptables)")
        for plugin in ("bridge", "host-local", "portmap", "loopback"):
            if not (nodeconf.CNI_BIN_DIR / plugin).exists():
                problems.append(
                    f"CNI plugin {nodeconf.CNI_BIN_DIR / plugin} missing "
                    "(apt-get install containernetworking-plugins)"
                )
        if not Path("/proc/sys/net/bridge").exists():
            problems.append("the kernel has no bridge netfilter (/proc/sys/net/bridge missing)")
        if not (CGROUP_FS / "memory").is_dir() and not (CGROUP_FS / "cgroup.controllers").exists():
            problems.append(f"no cgroup hierarchy mounted under {CGROUP_FS}")
        if os.geteuid() != 0:
            problems.append("the local node must run as root (it creates a bridge and cgroups)")
        for name in ("containerd", "containerd-shim-runc-v2", "runc", "kubelet", "kube-proxy"):
            if not (self.bin / name).exists():
                problems.append(
                    f"{self.bin / name} is not built: run tools/harness/platform/build.sh"
                )
        if problems:
            raise NodeError("the local node cannot start:\n  - " + "\n  - ".join(problems))

    # ------------------------------------------------------------------ lock
    def holder(self) -> str | None:
        """State dir of another live node on this machine, or None."""
        lock = read_lock()
        if lock is None or lock[0] == str(self.state) or not lock[1]:
            return None  # free, ours, or a stale lock from a crashed node: ours to take over
        return lock[0]

    def take_lock(self) -> None:
        other = self.holder()
        if other:
            raise NodeError(
                f"another kubetrain node is running on this machine, from {other} (the demo, "
                "or another test run). Only one node can run at a time: kube-proxy's iptables "
                "chains are global to the host. Stop it with "
                f"`kubetrain-platform --state-dir {other} down` (the demo: `make platform-down`)."
            )
        LOCK.write_text(
            json.dumps(
                {
                    "state": str(self.state),
                    "pids_file": str(self.state / "platform.json"),
                    "index": self.layout.index,
                }
            )
        )

    def release_lock(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(LOCK.read_text()).get("state") == str(self.state):
                LOCK.unlink()

    # ------------------------------------------------------------------ prepare
    def prepare(self) -> None:
        """Lock, record and set sysctls, bridge, cgroup roots: before the control plane starts
        (the apiserver advertises the bridge address)."""
        self.check_prerequisites()
        self.take_lock()
        lay = self.layout
        for d in (
            lay.containerd_dir,
            lay.registry_hosts_dir,
            lay.cni_conf_dir,
            lay.cni_ipam_dir,
            lay.kubelet_dir,
            lay.pod_logs_dir,
        ):
            d.mkdir(parents=True, exist_ok=True)
        if HostRecord.load(self.host_record_path) is None:
            HostRecord(
                sysctls={k: _sysctl(k) for k in SYSCTLS},
                created=[str(p) for p in OUTSIDE_PATHS if not p.exists()],
            ).save(self.host_record_path)
        _write_sysctl("net/ipv4/ip_forward", "1")
        _write_sysctl("net/bridge/bridge-nf-call-iptables", "1")
        self._ensure_bridge()
        for ctrl in _cgroup_controllers():
            (ctrl / lay.cgroup_root.lstrip("/")).mkdir(exist_ok=True)

    def write_configs(
        self, *, kubelet_cert: Path, kubelet_key: Path, ca: Path, kubeconfigs: dict[str, Path]
    ) -> None:
        """Every daemon's config file; the pause image must be in the registry by now."""
        lay = self.layout
        write_if_changed(lay.containerd_config, nodeconf.containerd_toml(lay, self.bin / "runc"))
        hosts = lay.registry_hosts_dir / lay.registry
        hosts.mkdir(parents=True, exist_ok=True)
        write_if_changed(hosts / "hosts.toml", nodeconf.registry_hosts_toml(lay.registry))
        write_if_changed(
            lay.cni_conf_dir / "10-kubetrain.conflist",
            nodeconf.to_json(nodeconf.cni_conflist(lay)),
        )
        write_if_changed(
            lay.kubelet_config,
            nodeconf.to_json(
                nodeconf.kubelet_config(lay, ca=ca, cert=kubelet_cert, key=kubelet_key)
            ),
        )
        write_if_changed(
            lay.proxy_config,
            nodeconf.to_json(nodeconf.kube_proxy_config(lay, kubeconfigs["kube-proxy"])),
        )
        write_if_changed(
            lay.scheduler_config,
            nodeconf.to_json(nodeconf.scheduler_config(kubeconfigs["kube-scheduler"])),
        )

    def _ensure_bridge(self) -> None:
        lay = self.layout
        if not Path(f"/sys/class/net/{lay.bridge}").exists():
            _run(["ip", "link", "add", lay.bridge, "type", "bridge"])
        addrs = subprocess.run(
            ["ip", "-4", "-o", "addr", "show", "dev", lay.bridge],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        if f" {lay.gateway}/" not in addrs:
            _run(["ip", "addr", "add", f"{lay.gateway}/24", "dev", lay.bridge])
        _run(["ip", "link", "set", lay.bridge, "up"])
        # Host -> ClusterIP leaves through the bridge, not the default route.
        _run(["ip", "route", "replace", lay.service_cidr, "dev", lay.bridge, "src", lay.gateway])

    # ------------------------------------------------------------------ teardown
    def teardown(self, *, log: object = None) -> None:
        """Undo everything `prepare` and the daemons did; safe to run any number of times."""
        lay = self.layout
        self._kill_cgroup_processes()
        self._kill_shims()
        self._unmount_all()
        with contextlib.suppress(subprocess.CalledProcessError):
            if Path(f"/sys/class/net/{lay.bridge}").exists():
                _run(["ip", "link", "del", lay.bridge])
        self._delete_veths()
        if self.holder() is None:
            # The chains are the host's, not this node's: never clean them under another node.
            self._cleanup_iptables()
        self._remove_cgroups()
        rec = HostRecord.load(self.host_record_path)
        if rec is not None:
            for key, value in rec.sysctls.items():
                with contextlib.suppress(OSError):
                    _write_sysctl(key, value)
            for path in rec.created:
                shutil.rmtree(path, ignore_errors=True)
            self.host_record_path.unlink()
        self.release_lock()

    def _cgroup_dirs(self) -> list[Path]:
        name = self.layout.cgroup_root.lstrip("/")
        return [c / name for c in _cgroup_controllers() if (c / name).exists()]

    def _kill_cgroup_processes(self) -> None:
        for _ in range(20):
            pids = self._cgroup_pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def _cgroup_pids(self) -> set[int]:
        pids: set[int] = set()
        for top in self._cgroup_dirs():
            for procs in top.rglob("cgroup.procs"):
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(p) for p in procs.read_text().split())
        return pids

    def shim_pids(self) -> list[int]:
        """containerd shims serving this node's containerd (found by its socket path)."""
        sock = str(self.layout.containerd_socket)
        found = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError):
                argv = cmdline.read_bytes().split(b"\0")
                if argv and argv[0].endswith(b"containerd-shim-runc-v2") and sock.encode() in argv:
                    found.append(int(cmdline.parent.name))
        return found

    def _kill_shims(self) -> None:
        for _ in range(30):
            pids = self.shim_pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def mounts(self) -> list[str]:
        """Mount points under the node's directory or its state dir, deepest first."""
        roots = (str(self.layout.root) + "/", str(self.state) + "/")
        points = []
        with contextlib.suppress(OSError):
            for line in Path("/proc/self/mountinfo").read_text().splitlines():
                point = line.split()[4].replace("\\040", " ")
                if point.startswith(roots):
                    points.append(point)
        return sorted(set(points), key=len, reverse=True)

    def _unmount_all(self) -> None:
        for _ in range(5):
            points = self.mounts()
            if not points:
                return
            for point in points:
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)

    def _delete_veths(self) -> None:
        # A veth whose pod netns was unmounted disappears with it; any left on our bridge
        # index is removed here.
        for link in Path("/sys/class/net").glob("veth*"):
            master = link / "master"
            if master.exists() and os.path.basename(os.readlink(master)) == self.layout.bridge:
                subprocess.run(["ip", "link", "del", link.name], capture_output=True, check=False)

    def _cleanup_iptables(self) -> None:
        proxy = self.bin / "kube-proxy"
        if proxy.exists():
            subprocess.run([str(proxy), "--cleanup"], capture_output=True, check=False)
        for tool in ("iptables", "ip6tables"):
            if shutil.which(tool) is None:
                continue
            for table in ("filter", "nat", "mangle"):
                _drop_chains(tool, table)

    def _remove_cgroups(self) -> None:
        for top in self._cgroup_dirs():
            for d in sorted(
                (p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
            ):
                with contextlib.suppress(OSError):
                    d.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()

    def pods_rss(self) -> int:
        """Resident memory of every process in the node's pod cgroups."""
        page = os.sysconf("SC_PAGE_SIZE")
        total = 0
        for pid in self._cgroup_pids():
            with contextlib.suppress(OSError, IndexError, ValueError):
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
        return total

    # ------------------------------------------------------------------ inspection
    def leftovers(self) -> list[str]:
        """Everything of this node still on the host, one line each; [] when clean."""
        lay = self.layout
        out = []
        shims = self.shim_pids()
        if shims:
            out.append(f"containerd shims running: pids {shims}")
        pids = self._cgroup_pids()
        if pids:
            out.append(f"processes in {lay.cgroup_root} cgroups: {sorted(pids)}")
        out += [f"mount: {m}" for m in self.mounts()]
        if Path(f"/sys/class/net/{lay.bridge}").exists():
            out.append(f"bridge {lay.bridge}")
        netns = lay.containerd_state / "netns"
        if netns.exists() and any(netns.iterdir()):
            out.append(f"pod network namespaces in {netns}")
        for tool in ("iptables", "ip6tables"):
            if shutil.which(tool) is None or self.holder() is not None:
                continue  # chains of another running node are not ours to report
            for table in ("filter", "nat", "mangle"):
                chains = _our_chains(tool, table)
                if chains:
                    out.append(f"{tool} -t {table} chains: {', '.join(sorted(chains))}")
        out += [f"cgroup {d}" for d in self._cgroup_dirs()]
        rec = HostRecord.load(self.host_record_path)
        if rec is not None:
            out.append(f"host changes not yet undone (recorded in {self.host_record_path})")
            out += [
                f"path created outside the state dir: {p}" for p in rec.created if Path(p).exists()
            ]
        with contextlib.suppress(OSError, ValueError):
            if json.loads(LOCK.read_text()).get("state") == str(self.state):
                out.append(f"node lock {LOCK}")
        return out


# ---------------------------------------------------------------------- helpers
def read_lock() -> tuple[str, bool] | None:
    """(state dir, alive) of the node holding the machine's lock, or None when unlocked.

    Alive means one of its node daemons still runs; a lock whose daemons are all gone
    (killed, or its session ended) is stale: its host changes are still there to clean."""
    try:
        raw = json.loads(LOCK.read_text())
    except (OSError, ValueError):
        return None
    state = str(raw.get("state", ""))
    if not state:
        return None
    with contextlib.suppress(OSError, ValueError):
        pids = json.loads(Path(raw.get("pids_file", "")).read_text()).get("pids", {})
        for name in ("containerd", "kubelet", "kube-proxy"):
            if pids.get(name) and pid_alive(int(pids[name])):
                return state, True
    return state, False


def pid_alive(pid: int) -> bool:
    """Whether PID runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


def write_if_changed(path: Path, text: str) -> None:
    """Write only a changed file: kube-proxy exits when its config file is touched, and an
    unchanged `up` must not restart anything."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NodeError(f"`{' '.join(argv)}` failed: {proc.stderr.strip()}")


def _sysctl(key: str) -> str:
    return (Path("/proc/sys") / key).read_text().strip()


def _write_sysctl(key: str, value: str) -> None:
    path = Path("/proc/sys") / key
    if path.read_text().strip() != value:
        path.write_text(value + "\n")


def _cgroup_controllers() -> list[Path]:
    """Every cgroup v1 hierarchy (and the unified one) kubelet creates cgroups in."""
    if (CGROUP_FS / "cgroup.controllers").exists():  # pure cgroup v2
        return [CGROUP_FS]
    return [p for p in sorted(CGROUP_FS.iterdir()) if p.is_dir() and not p.is_symlink()]


def _is_ours(chain: str) -> bool:
    return chain.startswith(("KUBE-", "CNI-"))


def _our_chains(tool: str, table: str) -> set[str]:
    proc = subprocess.run(
        [tool, "-w", "-t", table, "-S"], capture_output=True, text=True, check=False
    )
    chains = set()
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "-N" and _is_ours(parts[1]):
            chains.add(parts[1])
    return chains


def _drop_chains(tool: str, table: str) -> None:
    """Delete every rule that jumps to a KUBE-/CNI- chain, then those chains."""
    chains = _our_chains(tool, table)
    if not chains:
        return
    proc = subprocess.run(
        [tool, "-w", "-t", table, "-S"], capture_output=True, text=True, check=False
    )
    for line in proc.stdout.splitlines():
        parts = shlex.split(line)
        if len(parts) > 2 and parts[0] == "-A" and not _is_ours(parts[1]) and "-j" in parts:
            target = parts[parts.index("-j") + 1]
            if target in chains:
                subprocess.run(
                    [tool, "-w", "-t", table, "-D", *parts[1:]], capture_output=True, check=False
                )
    for chain in chains:
        subprocess.run([tool, "-w", "-t", table, "-F", chain], capture_output=True, check=False)
    for chain in chains:
        subprocess.run([tool, "-w", "-t", table, "-X", chain], capture_output=True, check=False)
