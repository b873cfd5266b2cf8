"""`skaffold build` and `skaffold run` with the `kubetrain-local` profile, for real.

skaffold v2 is built here from source (tools/harness/platform/build.sh); its custom builder runs
`kubetrain-platform publish`, which builds with buildah and pushes to the platform's registry.
The release then runs on the real node: every pod Running with the images skaffold built.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from kubetrain_platform.platform import Platform, cache_dir

from tests.conftest import REPO, PlatformInfo

pytestmark = [pytest.mark.platform, pytest.mark.slow, pytest.mark.timeout(1800)]
NAMESPACE = "kubetrain"  # the profile's release namespace


def _env(plat: Platform, tmp_path: Path) -> dict[str, str]:
    """skaffold 2.16 drives helm 3 (`helm version --client` is gone in helm 4): a `helm` on
    its PATH that is the helm3 build."""
    helm_dir = tmp_path / "helm3"
    helm_dir.mkdir(exist_ok=True)
    if not (helm_dir / "helm").exists():
        (helm_dir / "helm").symlink_to(plat.bin / "helm3")
    return {
        **os.environ,
        "KUBECONFIG": str(plat.kubeconfig),
        "PATH": f"{helm_dir}:{plat.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        # skaffold keeps its global config and caches in HOME; no update check offline. The
        # builds it runs keep using the machine's binary and image caches.
        "HOME": str(tmp_path),
        "KUBETRAIN_CACHE": str(cache_dir()),
        "SKAFFOLD_UPDATE_CHECK": "false",
    }


def _skaffold(plat: Platform, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    registry = plat.layout.registry
    env = _env(plat, tmp_path)
    argv = [
        str(plat.bin / "skaffold"),
        *args,
        "-p",
        "kubetrain-local",
        f"--default-repo={registry}",
        f"--insecure-registry={registry}",
        "--kube-context=kubetrain-local",
        "--interactive=false",
    ]
    proc = subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500, check=False
    )
    assert proc.returncode == 0, (
        f"skaffold {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


def test_skaffold_build_and_run_with_buildah(platform: PlatformInfo, tmp_path: Path) -> None:
    plat = Platform(platform.state_dir, log=print)
    out = tmp_path / "build.json"
    _skaffold(plat, tmp_path, "build", f"--file-output={out}")
    builds = {b["imageName"]: b["tag"] for b in json.loads(out.read_text())["builds"]}
    registry = plat.layout.registry
    assert set(builds) == {
        "kubetrain-operator",
        "kubetrain-trainer",
        "kubetrain-minio",
        "kubetrain-mlflow",
    }
    for name, tag in builds.items():
        assert tag.startswith(f"{registry}/{name}:"), tag
    try:
        _skaffold(plat, tmp_path, "run", "--status-check=true")
        pods = json.loads(plat.kubectl(["-n", NAMESPACE, "get", "pods", "-o", "json"]))["items"]
        running = {
            p["metadata"]["labels"].get("app.kubernetes.io/component"): p
            for p in pods
            if p["status"].get("phase") == "Running"
        }
        assert {"operator", "minio", "mlflow"} <= set(running), list(running)
        images = {c["image"] for p in running.values() for c in p["spec"]["containers"]}
        assert all(i.startswith(f"{registry}/kubetrain-") for i in images), images
    finally:
        subprocess.run(
            [
                str(plat.bin / "skaffold"),
                "delete",
                "-p",
                "kubetrain-local",
                "--kube-context=kubetrain-local",
            ],
            cwd=REPO,
            env=_env(plat, tmp_path),
            capture_output=True,
            check=False,
            timeout=300,
        )
        plat.kubectl(["delete", "namespace", NAMESPACE, "--wait=false", "--ignore-not-found"])
