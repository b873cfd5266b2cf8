"""What the built product images really contain: the product's packages and console scripts,
never the test harness (tools/harness/kubetrain_platform, kubetrain_loadgen, bench) or another
component.

The static checks of the Dockerfiles (tests/unit/test_packaging_dockerfiles.py) read what
they copy; this opens the images buildah built and pushed, through `buildah mount`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubetrain_platform.platform import Platform

from tests.conftest import PlatformInfo

pytestmark = pytest.mark.platform

EXPECTED = {
    "operator": (
        {"kubetrain_contract", "kubetrain_operator"},
        {"kubetrain-operator"},
    ),
    "trainer": (
        {"kubetrain_contract", "kubetrain_trainer", "kubetrain_serving"},
        {"kubetrain-train", "kubetrain-serve"},
    ),
}
HARNESS = ("kubetrain_platform", "kubetrain_loadgen", "bench_operator", "gen_manifests")


def _buildah(*args: str) -> str:
    return subprocess.run(
        ["buildah", *args], check=True, capture_output=True, text=True, timeout=600
    ).stdout.strip()


@pytest.fixture(scope="module")
def refs(platform: PlatformInfo) -> dict[str, str]:
    return Platform(platform.state_dir, log=print).images(tuple(EXPECTED))


@pytest.fixture
def rootfs(refs: dict[str, str], request: pytest.FixtureRequest) -> Iterator[Path]:
    """The image's root filesystem (pulled from the local registry), read-only by intent."""
    ref = refs[request.param]
    container = _buildah("from", "--pull", "--tls-verify=false", "--quiet", ref)
    try:
        yield Path(_buildah("mount", container))
    finally:
        _buildah("umount", container)
        _buildah("rm", container)


@pytest.mark.parametrize("rootfs", sorted(EXPECTED), indirect=True)
def test_image_holds_the_product_only(rootfs: Path, request: pytest.FixtureRequest) -> None:
    name = request.node.callspec.params["rootfs"]
    packages, scripts = EXPECTED[name]
    venv = rootfs / "opt" / "kubetrain"
    [site] = list(venv.glob("lib/python3*/site-packages"))
    found = {p.name for p in site.glob("kubetrain_*") if p.is_dir()}
    assert found == packages, f"{name} image: kubetrain packages {sorted(found)}"
    if name == "operator":
        heavy = sorted(n for n in ("tensorflow", "mlflow", "bentoml") if (site / n).exists())
        assert heavy == [], f"operator image carries {heavy}"
    bins = {p.name for p in (venv / "bin").glob("kubetrain-*")}
    assert bins == scripts, f"{name} image: console scripts {sorted(bins)}"
    # Nothing of the harness anywhere in the venv or the source copy of the build stage.
    leaked = [
        f"{where}/{n}"
        for top in (venv, rootfs / "src", rootfs / "home")
        for where, dirs, files in os.walk(top)
        for n in (*dirs, *files)
        if n.startswith(HARNESS)
    ]
    assert not leaked, f"{name} image carries the harness: {leaked[:5]}"
    assert not (rootfs / "src" / "tools").exists()
