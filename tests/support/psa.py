"""A static check of a pod spec against Pod Security Admission's "restricted" profile.

The rules of https://kubernetes.io/docs/concepts/security/pod-security-standards/
(baseline + restricted, policy version "latest"), applied to a pod spec dict the way the
PodSecurity admission plugin applies them: pod-level settings count for every container
unless a container overrides them. `restricted_violations` returns one line per violation
(empty: the pod would be admitted). tests/platform/test_packaging_install.py checks the
installed chart against the real admission plugin as well.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

#: Volume types "restricted" allows.
ALLOWED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
#: Fields of a Volume that are not its source.
VOLUME_META = frozenset({"name"})
#: The only capability "restricted" lets a container add.
ALLOWED_ADD = frozenset({"NET_BIND_SERVICE"})
#: Sysctls "baseline" allows.
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
SECCOMP_OK = frozenset({"RuntimeDefault", "Localhost"})
SELINUX_TYPES_OK = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})


def _containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(field) or []:
            yield f"{field}[{c.get('name', '?')}]", c


def restricted_violations(spec: Mapping[str, Any]) -> list[str]:
    """What keeps pod spec `spec` from PodSecurity "restricted"; empty when it passes."""
    bad: list[str] = []
    psc: Mapping[str, Any] = spec.get("securityContext") or {}

    # --- baseline
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            bad.append(f"spec.{flag} is true")
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        bad.append("spec.securityContext.windowsOptions.hostProcess is true")
    for sysctl in psc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            bad.append(f"unsafe sysctl {sysctl.get('name')!r}")
    pod_se = (psc.get("seLinuxOptions") or {}).get("type", "")
    if pod_se not in SELINUX_TYPES_OK:
        bad.append(f"spec.securityContext.seLinuxOptions.type {pod_se!r}")
    pod_apparmor = (psc.get("appArmorProfile") or {}).get("type")
    if pod_apparmor == "Unconfined":
        bad.append("spec.securityContext.appArmorProfile is Unconfined")

    # --- volumes
    for vol in spec.get("volumes") or []:
        kinds = set(vol) - VOLUME_META
        if not kinds <= ALLOWED_VOLUMES:
            bad.append(f"volume {vol.get('name')!r} of type {sorted(kinds - ALLOWED_VOLUMES)}")

    # --- pod-level defaults restricted accepts
    pod_non_root = psc.get("runAsNonRoot")
    pod_uid = psc.get("runAsUser")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_non_root is False:
        bad.append("spec.securityContext.runAsNonRoot is false")
    if pod_uid == 0:
        bad.append("spec.securityContext.runAsUser is 0")
    if pod_seccomp is not None and pod_seccomp not in SECCOMP_OK:
        bad.append(f"spec.securityContext.seccompProfile.type {pod_seccomp!r}")

    containers = list(_containers(spec))
    if not containers:
        bad.append("no containers")
    for where, c in containers:
        sc: Mapping[str, Any] = c.get("securityContext") or {}
        if sc.get("privileged"):
            bad.append(f"{where}: privileged")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            bad.append(f"{where}: windowsOptions.hostProcess")
        if sc.get("procMount", "Default") != "Default":
            bad.append(f"{where}: procMount {sc.get('procMount')!r}")
        se = (sc.get("seLinuxOptions") or {}).get("type", "")
        if se not in SELINUX_TYPES_OK:
            bad.append(f"{where}: seLinuxOptions.type {se!r}")
        if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
            bad.append(f"{where}: appArmorProfile Unconfined")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                bad.append(f"{where}: hostPort {port['hostPort']}")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{where}: allowPrivilegeEscalation is not false")
        caps: Mapping[str, Any] = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            bad.append(f"{where}: capabilities.drop lacks ALL")
        added = set(caps.get("add") or []) - ALLOWED_ADD
        if added:
            bad.append(f"{where}: adds capabilities {sorted(added)}")
        non_root = sc.get("runAsNonRoot", pod_non_root)
        if non_root is not True:
            bad.append(f"{where}: runAsNonRoot is not true (pod or container)")
        if sc.get("runAsUser", pod_uid) == 0:
            bad.append(f"{where}: runAsUser is 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in SECCOMP_OK:
            bad.append(f"{where}: seccompProfile is {seccomp!r}, not RuntimeDefault/Localhost")
    return bad


def pod_spec_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The pod spec of a Pod, or of a workload's (Deployment, StatefulSet, Job) template."""
    if obj["kind"] == "Pod":
        return obj["spec"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]
