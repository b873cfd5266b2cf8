"""Pod volumes as directories under the pod's directory: `<pod dir>/volumes/<volume name>/`.

Supported: configMap, secret, emptyDir, downwardAPI, projected (configMap, secret,
downwardAPI and serviceAccountToken sources) and persistentVolumeClaim (a directory per
claim under `<node dir>/claims/`, kept across pods) — which covers what the ServiceAccount
admission plugin injects (`kube-api-access-*`: a bound token from the TokenRequest API,
`ca.crt` from the `kube-root-ca.crt` ConfigMap, and the namespace).

Files are written once when the pod starts (no live updates, unlike the kubelet), each
via a temporary file and rename, with the volume's `defaultMode` or the item's `mode`.
Service-account tokens are re-requested by `refresh_tokens` before they expire.

A missing non-optional ConfigMap/Secret/key or an unsupported volume type raises
`VolumeError`; the pod stays Pending (ContainerCreating) with that message, and the worker
retries, as the kubelet does with a failed mount.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .kube import ApiError, Kube
from .podspec import (
    ConfigError,
    configmap_data,
    decode_secret_data,
    field_ref_value,
    find_container,
    resource_field_value,
)

Obj = dict[str, Any]
SUPPORTED = ("configMap", "secret", "emptyDir", "downwardAPI", "projected", "persistentVolumeClaim")


class VolumeError(Exception):
    """A volume cannot be set up (yet)."""


@dataclass
class TokenFile:
    """A projected service-account token to keep fresh."""

    path: Path
    audience: str
    expiration_seconds: int
    mode: int
    expires_at: float = 0.0


@dataclass
class Volumes:
    """The materialised volumes of one pod."""

    dirs: dict[str, Path] = field(default_factory=dict)
    tokens: list[TokenFile] = field(default_factory=list)


def _safe_join(base: Path, rel: str) -> Path:
    norm = posixpath.normpath(rel)
    if norm.startswith("/") or norm == ".." or norm.startswith("../"):
        raise VolumeError(f"item path {rel!r} escapes the volume")
    return base / norm


def _write(path: Path, data: str | bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data)
    os.chmod(tmp, mode & 0o777)
    os.replace(tmp, path)


def _project_keys(
    base: Path,
    data: Mapping[str, str],
    items: list[Obj] | None,
    mode: int,
    what: str,
    optional: bool,
) -> None:
    if not items:
        for key, value in data.items():
            _write(_safe_join(base, key), value, mode)
        return
    for item in items:
        key = item.get("key", "")
        if key not in data:
            if optional:
                continue
            raise VolumeError(f"{what} references non-existent key: {key}")
        _write(_safe_join(base, item.get("path") or key), data[key], int(item.get("mode") or mode))


class VolumeBuilder:
    """Materialises one pod's volumes."""

    def __init__(
        self,
        kube: Kube,
        pod: Obj,
        pod_dir: Path,
        *,
        pod_ip: str,
        host_ip: str,
        node_name: str,
        allocatable: Mapping[str, str],
    ) -> None:
        self.kube = kube
        self.pod = pod
        self.base = pod_dir / "volumes"
        self.claims = pod_dir.parent.parent / "claims"
        self.pod_ip = pod_ip
        self.host_ip = host_ip
        self.node_name = node_name
        self.allocatable = allocatable
        meta = pod.get("metadata") or {}
        self.ns = str(meta.get("namespace", ""))
        self.name = str(meta.get("name", ""))
        self.uid = str(meta.get("uid", ""))

    async def build(self) -> Volumes:
        out = Volumes()
        self.base.mkdir(parents=True, exist_ok=True)
        for vol in (self.pod.get("spec") or {}).get("volumes") or []:
            name = vol.get("name", "")
            kind = next((k for k in vol if k != "name"), "")
            if kind not in SUPPORTED:
                raise VolumeError(
                    f"volume {name!r}: type {kind!r} is not supported by the kubetrain node "
                    f"agent (supported: {', '.join(SUPPORTED)})"
                )
            src = vol[kind] or {}
            if kind == "persistentVolumeClaim":
                out.dirs[name] = await self._claim(src)
                continue
            target = self.base / name
            target.mkdir(parents=True, exist_ok=True)
            mode = int(src.get("defaultMode") or 0o644)
            if kind == "configMap":
                await self._configmap(target, src, mode)
            elif kind == "secret":
                await self._secret(target, src, mode)
            elif kind == "downwardAPI":
                self._downward(target, src.get("items") or [], mode)
            elif kind == "projected":
                for source in src.get("sources") or []:
                    if source.get("configMap"):
                        await self._configmap(target, source["configMap"], mode)
                    elif source.get("secret"):
                        await self._secret(target, source["secret"], mode)
                    elif source.get("downwardAPI"):
                        self._downward(target, source["downwardAPI"].get("items") or [], mode)
                    elif source.get("serviceAccountToken"):
                        sat = source["serviceAccountToken"]
                        tok = TokenFile(
                            path=_safe_join(target, sat.get("path") or "token"),
                            audience=str(sat.get("audience") or ""),
                            expiration_seconds=int(sat.get("expirationSeconds") or 3600),
                            mode=mode,
                        )
                        await self.write_token(tok)
                        out.tokens.append(tok)
                    else:
                        raise VolumeError(
                            f"volume {name!r}: projected source {sorted(source)} is not supported"
                        )
            out.dirs[name] = target
        return out

    async def _claim(self, src: Obj) -> Path:
        """A PersistentVolumeClaim is a directory per claim that outlives its pods
        (`<node dir>/claims/<namespace>/<claim>`). The claim must exist; whether it is
        bound is not checked, because the local platform has no volume provisioner."""
        claim = str(src.get("claimName") or "")
        pvc = await self.kube.get_optional(
            self.kube.core.read_namespaced_persistent_volume_claim, claim, self.ns
        )
        if pvc is None:
            raise VolumeError(f'persistentvolumeclaim "{claim}" not found')
        path = self.claims / self.ns / claim
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def _configmap(self, target: Path, src: Obj, mode: int) -> None:
        name = src.get("name", "")
        cm = await self.kube.get_optional(self.kube.core.read_namespaced_config_map, name, self.ns)
        if cm is None:
            if src.get("optional"):
                return
            raise VolumeError(f'configmap "{name}" not found')
        _project_keys(
            target,
            configmap_data(cm),
            src.get("items"),
            mode,
            f"configmap {name}",
            bool(src.get("optional")),
        )

    async def _secret(self, target: Path, src: Obj, mode: int) -> None:
        name = src.get("secretName") or src.get("name") or ""
        secret = await self.kube.get_optional(self.kube.core.read_namespaced_secret, name, self.ns)
        if secret is None:
            if src.get("optional"):
                return
            raise VolumeError(f'secret "{name}" not found')
        _project_keys(
            target,
            decode_secret_data(secret),
            src.get("items"),
            mode,
            f"secret {name}",
            bool(src.get("optional")),
        )

    def _downward(self, target: Path, items: list[Obj], mode: int) -> None:
        for item in items:
            try:
                if item.get("fieldRef"):
                    value = field_ref_value(
                        self.pod,
                        item["fieldRef"].get("fieldPath", ""),
                        pod_ip=self.pod_ip,
                        host_ip=self.host_ip,
                        node_name=self.node_name,
                    )
                elif item.get("resourceFieldRef"):
                    ref = item["resourceFieldRef"]
                    container = find_container(self.pod, ref.get("containerName", "")) or {}
                    value = resource_field_value(self.pod, container, ref, self.allocatable)
                else:
                    continue
            except ConfigError as exc:
                raise VolumeError(f"downwardAPI item {item.get('path')!r}: {exc}") from exc
            _write(_safe_join(target, item.get("path", "")), value, int(item.get("mode") or mode))

    async def write_token(self, tok: TokenFile) -> None:
        sa = (self.pod.get("spec") or {}).get("serviceAccountName") or "default"
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [tok.audience] if tok.audience else [],
                "expirationSeconds": tok.expiration_seconds,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": self.name,
                    "uid": self.uid,
                },
            },
        }
        try:
            resp = await self.kube.call(
                self.kube.core.create_namespaced_service_account_token, sa, self.ns, body
            )
        except ApiError as exc:
            raise VolumeError(f"service account token for {self.ns}/{sa}: {exc}") from exc
        status = resp.get("status") or {}
        _write(tok.path, str(status.get("token") or ""), tok.mode)
        exp = status.get("expirationTimestamp")
        try:
            tok.expires_at = (
                datetime.strptime(str(exp), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
            )
        except ValueError:
            tok.expires_at = datetime.now(UTC).timestamp() + tok.expiration_seconds


def next_refresh(tokens: list[TokenFile], now: float) -> float | None:
    """When to refresh next: at 80% of the shortest remaining lifetime (kubelet rule)."""
    if not tokens:
        return None
    soonest = min(t.expires_at for t in tokens)
    return max(now + 5.0, now + 0.8 * (soonest - now))


def remove_tree(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)
