"""Pure translation of a pod spec into what a local process needs: env, argv, paths.

No I/O here. The pod worker fetches the Secrets and ConfigMaps a container refers to
(`referenced_objects`) and passes their decoded data in; everything else is computed
from the pod object, so the rules are unit-testable without a cluster.

Env follows the kubelet's order: `envFrom` sources first (in order, later wins), then
`env` entries (later wins), each `env` value expanded with Kubernetes `$(VAR)` syntax
against what was defined before it. `command`/`args` are expanded against the final env.

Paths: a container runs on the host, so its mount paths do not exist. Every container
gets a *root* directory on the host; mount path P is available at `<root>P` (a symlink
to the volume's directory) and the termination message path is the regular file
`<root><terminationMessagePath>`. `PathMap.rewrite` rewrites args and env values that
name a mounted path (`/etc/x/y`, or `--flag=/etc/x/y`) to their host location, so most
programs work unchanged; others can prefix paths with `$KUBETRAIN_PATH_PREFIX`.
"""

from __future__ import annotations

import base64
import math
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

DEFAULT_TERMINATION_PATH = "/dev/termination-log"
DEFAULT_SCHEDULER = "default-scheduler"

Obj = dict[str, Any]


class ConfigError(Exception):
    """A container cannot be configured yet (missing Secret/ConfigMap/key, bad reference).

    The worker reports it as the kubelet does: state waiting, reason
    CreateContainerConfigError, this message; and retries, because the object may appear.
    """


def quantity(value: Any) -> Decimal:
    """Parse a Kubernetes quantity ("500m", "1Gi", 2) into a Decimal; ValueError names it."""
    try:
        return Decimal(parse_quantity(value))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"invalid quantity {value!r}: {exc}") from exc


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined vars are replaced, `$$` is a literal `$`,
    undefined references and every other `$` stay as written (as the kubelet does)."""
    out: list[str] = []
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = value[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            end = value.find(")", i + 2)
            if end == -1:
                out.append(value[i:])
                break
            name = value[i + 2 : end]
            out.append(env[name] if name in env else value[i : end + 1])
            i = end + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def decode_secret_data(secret: Obj) -> dict[str, str]:
    """A Secret's `data` (base64) plus `stringData`, as str (undecodable bytes kept via
    surrogateescape so os.environ round-trips them)."""
    out: dict[str, str] = {}
    for key, val in (secret.get("data") or {}).items():
        out[key] = base64.b64decode(val or "").decode("utf-8", "surrogateescape")
    for key, val in (secret.get("stringData") or {}).items():
        out[key] = val
    return out


def configmap_data(cm: Obj) -> dict[str, str]:
    """A ConfigMap's `data` plus `binaryData` (decoded), as str."""
    out = dict(cm.get("data") or {})
    for key, val in (cm.get("binaryData") or {}).items():
        out[key] = base64.b64decode(val or "").decode("utf-8", "surrogateescape")
    return out


def all_containers(pod: Obj) -> list[Obj]:
    spec = pod.get("spec") or {}
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def find_container(pod: Obj, name: str) -> Obj | None:
    for c in all_containers(pod):
        if c.get("name") == name:
            return c
    return None


def referenced_objects(container: Obj) -> tuple[set[str], set[str]]:
    """(ConfigMap names, Secret names) this container's env/envFrom refer to."""
    cms: set[str] = set()
    secrets: set[str] = set()
    for src in container.get("envFrom") or []:
        if src.get("configMapRef"):
            cms.add(src["configMapRef"].get("name", ""))
        if src.get("secretRef"):
            secrets.add(src["secretRef"].get("name", ""))
    for ev in container.get("env") or []:
        vf = ev.get("valueFrom") or {}
        if vf.get("configMapKeyRef"):
            cms.add(vf["configMapKeyRef"].get("name", ""))
        if vf.get("secretKeyRef"):
            secrets.add(vf["secretKeyRef"].get("name", ""))
    return cms, secrets


_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def field_ref_value(pod: Obj, path: str, *, pod_ip: str, host_ip: str, node_name: str) -> str:
    """The value of a downward-API `fieldRef.fieldPath` (the kubelet's supported set)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName") or node_name,
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return str(simple[path])
    m = _SUBSCRIPT.match(path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".", 1)[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    raise ConfigError(f"unsupported fieldRef fieldPath {path!r}")


def resource_field_value(
    pod: Obj, container: Obj, ref: Obj, node_allocatable: Mapping[str, str]
) -> str:
    """A `resourceFieldRef` value, rounded up by the divisor as the kubelet does.

    An unset limit falls back to the node's allocatable (kubelet behaviour); an unset
    request is 0 (cpu requests default to the limit when only the limit is set).
    """
    resource = ref.get("resource", "")
    target = container
    if ref.get("containerName"):
        found = find_container(pod, ref["containerName"])
        if found is None:
            raise ConfigError(f"resourceFieldRef: no container named {ref['containerName']!r}")
        target = found
    kind, _, res = resource.partition(".")
    if kind not in ("limits", "requests") or res not in ("cpu", "memory", "ephemeral-storage"):
        raise ConfigError(f"unsupported resourceFieldRef resource {resource!r}")
    resources = target.get("resources") or {}
    raw = (resources.get(kind) or {}).get(res)
    if raw is None and kind == "requests":
        raw = (resources.get("limits") or {}).get(res)
    if raw is None:
        raw = node_allocatable.get(res, "0") if kind == "limits" else "0"
    try:
        value = quantity(raw)
        divisor = quantity(ref.get("divisor") or "1")
    except ValueError as exc:
        raise ConfigError(f"resourceFieldRef {resource}: {exc}") from exc
    if divisor == 0:  # the apiserver serialises an unset divisor as "0": it means 1
        divisor = Decimal(1)
    if divisor < 0:
        raise ConfigError(f"resourceFieldRef {resource}: divisor must be positive")
    return str(math.ceil(value / divisor))


def resolve_env(
    pod: Obj,
    container: Obj,
    *,
    configmaps: Mapping[str, Mapping[str, str] | None],
    secrets: Mapping[str, Mapping[str, str] | None],
    pod_ip: str,
    host_ip: str,
    node_name: str,
    node_allocatable: Mapping[str, str],
    service_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The container's own environment from `envFrom` and `env`.

    `configmaps`/`secrets` map a name to its decoded data, or None when it does not exist.
    Raises ConfigError (with the kubelet's wording) for missing non-optional references.
    """
    env: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix") or ""
        for key, store, what in (
            ("configMapRef", configmaps, "configmap"),
            ("secretRef", secrets, "secret"),
        ):
            ref = src.get(key)
            if not ref:
                continue
            name = ref.get("name", "")
            data = store.get(name)
            if data is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{what} "{name}" not found')
            for k, v in data.items():
                if _ENV_NAME.match(prefix + k):  # the kubelet skips invalid names too
                    env[prefix + k] = v
    mapping: dict[str, str] = dict(service_env or {})
    for ev in container.get("env") or []:
        name = ev.get("name", "")
        mapping.update(env)
        if "valueFrom" not in ev or ev.get("valueFrom") is None:
            env[name] = expand(str(ev.get("value") or ""), mapping)
            continue
        vf = ev["valueFrom"]
        value: str | None
        if vf.get("fieldRef"):
            value = field_ref_value(
                pod,
                vf["fieldRef"].get("fieldPath", ""),
                pod_ip=pod_ip,
                host_ip=host_ip,
                node_name=node_name,
            )
        elif vf.get("resourceFieldRef"):
            value = resource_field_value(pod, container, vf["resourceFieldRef"], node_allocatable)
        elif vf.get("configMapKeyRef") or vf.get("secretKeyRef"):
            is_cm = bool(vf.get("configMapKeyRef"))
            ref = vf["configMapKeyRef"] if is_cm else vf["secretKeyRef"]
            what = "configmap" if is_cm else "secret"
            data = (configmaps if is_cm else secrets).get(ref.get("name", ""))
            key = ref.get("key", "")
            if data is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{what} "{ref.get("name", "")}" not found')
            if key not in data:
                if ref.get("optional"):
                    continue
                raise ConfigError(
                    f"couldn't find key {key} in {'ConfigMap' if is_cm else 'Secret'} "
                    f"{(pod.get('metadata') or {}).get('namespace', '')}/{ref.get('name', '')}"
                )
            value = data[key]
        else:
            raise ConfigError(f"env {name}: unsupported valueFrom {sorted(vf)}")
        env[name] = value
    return env


def command_line(container: Obj, env: Mapping[str, str]) -> list[str]:
    """`command` + `args` with `$(VAR)` expansion. Raises ConfigError without `command`,
    because the image (and so its entrypoint) is ignored on this node."""
    command = list(container.get("command") or [])
    if not command:
        raise ConfigError(
            f"container {container.get('name')!r} has no command: the kubetrain node agent "
            "ignores images, so every container must set `command`"
        )
    return [expand(str(a), env) for a in command + list(container.get("args") or [])]


def normalise(path: str) -> str:
    """Absolute, normalised path (POSIX normpath keeps a leading "//"; we do not)."""
    return posixpath.normpath("/" + path.strip().lstrip("/"))


@dataclass(frozen=True)
class PathMap:
    """How one container's absolute paths map onto the host.

    `root` is the container's root directory on the host; `paths` are the container paths
    that exist there (mount paths and the termination message path).
    """

    root: str
    """Host directory standing in for the container's `/` (KUBETRAIN_PATH_PREFIX)."""
    paths: tuple[str, ...]
    """Normalised container paths that are rewritten, longest first."""

    @classmethod
    def build(cls, root: str, paths: Iterable[str]) -> PathMap:
        norm = sorted(
            {normalise(p) for p in paths if p and normalise(p) != "/"}, key=len, reverse=True
        )
        return cls(root=root.rstrip("/"), paths=tuple(norm))

    def host_path(self, container_path: str) -> str:
        """Where a container path lives on the host (`<root><path>`)."""
        return self.root + normalise(container_path)

    def covers(self, value: str) -> bool:
        return any(value == p or value.startswith(p + "/") for p in self.paths)

    def rewrite(self, value: str) -> str:
        """Rewrite `value` if it names a mapped path, or is `something=<mapped path>`."""
        if value.startswith("/") and self.covers(value):
            return self.root + value
        head, sep, tail = value.partition("=")
        if sep and tail.startswith("/") and self.covers(tail):
            return head + sep + self.root + tail
        return value

    def mounts_env(self) -> str:
        """`KUBETRAIN_MOUNTS`: `containerPath=hostPath` pairs joined by `:`."""
        return ":".join(f"{p}={self.root}{p}" for p in sorted(self.paths))


def termination_path(container: Obj) -> str:
    return normalise(container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH)


def container_ports(container: Obj) -> dict[str, int]:
    """Named container ports (for probes and Service targetPort names)."""
    return {
        p["name"]: int(p["containerPort"])
        for p in container.get("ports") or []
        if p.get("name") and p.get("containerPort")
    }


def pod_grace_seconds(pod: Obj) -> int:
    """Termination grace: the deletion's grace period, else the spec's (default 30)."""
    meta = pod.get("metadata") or {}
    if meta.get("deletionGracePeriodSeconds") is not None:
        return max(0, int(meta["deletionGracePeriodSeconds"]))
    spec = pod.get("spec") or {}
    value = spec.get("terminationGracePeriodSeconds")
    return 30 if value is None else max(0, int(value))
