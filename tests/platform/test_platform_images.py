"""Image builds against a real (throwaway) local registry: kubetrain_platform.images.

A private `registry serve` on a free loopback port with its own storage; the small binary
images (pause, CoreDNS) are built with buildah, pushed, found by the registry, skipped on the
second run, and pulled back. Uses buildah's default storage, so an image built earlier on this
machine is only pushed, not rebuilt. Missing binaries are a loud error (tools/harness/platform/build.sh).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubetrain_platform.images import ImageBuilder, write_registry_config
from kubetrain_platform.platform import default_bin_dir, free_port

pytestmark = pytest.mark.platform

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("KUBETRAIN_BIN") or default_bin_dir())
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = BIN / "registry"
    assert binary.exists(), f"{binary} missing: run tools/harness/platform/build.sh registry"
    work = tmp_path_factory.mktemp("registry")
    port = free_port()
    write_registry_config(work / "config.yml", port=port, storage=work / "storage")
    with (work / "registry.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(binary), "serve", str(work / "config.yml")], stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with NO_PROXY.open(f"http://127.0.0.1:{port}/v2/", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (work / "registry.log").read_text()
            assert time.monotonic() < deadline, "registry did not answer in 20 s"
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def manifest(ref: str) -> dict[str, object]:
    host, _, rest = ref.partition("/")
    repo, _, tag = rest.rpartition(":")
    req = urllib.request.Request(
        f"http://{host}/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST}
    )
    with NO_PROXY.open(req, timeout=10) as resp:
        data: dict[str, object] = json.loads(resp.read())
        return data


def test_small_images_build_push_skip_and_pull(registry: str, tmp_path: Path) -> None:
    lines: list[str] = []
    builder = ImageBuilder(
        registry=registry,
        cache_dir=tmp_path / "cache",
        bin_dir=BIN,
        repo_root=REPO,
        log=lines.append,
    )
    refs = builder.ensure(["pause", "coredns"])
    assert {r.name: r.action for r in builder.report}.keys() == {"pause", "coredns"}
    # The registry is new: everything is sent (built now, or built earlier and only pushed).
    assert all(r.action in ("built", "pushed") and r.blobs_pushed for r in builder.report)
    for name, ref in refs.items():
        assert ref.startswith(f"{registry}/kubetrain-{name}:")
        layers = manifest(ref)["layers"]
        assert isinstance(layers, list) and len(layers) == 1, "one layer: the binary"
    sizes = {r.name: r.size_bytes for r in builder.report}
    assert 0 < sizes["pause"] < 2_000_000 and sizes["coredns"] > 10_000_000

    # Second run, nothing changed: nothing is built or pushed.
    t0 = time.monotonic()
    again = builder.ensure(["pause", "coredns"])
    assert time.monotonic() - t0 < 10
    assert again == refs
    assert [r.action for r in builder.report] == ["cached", "cached"]
    assert {r.name: r.size_bytes for r in builder.report} == sizes

    # The pause image pulls back from the registry and runs as 65535 (its -v prints a version).
    pulled = subprocess.run(
        ["buildah", "from", "--pull=always", "--tls-verify=false", f"docker://{refs['pause']}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        info = json.loads(
            subprocess.run(
                ["buildah", "inspect", pulled], capture_output=True, text=True, check=True
            ).stdout
        )
        assert info["OCIv1"]["config"]["User"] == "65535:65535"
        assert info["OCIv1"]["config"]["Entrypoint"] == ["/pause"]
        run = subprocess.run(
            ["buildah", "run", "--isolation", "chroot", pulled, "--", "/pause", "-v"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert run.returncode == 0 and "pause" in run.stdout + run.stderr, run
    finally:
        subprocess.run(["buildah", "rm", pulled], capture_output=True, check=False)
        subprocess.run(["buildah", "rmi", refs["pause"]], capture_output=True, check=False)


def test_registry_down_is_a_clear_error(tmp_path: Path) -> None:
    from kubetrain_platform.images import ImageError

    builder = ImageBuilder(
        registry=f"127.0.0.1:{free_port()}",
        cache_dir=tmp_path,
        bin_dir=BIN,
        repo_root=REPO,
        log=lambda _m: None,
    )
    with pytest.raises(ImageError, match="no registry answers"):
        builder.ensure(["pause"])


def test_failed_build_names_the_image_and_keeps_the_log(registry: str, tmp_path: Path) -> None:
    """A broken Dockerfile (a COPY of a file the context lacks) fails with buildah's last lines."""
    from dataclasses import replace

    from kubetrain_platform.images import ImageError

    bad = tmp_path / "Dockerfile.bad"
    bad.write_text("FROM scratch\nCOPY no-such-file /x\nUSER 65535:65535\n")
    builder = ImageBuilder(
        registry=registry,
        cache_dir=tmp_path / "cache",
        bin_dir=BIN,
        repo_root=REPO,
        log=lambda _m: None,
    )
    pause = next(s for s in builder.specs if s.name == "pause")
    builder.specs = (replace(pause, dockerfile=bad),)
    with pytest.raises(ImageError) as info:
        builder.ensure(["pause"])
    text = str(info.value)
    assert "pause image: build failed" in text and "no-such-file" in text
    log = tmp_path / "cache" / "images" / "logs" / "pause.log"
    assert log.is_file() and "no-such-file" in log.read_text()
    assert str(log) in text
