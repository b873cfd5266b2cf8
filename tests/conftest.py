"""Shared fixtures: one real local platform per test run, a namespace and a bucket per test.

`platform` starts a private platform (fresh state dir, free ports, its own node network
index, bridge, containerd and kubelet paths) once per session, and stops it at the end. Only
one node can run on a machine at a time (kube-proxy's iptables chains are the host's), so a
test run started while the demo's node runs stops at once and says which state dir holds the
machine. Modules marked `own_node` start and stop platforms of their own: they are ordered
before everything else, while the session platform does not exist yet. With
KUBETRAIN_PLATFORM_ENV pointing at an existing platform.env it reuses that platform
instead (fast inner loop for developers). Missing binaries are a loud error, never a skip:
the platform is part of what the suite tests.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kubetrain_platform.envfile import read_env_file

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class PlatformInfo:
    """Where the platform's servers are; mirrors platform.env."""

    env: dict[str, str]
    state_dir: Path
    started_here: bool = field(default=False)

    @property
    def kubeconfig(self) -> str:
        return self.env["KUBECONFIG"]

    @property
    def bin_dir(self) -> Path:
        return Path(self.env["KUBETRAIN_BIN"])

    @property
    def minio_endpoint(self) -> str:
        return self.env["MINIO_ENDPOINT"]

    @property
    def minio_access_key(self) -> str:
        return self.env["MINIO_ACCESS_KEY"]

    @property
    def minio_secret_key(self) -> str:
        return self.env["MINIO_SECRET_KEY"]

    @property
    def mlflow_uri(self) -> str:
        return self.env["MLFLOW_TRACKING_URI"]

    def tool(self, name: str) -> str:
        return str(self.bin_dir / name)


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    items.sort(key=lambda item: 0 if item.get_closest_marker("own_node") else 1)


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformInfo]:
    reuse = os.environ.get("KUBETRAIN_PLATFORM_ENV")
    if reuse:
        path = Path(reuse)
        if not path.exists():
            raise RuntimeError(f"KUBETRAIN_PLATFORM_ENV={reuse} does not exist")
        env = read_env_file(path)
        yield PlatformInfo(env=env, state_dir=Path(env.get("KUBETRAIN_STATE_DIR", path.parent)))
        return
    from kubetrain_platform.node import NodeHost
    from kubetrain_platform.platform import Platform, default_bin_dir, reclaim_stale_node

    state = tmp_path_factory.mktemp("platform")
    plat = Platform(state, ports="free")
    other = NodeHost(plat.layout, default_bin_dir(), state).holder()
    if other:
        # One clear stop instead of every platform test erroring with the same message.
        pytest.exit(
            f"a kubetrain node from {other} (the demo?) is running on this machine and only one "
            "node can run at a time: stop it (`make platform-down`) and run the tests again",
            returncode=3,
        )
    reclaim_stale_node(print)
    try:
        plat.up()
        yield PlatformInfo(env=plat.env(), state_dir=state, started_here=True)
    finally:
        plat.down()
        # Keep the logs for a failed run; drop the gigabytes (registry blobs, unpacked image
        # layers, volumes): pytest keeps the last three runs' temporary directories.
        for heavy in ("registry", "node", "volumes", "minio-data", "etcd", "mlflow"):
            shutil.rmtree(state / heavy, ignore_errors=True)


@pytest.fixture(scope="session")
def kube(platform: PlatformInfo) -> Iterator[object]:
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=platform.kubeconfig, client_configuration=cfg)
    api = client.ApiClient(cfg)
    yield api
    api.close()


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def namespace(kube: object) -> Iterator[str]:
    from kubernetes import client

    core = client.CoreV1Api(kube)  # type: ignore[arg-type]
    name = _unique("t")
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    try:
        core.delete_namespace(name, propagation_policy="Background")
    except client.ApiException as exc:
        if exc.status != 404:
            raise


@pytest.fixture(scope="session")
def minio(platform: PlatformInfo) -> object:
    from minio import Minio

    endpoint = platform.minio_endpoint
    return Minio(
        endpoint.split("://", 1)[1],
        access_key=platform.minio_access_key,
        secret_key=platform.minio_secret_key,
        secure=endpoint.startswith("https://"),
    )


@pytest.fixture
def bucket(minio: object) -> Iterator[str]:
    from minio.deleteobjects import DeleteObject

    name = _unique("t")
    minio.make_bucket(name)  # type: ignore[attr-defined]
    yield name
    objs = [DeleteObject(o.object_name) for o in minio.list_objects(name, recursive=True)]  # type: ignore[attr-defined]
    for err in minio.remove_objects(name, objs):  # type: ignore[attr-defined]
        raise RuntimeError(f"could not clean bucket {name}: {err}")
    minio.remove_bucket(name)  # type: ignore[attr-defined]
