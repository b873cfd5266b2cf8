"""Pure parts of kubetrain_platform.images: content tags, .dockerignore, registry config.

Nothing here runs buildah or a registry (tests/platform/test_platform_images.py does).
"""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from kubetrain_platform.images import (
    BASE_PACKAGES,
    ImageBuilder,
    ImageError,
    ImageSet,
    base_hash,
    content_tag,
    context_files,
    copy_sources,
    dockerignore_patterns,
    elf_interpreter,
    is_excluded,
    write_registry_config,
)

REPO = Path(__file__).resolve().parents[2]


def make_context(root: Path) -> Path:
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "pkg" / "a.py").write_text("A = 1\n")
    (root / "src" / "pkg" / "b.py").write_text("B = 2\n")
    (root / "requirements.txt").write_text("kopf==1.45.2\n")
    (root / "docs").mkdir()
    (root / "docs" / "notes.md").write_text("not copied\n")
    (root / ".dockerignore").write_text("**/__pycache__\n**/*.pyc\nsrc/pkg/local\n")
    (root / "Dockerfile").write_text(
        "ARG BASE_IMAGE=python:3.11-slim\n"
        "FROM ${BASE_IMAGE} AS build\n"
        "COPY requirements.txt ./\n"
        "COPY --chown=10001:10001 src/ src/\n"
        "FROM ${BASE_IMAGE}\n"
        "COPY --from=build /src /src\n"
    )
    return root


def tag_of(ctx: Path, **args: str) -> str:
    df = ctx / "Dockerfile"
    return content_tag(df, files=context_files(ctx, df), build_args=args)


def test_tag_follows_copied_files_and_ignores_the_rest(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    first = tag_of(ctx)
    assert first == tag_of(ctx), "deterministic"
    assert len(first) == 16 and int(first, 16) >= 0

    # Files the Dockerfile does not copy, or that .dockerignore drops, do not matter.
    (ctx / "docs" / "notes.md").write_text("changed\n")
    (ctx / "src" / "pkg" / "__pycache__").mkdir()
    (ctx / "src" / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0junk")
    (ctx / "src" / "pkg" / "local").mkdir()
    (ctx / "src" / "pkg" / "local" / "scratch.py").write_text("x = 1\n")
    assert tag_of(ctx) == first

    # A one-line change in a copied file does; undoing it restores the tag.
    a = ctx / "src" / "pkg" / "a.py"
    a.write_text("A = 1\nA2 = 2\n")
    changed = tag_of(ctx)
    assert changed != first
    a.write_text("A = 1\n")
    assert tag_of(ctx) == first

    # So does a new (untracked) file, an exec bit, a build argument and the Dockerfile.
    (ctx / "src" / "pkg" / "c.py").write_text("")
    assert tag_of(ctx) != first
    (ctx / "src" / "pkg" / "c.py").unlink()
    os.chmod(a, 0o755)
    assert tag_of(ctx) != first
    os.chmod(a, 0o644)
    assert tag_of(ctx) == first
    assert tag_of(ctx, BASE_IMAGE="localhost/kubetrain-base:1") != first
    with (ctx / "Dockerfile").open("a") as f:
        f.write("USER 10001:10001\n")
    assert tag_of(ctx) != first


def test_missing_copy_source_is_an_error(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    (ctx / "requirements.txt").unlink()
    with pytest.raises(ImageError, match=r"requirements\.txt"):
        tag_of(ctx)


def test_repository_contexts() -> None:
    df = REPO / "Dockerfile.operator"
    assert copy_sources(df) == [
        "requirements/operator.txt",
        "requirements/constraints.txt",
        "pyproject.toml",
        "README.md",
        "operator/kubetrain_contract/",
        "operator/kubetrain_operator/",
    ]
    files = context_files(REPO, df)
    assert "operator/kubetrain_operator/main.py" in files
    assert "operator/kubetrain_contract/__init__.py" in files
    # Only the operator's packages: a trainer, serving or harness edit keeps its tag.
    assert not [f for f in files if f.startswith(("tools/", "trainer/", "serving/"))]
    assert not [f for f in files if f.startswith("tools/harness/")]
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    assert not [f for f in files if ".egg-info" in f]
    mlflow = REPO / "tools" / "harness" / "platform" / "images" / "Dockerfile.mlflow"
    assert sorted(context_files(REPO, mlflow)) == [
        "requirements/constraints.txt",
        "requirements/mlflow.txt",
    ]
    # The operator image installs no ML stack (its full closure: test_packaging_dockerfiles).
    lines = (REPO / "requirements" / "operator.txt").read_text().lower().splitlines()
    names = {ln.split("==")[0].strip() for ln in lines if ln.strip() and not ln.startswith("#")}
    assert names and not names & {"tensorflow", "tensorflow-cpu", "mlflow", "bentoml", "keras"}


def test_dockerignore_matches_dockers_rules() -> None:
    patterns = dockerignore_patterns(REPO)
    for rel in (
        ".venv/bin/python",
        ".git/config",
        ".kubetrain/platform.env",
        "tests/conftest.py",
        "charts/kubetrain/values.yaml",
        "tools/harness/platform/build.sh",
        "tools/harness/platform/images/Dockerfile.mlflow",
        "operator/kubetrain_operator/__pycache__/main.cpython-311.pyc",
        "kubetrain.egg-info/PKG-INFO",
        "operator/x.env",
    ):
        assert is_excluded(rel, patterns), rel
    for rel in (
        "requirements/constraints.txt",
        "pyproject.toml",
        "operator/kubetrain_operator/main.py",
        "serving/bentofile.yaml",
        "tools/kubetrain_data/cli.py",
    ):
        assert not is_excluded(rel, patterns), rel


def test_base_hash_follows_the_package_list() -> None:
    assert base_hash() == base_hash(tuple(reversed(BASE_PACKAGES)))
    assert base_hash() != base_hash((*BASE_PACKAGES, "git"))
    assert base_hash() != base_hash(suite="trixie")
    for pkg in ("python3", "python3-venv", "python-is-python3", "ca-certificates", "passwd"):
        assert pkg in BASE_PACKAGES


def test_registry_config(tmp_path: Path) -> None:
    cfg = tmp_path / "registry" / "config.yml"
    write_registry_config(cfg, port=5123, storage=tmp_path / "store dir")
    data = yaml.safe_load(cfg.read_text())
    assert data["http"]["addr"] == "127.0.0.1:5123"
    assert data["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "store dir")
    assert data["storage"]["delete"]["enabled"] is True
    assert data["log"]["level"] == "warn"
    assert "auth" not in data and "tls" not in data["http"]
    secret = data["http"]["secret"]
    write_registry_config(cfg, port=5124, storage=tmp_path / "store dir")
    again = yaml.safe_load(cfg.read_text())
    assert again["http"]["secret"] == secret and again["http"]["addr"] == "127.0.0.1:5124"


def test_missing_or_dynamic_binary_names_the_build_target(tmp_path: Path) -> None:
    builder = ImageBuilder(
        registry="127.0.0.1:1",
        cache_dir=tmp_path / "cache",
        bin_dir=tmp_path / "bin",
        repo_root=REPO,
        log=lambda _m: None,
    )
    # Every ImageSet field has a spec; the tests' stub is the one extra, never built by "all".
    assert {s.name for s in builder.specs if not s.for_tests} == {f.name for f in fields(ImageSet)}
    assert [s.name for s in builder.specs if s.for_tests] == ["stub"]
    with pytest.raises(ImageError, match=r"tools/harness/platform/build\.sh coredns"):
        builder.refs(["coredns"])
    (tmp_path / "bin").mkdir()
    os.symlink("/bin/sh", tmp_path / "bin" / "pause")  # dynamically linked
    assert elf_interpreter(Path("/bin/sh"))
    with pytest.raises(ImageError, match=r"dynamically linked.*build\.sh pause"):
        builder.refs(["pause"])
    with pytest.raises(ImageError, match="unknown images"):
        builder.refs(["nginx"])
