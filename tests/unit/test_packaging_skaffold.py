"""skaffold.yaml, checked statically (the real `skaffold build/run` with the buildah profile
runs against the local platform in tests/platform/test_packaging_skaffold_run.py; the chart
rendered with skaffold's outputs in tests/platform/test_packaging_chart_render.py).

It must parse as a skaffold/v4beta* Config using only fields that schema has, build both
images from the Dockerfiles in this repository, deploy charts/kubetrain, and hand each built
image to the chart value that really consumes it (checked by rendering the chart with the
setValueTemplates keys substituted, so a renamed value fails here, not on someone's cluster).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.support.skaffold import REPO, SKAFFOLD, artifacts, release, template_keys

# Field names of the skaffold v4beta13 schema for the parts this file uses; any other key
# is a typo skaffold would reject ("field not found in type").
ALLOWED = {
    "config": {"apiVersion", "kind", "metadata", "build", "deploy", "profiles", "manifests"},
    "build": {"artifacts", "tagPolicy", "local", "platforms", "insecureRegistries"},
    "artifact": {"image", "context", "docker", "custom", "requires", "sync", "platforms"},
    "docker": {"dockerfile", "buildArgs", "target", "network", "cacheFrom", "noCache", "squash"},
    "local": {"push", "useBuildkit", "concurrency", "tryImportMissing", "useDockerCLI"},
    "release": {
        "name",
        "chartPath",
        "namespace",
        "createNamespace",
        "wait",
        "setValues",
        "setValueTemplates",
        "valuesFiles",
        "skipBuildDependencies",
        "upgradeOnChange",
        "version",
    },
    "profile": {"name", "activation", "build", "deploy", "patches", "manifests"},
    "activation": {"env", "kubeContext", "command"},
    "patch": {"op", "path", "value", "from"},
}


def check_keys(obj: dict[str, Any], kind: str) -> None:
    unknown = set(obj) - ALLOWED[kind]
    assert not unknown, f"{kind}: unknown skaffold fields {unknown}"


def test_schema_version_and_known_fields() -> None:
    assert re.fullmatch(r"skaffold/v4beta\d+", SKAFFOLD["apiVersion"])
    assert SKAFFOLD["kind"] == "Config"
    check_keys(SKAFFOLD, "config")
    check_keys(SKAFFOLD["build"], "build")
    for art in SKAFFOLD["build"]["artifacts"]:
        check_keys(art, "artifact")
        check_keys(art["docker"], "docker")
    check_keys(release(), "release")
    for profile in SKAFFOLD["profiles"]:
        check_keys(profile, "profile")
        for act in profile.get("activation", []):
            check_keys(act, "activation")
        for patch in profile.get("patches", []):
            check_keys(patch, "patch")
        if "build" in profile:
            assert set(profile["build"]) <= ALLOWED["build"]
            if "local" in profile["build"]:
                check_keys(profile["build"]["local"], "local")


def test_both_images_build_from_the_repository_dockerfiles() -> None:
    arts = artifacts()
    assert set(arts) == {"kubetrain-operator", "kubetrain-trainer"}
    for image, art in arts.items():
        context = REPO / art.get("context", ".")
        dockerfile = context / art["docker"]["dockerfile"]
        assert dockerfile.is_file(), f"{image}: {dockerfile} missing"
        assert dockerfile.name == f"Dockerfile.{image.removeprefix('kubetrain-')}"
        assert (context / ".dockerignore").is_file()
        for arg in art["docker"].get("buildArgs", {}):
            assert f"ARG {arg}=" in dockerfile.read_text(), f"{image}: build arg {arg} not declared"


def test_chart_path_and_release() -> None:
    rel = release()
    assert (REPO / rel["chartPath"] / "Chart.yaml").is_file()
    assert rel["chartPath"] == "charts/kubetrain"
    assert rel["createNamespace"] is True


def test_every_built_image_is_wired_to_the_chart_value_that_uses_it() -> None:
    keys = template_keys(release()["setValueTemplates"])
    assert keys == {
        "operator.image.repository": "kubetrain-operator:REPO",
        "operator.image.tag": "kubetrain-operator:TAG",
        "trainer.image.repository": "kubetrain-trainer:REPO",
        "trainer.image.tag": "kubetrain-trainer:TAG",
    }
    remote = next(p for p in SKAFFOLD["profiles"] if p["name"] == "remote")
    digests = {
        p["path"].rsplit("/", 1)[1]: p["value"]
        for p in remote["patches"]
        if p["path"].startswith("/deploy/helm/releases/0/setValueTemplates/")
    }
    assert template_keys(digests) == {
        "operator.image.digest": "kubetrain-operator:DIGEST",
        "trainer.image.digest": "kubetrain-trainer:DIGEST",
    }


def test_kubetrain_local_profile_builds_every_chart_image_with_buildah() -> None:
    profile = next(p for p in SKAFFOLD["profiles"] if p["name"] == "kubetrain-local")
    assert profile["activation"] == [{"kubeContext": "kubetrain-local"}]
    assert profile["build"]["local"]["push"] is True  # the node pulls only from the registry
    arts = {a["image"]: a for a in profile["build"]["artifacts"]}
    assert set(arts) == {
        "kubetrain-operator",
        "kubetrain-trainer",
        "kubetrain-minio",
        "kubetrain-mlflow",
    }
    for image, art in arts.items():
        name = image.removeprefix("kubetrain-")
        assert art["custom"]["buildCommand"] == f".venv/bin/kubetrain-platform publish {name}"
    templates = profile["deploy"]["helm"]["releases"][0]["setValueTemplates"]
    for name in ("operator", "trainer", "minio", "mlflow"):
        assert templates[f"{name}.image.repository"] == f"{{{{.IMAGE_REPO_kubetrain_{name}}}}}"
        assert templates[f"{name}.image.tag"] == f"{{{{.IMAGE_TAG_kubetrain_{name}}}}}"


def test_profiles_local_and_remote() -> None:
    profiles = {p["name"]: p for p in SKAFFOLD["profiles"]}
    assert set(profiles) == {"local", "remote", "kubetrain-local"}
    local = profiles["local"]
    assert local["build"]["local"]["push"] is False
    contexts = {a["kubeContext"] for a in local["activation"]}
    assert any(re.fullmatch(c, "kind-kind") for c in contexts)
    assert any(re.fullmatch(c, "minikube") for c in contexts)
    assert profiles["remote"]["build"]["local"]["push"] is True
    assert "activation" not in profiles["remote"], "pushing must be an explicit choice"
    values = yaml.safe_load((REPO / "charts" / "kubetrain" / "values.yaml").read_text())
    for patch in local["patches"] + profiles["remote"]["patches"]:
        if patch["path"].endswith("/setValues"):
            for key in patch["value"]:
                node: Any = values
                for part in key.split("."):
                    assert part in node, f"profile sets unknown chart value {key}"
                    node = node[part]
