"""Every image the local platform runs, built here with buildah and served by a local registry.

Design
------
No container registry is reachable from this machine and there is no Docker engine, so each
image a pod uses is built locally with ``buildah`` and pushed to a ``distribution`` registry
that the platform runs on loopback (plain HTTP); containerd pulls from there like from any
registry, and only the layers it does not have yet.

* **One Debian base.** ``debootstrap --variant=minbase`` of Debian bookworm plus a short
  package list (Python 3.11 as ``python``, the ``venv`` module, CA certificates, useradd),
  stripped of apt lists, caches and documentation, tarred under ``<cache>/images/`` and
  imported with ``buildah from scratch`` + ``buildah add`` + ``buildah commit`` as
  ``localhost/kubetrain-base:<hash>``. The hash covers the suite, the package list and the
  strip recipe, so a changed list builds a new base and an unchanged one is never rebuilt.
  The base is only made when an image that needs it has to be built.
* **Images from Dockerfiles.** The project's ``Dockerfile.operator`` and ``Dockerfile.trainer``
  and the platform-only files in ``tools/harness/platform/images/`` (MLflow server, MinIO, CoreDNS,
  Traefik, pause) all take the base as ``--build-arg BASE_IMAGE=...``. The binary images are
  ``FROM scratch`` plus one static Go (or C) binary from ``tools/harness/platform/build.sh``; their
  build context is a staging directory holding just that binary.
* **Tags by content.** An image's tag is a hash of everything its build reads: the
  Dockerfile, the build arguments (which name the base by its hash), and every file the
  Dockerfile's ``COPY``/``ADD`` instructions take from the build context after
  ``.dockerignore`` -- walked on disk exactly as buildah would see it, so an uncommitted edit
  or a new untracked module changes the tag and nothing stale is ever reused. For binary
  images the file is the binary itself. If the registry already has ``<name>:<tag>``
  (a manifest ``GET``), nothing is built or pushed: a second ``ensure_all`` with no change
  costs a few hashes and HTTP requests. Otherwise ``buildah build --layers`` reuses every
  cached layer before the first changed instruction, and ``buildah push`` uploads only the
  blobs the registry lacks.
* **Layers are pushed gzip-compressed** (``compression="zstd"`` is the alternative):
  containers/image always compresses for a registry destination (``--disable-compression``
  has no effect there), and its parallel gzip costs about 1 s per 150 MB here.
* **Logs and errors.** Each buildah/debootstrap run appends its full output to
  ``<cache>/images/logs/<image>.log``; a failure raises :class:`ImageError` naming the image,
  the log file and the last lines of output. Builds stream their ``STEP`` lines (and a
  heartbeat for silent phases) through ``log``. A missing binary names the ``build.sh``
  target that makes it.
* **Report.** After ``ensure_all``, ``builder.report`` holds one :class:`ImageReport` per
  image: what happened (cached / pushed / built), build and push seconds, the size
  containerd pulls, cached build steps and skipped blobs.

PyPI traffic from build steps goes through a TLS-intercepting proxy that only the host
trusts, so builds run with the host network and the host CA bundle mounted read-only.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import posixpath
import re
import secrets
import select
import shlex
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

#: Bump to give every image (and the base) a new tag, e.g. when the build flags change.
RECIPE = "1"
BASE_SUITE = "bookworm"
#: The base's packages on top of minbase (which already has bash, coreutils, libstdc++).
BASE_PACKAGES = (
    "ca-certificates",  # the CA bundle (also copied into the scratch images)
    "passwd",  # groupadd/useradd for the images' fixed UID 10001
    "python-is-python3",  # `python`, as the Dockerfiles call it
    "python3",  # 3.11 on bookworm, the project's version
    "python3-venv",  # `python -m venv` with ensurepip
)
#: Removed from the base's root filesystem before it is tarred (relative globs).
BASE_STRIP = (
    "var/lib/apt/lists/*",
    "var/cache/apt/*",
    "var/cache/debconf/*-old",
    "var/lib/dpkg/*-old",
    "var/log/*",
    "usr/share/doc/*",
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/locale/*",
    "usr/share/lintian/*",
    "tmp/*",
    "etc/hostname",
    "etc/resolv.conf",
    "etc/hosts",
)
BASE_REPO = "localhost/kubetrain-base"
#: Keeps later `apt-get install`s in derived images from adding documentation back.
_DPKG_NODOC = """\
path-exclude=/usr/share/doc/*
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
"""
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
_MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)
_TAIL_LINES = 25
#: buildah's step lines: "STEP 3/5: COPY ..." or, in multi-stage builds, "[2/2] STEP 3/9: ...".
_STEP = re.compile(r"^(\[\d+/\d+\] )?STEP \d+/\d+: ")


class ImageError(RuntimeError):
    """An image could not be made; the message names the image, what to do or the log."""


@dataclass(frozen=True)
class ImageSet:
    """Image references as containerd/kubelet use them: ``<registry>/<name>:<tag>``."""

    operator: str
    trainer: str
    minio: str
    mlflow: str
    coredns: str
    traefik: str
    pause: str


@dataclass(frozen=True)
class ImageReport:
    """What ``ensure_all`` did for one image."""

    name: str
    """The ImageSet field (operator, trainer, ...)."""
    ref: str
    action: str
    """``cached`` (the registry had the tag), ``pushed`` (built earlier, only pushed now) or
    ``built`` (built and pushed)."""
    build_seconds: float
    push_seconds: float
    size_bytes: int
    """Sum of the config and layer blobs in the registry's manifest: what containerd pulls."""
    steps: int = 0
    cached_steps: int = 0
    blobs_pushed: int = 0
    """Blobs (layers and config) this push uploaded."""
    blobs_skipped: int = 0
    """Blobs the registry already had (from an earlier tag or another image)."""
    pushed_bytes: int = 0

    def line(self) -> str:
        text = f"{self.name:<9} {self.action:<7} {_mb(self.size_bytes):>9}"
        if self.action != "cached":
            text += f"  build {self.build_seconds:6.1f} s  push {self.push_seconds:5.1f} s"
        if self.steps:
            text += f"  steps {self.cached_steps}/{self.steps} cached"
        if self.blobs_pushed or self.blobs_skipped:
            text += (
                f"  blobs {self.blobs_pushed} sent ({_mb(self.pushed_bytes)}),"
                f" {self.blobs_skipped} already there"
            )
        return f"{text}  {self.ref}"


def format_report(report: Sequence[ImageReport]) -> str:
    """The report as one line per image, for `make demo` and logs."""
    return "\n".join(r.line() for r in report)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


# ------------------------------------------------------------------------------ registry config


def write_registry_config(path: Path, *, port: int, storage: Path) -> None:
    """A `registry serve` config: 127.0.0.1:PORT only, plain HTTP, no auth, filesystem storage
    under STORAGE, deletes allowed (so old tags can be garbage-collected), warnings only.
    The HTTP secret (which signs upload state) is generated once and kept on rewrites."""
    storage.mkdir(parents=True, exist_ok=True)
    secret = ""
    if path.is_file():
        found = re.search(r'^  secret: "([0-9a-f]+)"$', path.read_text(), re.MULTILINE)
        secret = found.group(1) if found else ""
    secret = secret or secrets.token_hex(16)
    # JSON strings are valid YAML scalars: no quoting mistakes whatever the path holds.
    text = (
        "version: 0.1\n"
        "log:\n"
        "  level: warn\n"
        "  accesslog:\n"
        "    disabled: true\n"
        "storage:\n"
        "  filesystem:\n"
        f"    rootdirectory: {json.dumps(str(storage))}\n"
        "  delete:\n"
        "    enabled: true\n"
        "  cache:\n"
        "    blobdescriptor: inmemory\n"
        "http:\n"
        f"  addr: {json.dumps(f'127.0.0.1:{port}')}\n"
        f'  secret: "{secret}"\n'
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# ------------------------------------------------------------------------------ Dockerfiles


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of each instruction, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    parts: list[str] = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not parts and not line):
            continue
        if line.endswith("\\"):
            parts.append(line[:-1].strip())
            continue
        parts.append(line)
        text = " ".join(p for p in parts if p)
        parts = []
        keyword, _, args = text.partition(" ")
        out.append((keyword.upper(), args.strip()))
    if parts:
        text = " ".join(p for p in parts if p)
        keyword, _, args = text.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def copy_sources(dockerfile: Path) -> list[str]:
    """Build-context paths (or globs) the Dockerfile's COPY/ADD instructions read."""
    sources: list[str] = []
    for keyword, args in dockerfile_instructions(dockerfile):
        if keyword not in ("COPY", "ADD"):
            continue
        json_form = args.startswith("[")
        words = [str(w) for w in json.loads(args)] if json_form else args.split()
        if any(w.startswith("--from") for w in words):
            continue  # from another stage or image, not from the context
        paths = [w for w in words if not w.startswith("--")]
        for src in paths[:-1]:
            if re.match(r"^[a-z]+://", src):
                continue  # ADD <url>: the URL is part of the Dockerfile's hash
            sources.append(src)
    return sources


def build_arg_names(dockerfile: Path) -> set[str]:
    return {
        args.split("=", 1)[0].strip()
        for keyword, args in dockerfile_instructions(dockerfile)
        if keyword == "ARG"
    }


# ------------------------------------------------------------------------------ .dockerignore


@dataclass(frozen=True)
class IgnorePattern:
    regex: re.Pattern[str]
    exclude: bool
    """False for a `!` exception, which re-includes what matches."""


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore syntax (Go filepath.Match plus `**`) as a regular expression."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                if body.startswith(("!", "^")):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


def dockerignore_patterns(context: Path) -> list[IgnorePattern]:
    path = context / ".dockerignore"
    if not path.is_file():
        return []
    patterns: list[IgnorePattern] = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        line = line.lstrip("!").strip()
        line = posixpath.normpath(line).lstrip("/")
        if line in ("", "."):
            continue
        patterns.append(IgnorePattern(_pattern_regex(line), exclude))
    return patterns


def is_excluded(rel: str, patterns: Sequence[IgnorePattern]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parents wins."""
    parts = rel.split("/")
    candidates = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    excluded = False
    for p in patterns:
        if any(p.regex.fullmatch(c) for c in candidates):
            excluded = p.exclude
    return excluded


def context_files(context: Path, dockerfile: Path) -> dict[str, Path]:
    """Every file the Dockerfile copies from CONTEXT, by context-relative path, after
    .dockerignore: what buildah would read, including untracked and modified files."""
    patterns = dockerignore_patterns(context)
    found: dict[str, Path] = {}
    for src in copy_sources(dockerfile):
        rel_src = posixpath.normpath(src).lstrip("/")
        if rel_src == ".":
            roots = [context]
        elif any(ch in rel_src for ch in "*?["):
            roots = sorted(context.glob(rel_src))
        else:
            roots = [context / rel_src]
        if not any(r.exists() or r.is_symlink() for r in roots):
            raise ImageError(f"{dockerfile.name}: COPY source {src!r} not found in {context}")
        for root in roots:
            if root.is_dir() and not root.is_symlink():
                for dirpath, dirnames, filenames in os.walk(root):
                    dirnames.sort()
                    for name in sorted(filenames) + [
                        d for d in dirnames if (Path(dirpath) / d).is_symlink()
                    ]:
                        p = Path(dirpath) / name
                        rel = p.relative_to(context).as_posix()
                        if not is_excluded(rel, patterns):
                            found[rel] = p
            else:
                rel = root.relative_to(context).as_posix()
                if not is_excluded(rel, patterns):
                    found[rel] = root
    return found


# ------------------------------------------------------------------------------ hashing


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_tag(
    dockerfile: Path,
    *,
    files: Mapping[str, Path],
    build_args: Mapping[str, str] | None = None,
    digest: Callable[[Path], str] = sha256_file,
) -> str:
    """The tag of an image built from DOCKERFILE with BUILD_ARGS from FILES (context-relative
    name -> path): 16 hex digits of a SHA-256 over all of it (contents, exec bits, symlink
    targets). Same inputs, same tag, on any machine."""
    h = hashlib.sha256()
    h.update(f"kubetrain-image {RECIPE}\n".encode())
    h.update(f"dockerfile {hashlib.sha256(dockerfile.read_bytes()).hexdigest()}\n".encode())
    for key, value in sorted((build_args or {}).items()):
        h.update(f"arg {json.dumps(key)}={json.dumps(value)}\n".encode())
    for rel, path in sorted(files.items()):
        if path.is_symlink():  # COPY keeps symlinks as they are
            h.update(f"link {json.dumps(rel)} {json.dumps(os.readlink(path))}\n".encode())
            continue
        mode = "x" if os.access(path, os.X_OK) else "-"
        h.update(f"file {json.dumps(rel)} {mode} {digest(path)}\n".encode())
    return h.hexdigest()[:16]


def base_hash(packages: Sequence[str] = BASE_PACKAGES, suite: str = BASE_SUITE) -> str:
    """Tag of the Debian base: its suite, package list and strip recipe."""
    spec = json.dumps(
        {
            "recipe": RECIPE,
            "suite": suite,
            "variant": "minbase",
            "packages": sorted(packages),
            "strip": list(BASE_STRIP),
            "nodoc": _DPKG_NODOC,
        },
        sort_keys=True,
    )
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def elf_interpreter(path: Path) -> str | None:
    """The dynamic loader an ELF executable asks for (None: static, or not ELF64)."""
    with path.open("rb") as f:
        head = f.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2:
            return None
        order: Literal["little", "big"] = "little" if head[5] == 1 else "big"
        phoff = int.from_bytes(head[0x20:0x28], order)
        phentsize = int.from_bytes(head[0x36:0x38], order)
        phnum = int.from_bytes(head[0x38:0x3A], order)
        for k in range(phnum):
            f.seek(phoff + k * phentsize)
            ph = f.read(phentsize)
            if int.from_bytes(ph[0:4], order) == 3:  # PT_INTERP
                offset = int.from_bytes(ph[8:16], order)
                size = int.from_bytes(ph[32:40], order)
                f.seek(offset)
                return f.read(size).rstrip(b"\0").decode(errors="replace")
    return None


# ------------------------------------------------------------------------------ the builder


@dataclass(frozen=True)
class ImageSpec:
    """How one image of the ImageSet is made."""

    name: str
    """ImageSet field."""
    repo: str
    """Repository name in the registry (and under localhost/ in buildah's storage)."""
    dockerfile: Path
    context: Path | None
    """Build context; None for a binary image (a staging directory with the binary)."""
    binary: str | None = None
    """For binary images: the file in bin_dir, which is also its build.sh target."""
    build_args: tuple[tuple[str, str], ...] = ()
    for_tests: bool = False
    """Only built when named (the tests' scripted workload), never by "all images"."""


@dataclass
class _Prepared:
    spec: ImageSpec
    tag: str
    build_args: dict[str, str] = field(default_factory=dict)
    binary: Path | None = None


class ImageBuilder:
    """Makes sure the registry holds every platform image for the current sources."""

    def __init__(
        self,
        *,
        registry: str,
        cache_dir: Path,
        bin_dir: Path,
        repo_root: Path,
        log: Callable[[str], None],
        compression: str = "gzip",
    ) -> None:
        """REGISTRY is ``127.0.0.1:PORT`` of a running plain-HTTP registry. Base tarballs,
        staging contexts and logs go under ``CACHE_DIR/images``; BIN_DIR holds the binaries
        of tools/harness/platform/build.sh. COMPRESSION of pushed layers: ``gzip`` or ``zstd``."""
        if compression not in ("gzip", "zstd"):
            raise ValueError(f"compression must be gzip or zstd, not {compression!r}")
        self.registry = registry
        self.work = cache_dir / "images"
        self.bin_dir = bin_dir
        self.repo_root = repo_root.resolve()
        self.compression = compression
        self._log = log
        self.report: list[ImageReport] = []
        self._digests: dict[str, str] = {}
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        images = self.repo_root / "tools" / "harness" / "platform" / "images"
        root = self.repo_root
        self.specs: tuple[ImageSpec, ...] = (
            ImageSpec("pause", "kubetrain-pause", images / "Dockerfile.pause", None, "pause"),
            ImageSpec(
                "coredns", "kubetrain-coredns", images / "Dockerfile.coredns", None, "coredns"
            ),
            ImageSpec(
                "traefik", "kubetrain-traefik", images / "Dockerfile.traefik", None, "traefik"
            ),
            ImageSpec("minio", "kubetrain-minio", images / "Dockerfile.minio", None, "minio"),
            ImageSpec("mlflow", "kubetrain-mlflow", images / "Dockerfile.mlflow", root),
            ImageSpec("operator", "kubetrain-operator", root / "Dockerfile.operator", root),
            ImageSpec("trainer", "kubetrain-trainer", root / "Dockerfile.trainer", root),
            ImageSpec(
                "stub",
                "kubetrain-stub",
                root / "tests" / "images" / "Dockerfile.stub",
                root / "tests" / "images",
                for_tests=True,
            ),
        )

    # ---------------------------------------------------------------- public API
    @property
    def base_image(self) -> str:
        return f"{BASE_REPO}:{base_hash()}"

    @property
    def logs_dir(self) -> Path:
        return self.work / "logs"

    def refs(self, names: Sequence[str] | None = None) -> dict[str, str]:
        """The reference each image has for the current sources, building nothing."""
        return {p.spec.name: self._ref(p.spec, p.tag) for p in self._prepare(self._select(names))}

    def ensure_all(self) -> ImageSet:
        """Build what is missing or changed, push it, and return every reference."""
        refs = self.ensure(None)
        return ImageSet(**{f.name: refs[f.name] for f in fields(ImageSet)})

    def ensure(self, names: Sequence[str] | None = None) -> dict[str, str]:
        """`ensure_all` for some images only (ImageSet field names, or ``stub``, the tests'
        workload; None or empty: every image but the tests'); returns name -> reference."""
        self._need_tools()
        self.report = []
        t0 = time.monotonic()
        with self._lock():
            self._check_registry()
            prepared = self._prepare(self._select(names))  # fails fast on a missing binary
            refs = {p.spec.name: self._ensure_one(p) for p in prepared}
            self._save_digests()
        cached = [r.name for r in self.report if r.action == "cached"]
        self._log(
            f"images: {len(refs)} ready in {time.monotonic() - t0:.1f} s"
            + (f"; unchanged, already in the registry: {', '.join(cached)}" if cached else "")
        )
        for r in self.report:
            if r.action != "cached":
                self._log(f"  {r.line()}")
        return refs

    def publish(self, name: str, target: str) -> str:
        """Build NAME as `ensure` does, then push it under TARGET as well: skaffold's custom
        builder names the reference it wants (its own tag policy) in $IMAGE."""
        ref = self.ensure([name])[name]
        spec = next(s for s in self.specs if s.name == name)
        local = f"localhost/{spec.repo}:{ref.rsplit(':', 1)[1]}"
        if not self._local_exists(local):  # built elsewhere: the registry has it
            self._buildah("pull", "--tls-verify=false", ref)
            local = ref
        argv = ["buildah", "push", "--tls-verify=false", "--compression-format", self.compression]
        self._run([*argv, local, f"docker://{target}"], image=name, what="push")
        self._log(f"images: {name} published as {target}")
        return target

    # ---------------------------------------------------------------- planning
    def _select(self, names: Sequence[str] | None) -> list[ImageSpec]:
        if not names:
            return [s for s in self.specs if not s.for_tests]
        known = {s.name: s for s in self.specs}
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise ImageError(f"unknown images {unknown}; known: {sorted(known)}")
        return [s for s in self.specs if s.name in names]

    def _prepare(self, specs: Sequence[ImageSpec]) -> list[_Prepared]:
        self._load_digests()
        out: list[_Prepared] = []
        for spec in specs:
            if not spec.dockerfile.is_file():
                raise ImageError(f"{spec.name}: {spec.dockerfile} not found")
            args = dict(spec.build_args)
            if "BASE_IMAGE" in build_arg_names(spec.dockerfile):
                args["BASE_IMAGE"] = self.base_image
            if spec.binary is not None:
                binary = self._binary(spec)
                tag = content_tag(
                    spec.dockerfile,
                    files={spec.binary: binary},
                    build_args=args,
                    digest=self._digest,
                )
                out.append(_Prepared(spec, tag, args, binary))
            else:
                assert spec.context is not None
                files = context_files(spec.context, spec.dockerfile)
                tag = content_tag(spec.dockerfile, files=files, build_args=args)
                out.append(_Prepared(spec, tag, args))
        return out

    def _binary(self, spec: ImageSpec) -> Path:
        assert spec.binary is not None
        path = self.bin_dir / spec.binary
        target = f"tools/harness/platform/build.sh {spec.binary}"
        if not path.exists():
            raise ImageError(
                f"{spec.name} image: {path} is missing; build it with `{target}`"
                " (and link it into bin/current)"
            )
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ImageError(
                f"{spec.name} image: {path} is not an executable file; rerun `{target}`"
            )
        interp = elf_interpreter(path.resolve())
        if interp:
            raise ImageError(
                f"{spec.name} image: {path} is dynamically linked ({interp}) and cannot run in a"
                f" scratch image; rebuild it statically with `{target}`"
            )
        return path.resolve()

    def _ref(self, spec: ImageSpec, tag: str) -> str:
        return f"{self.registry}/{spec.repo}:{tag}"

    # ---------------------------------------------------------------- one image
    def _ensure_one(self, p: _Prepared) -> str:
        spec, tag = p.spec, p.tag
        ref = self._ref(spec, tag)
        local = f"localhost/{spec.repo}:{tag}"
        size = self._remote_size(spec.repo, tag)
        if size is not None:
            self.report.append(ImageReport(spec.name, ref, "cached", 0.0, 0.0, size))
            return ref
        build_s, steps, cached = 0.0, 0, 0
        action = "pushed"
        if not self._local_exists(local):
            action = "built"
            if "BASE_IMAGE" in p.build_args:
                self._ensure_base()
            self._log(f"images: building {spec.name} ({local})")
            t0 = time.monotonic()
            steps, cached = self._build(p, local)
            build_s = time.monotonic() - t0
            self._log(
                f"images: {spec.name} built in {build_s:.1f} s ({cached}/{steps} steps cached)"
            )
        t0 = time.monotonic()
        sent, skipped, sent_bytes = self._push(spec, tag, local, ref)
        push_s = time.monotonic() - t0
        size = self._remote_size(spec.repo, tag) or 0
        self._log(
            f"images: {spec.name} pushed in {push_s:.1f} s ({sent} blobs, {_mb(sent_bytes)} sent;"
            f" {skipped} already there; {_mb(size)} in all)"
        )
        self._untag_others(spec.repo, tag)
        self.report.append(
            ImageReport(
                spec.name, ref, action, build_s, push_s, size,
                steps, cached, sent, skipped, sent_bytes,
            )
        )  # fmt: skip
        return ref

    def _build(self, p: _Prepared, local: str) -> tuple[int, int]:
        spec = p.spec
        if spec.context is None:
            assert spec.binary is not None and p.binary is not None
            context = self.work / "context" / spec.repo
            shutil.rmtree(context, ignore_errors=True)
            context.mkdir(parents=True)
            dest = context / spec.binary
            try:
                os.link(p.binary, dest)
            except OSError:
                shutil.copy2(p.binary, dest)
        else:
            context = spec.context
        # chroot isolation: crun (Debian's default OCI runtime for buildah) refuses cgroup v1
        # hybrid hosts; RUN steps of these trusted Dockerfiles need no more isolation.
        # --force-rm: without it a failed build, and a stage that is only a FROM (the CA
        # bundle stages), leave working containers behind.
        argv = ["buildah", "build", "--layers", "--force-rm", "--pull=never"]
        argv += ["--isolation", "chroot", "--network", "host"]
        if HOST_CA_BUNDLE.is_file():
            argv += ["-v", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
        for key, value in sorted(p.build_args.items()):
            argv += ["--build-arg", f"{key}={value}"]
        argv += ["-f", str(spec.dockerfile), "-t", local, str(context)]
        lines = self._run(
            argv,
            image=spec.name,
            what="build",
            show=lambda line: bool(_STEP.match(line)),
        )
        steps = sum(1 for line in lines if _STEP.match(line))
        cached = sum(1 for line in lines if line.startswith("--> Using cache"))
        return steps, cached

    def _push(self, spec: ImageSpec, tag: str, local: str, ref: str) -> tuple[int, int, int]:
        """Push; return (blobs sent, blobs the registry already had, bytes sent). buildah
        only uploads blobs the registry lacks; which those were is read from the registry
        (buildah does not say when its output is not a terminal)."""
        known = self._known_blobs()
        argv = ["buildah", "push", "--tls-verify=false", "--compression-format", self.compression]
        argv += [local, f"docker://{ref}"]
        self._run(argv, image=spec.name, what="push")
        manifest = self._remote_manifest(spec.repo, tag)
        if manifest is None:
            raise ImageError(f"{spec.name}: pushed {ref} but the registry has no such manifest")
        blobs = _manifest_blobs(manifest)
        new = {d: s for d, s in blobs.items() if d not in known}
        return len(new), len(blobs) - len(new), sum(new.values())

    # ---------------------------------------------------------------- the base
    def _ensure_base(self) -> None:
        image = self.base_image
        if self._local_exists(image):
            return
        tarball = self.work / f"base-{base_hash()}.tar"
        if not tarball.is_file():
            self._debootstrap(tarball)
        self._log(f"images: importing {tarball.name} as {image}")
        proc = self._buildah("from", "scratch")
        ctr = proc.stdout.strip()
        try:
            self._run(["buildah", "add", ctr, str(tarball), "/"], image="base", what="import")
            self._run(
                [
                    "buildah", "config",
                    "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "--env", "LANG=C.UTF-8",
                    "--cmd", "/bin/bash",
                    "--label", f"org.opencontainers.image.title=kubetrain-base ({BASE_SUITE})",
                    "--label", f"kubetrain.packages={','.join(sorted(BASE_PACKAGES))}",
                    ctr,
                ],
                image="base",
                what="import",
            )  # fmt: skip
            self._run(["buildah", "commit", "--rm", ctr, image], image="base", what="import")
        except BaseException:
            subprocess.run(["buildah", "rm", ctr], capture_output=True, check=False)
            raise
        self._log(f"images: base ready: {image}")

    def _debootstrap(self, tarball: Path) -> None:
        debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
        if not Path(debootstrap).is_file():
            raise ImageError("debootstrap is not installed: apt-get install -y debootstrap")
        rootfs = tarball.with_suffix(".rootfs")
        _remove_tree(rootfs)
        self._log(
            f"images: debootstrap {BASE_SUITE} minbase + {', '.join(BASE_PACKAGES)}"
            " (about 1.5 min, network-bound)"
        )
        t0 = time.monotonic()
        try:
            self._run(
                [
                    debootstrap,
                    "--variant=minbase",
                    "--components=main",
                    f"--include={','.join(BASE_PACKAGES)}",
                    BASE_SUITE,
                    str(rootfs),
                ],
                image="base",
                what="debootstrap",
                heartbeat=15.0,
                env={"DEBIAN_FRONTEND": "noninteractive"},
            )
            for pattern in BASE_STRIP:
                for path in rootfs.glob(pattern):
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    else:
                        path.unlink()
            nodoc = rootfs / "etc" / "dpkg" / "dpkg.cfg.d" / "01-kubetrain-nodoc"
            nodoc.write_text(_DPKG_NODOC)
            partial = tarball.with_suffix(".tar.partial")
            self._run(
                [
                    "tar", "--numeric-owner", "--xattrs", "--xattrs-include=*",
                    "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*",
                    "-C", str(rootfs), "-cf", str(partial), ".",
                ],
                image="base",
                what="tar",
            )  # fmt: skip
            partial.rename(tarball)
        finally:
            _remove_tree(rootfs)
        self._log(
            f"images: base root filesystem {_mb(tarball.stat().st_size)}"
            f" in {time.monotonic() - t0:.0f} s"
        )

    # ---------------------------------------------------------------- registry
    def _http(self, method: str, path: str) -> tuple[int, bytes]:
        req = urllib.request.Request(
            f"http://{self.registry}{path}", method=method, headers={"Accept": _MANIFEST_TYPES}
        )
        try:
            with self._opener.open(req, timeout=30) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def _check_registry(self) -> None:
        try:
            status, _ = self._http("GET", "/v2/")
        except OSError as exc:
            raise ImageError(f"no registry answers at http://{self.registry}/v2/: {exc}") from exc
        if status != 200:
            raise ImageError(f"registry at http://{self.registry}/v2/ answered HTTP {status}")

    def _remote_manifest(self, repo: str, tag: str) -> dict[str, Any] | None:
        """The manifest of REPO:TAG, or None if the registry lacks it."""
        status, body = self._http("GET", f"/v2/{repo}/manifests/{tag}")
        if status == 404:
            return None
        if status != 200:
            raise ImageError(f"registry: GET manifest {repo}:{tag} answered HTTP {status}")
        manifest: dict[str, Any] = json.loads(body)
        return manifest

    def _remote_size(self, repo: str, tag: str) -> int | None:
        """Bytes of the manifest's config and layers, or None if the registry lacks the tag."""
        manifest = self._remote_manifest(repo, tag)
        return None if manifest is None else sum(_manifest_blobs(manifest).values())

    def _known_blobs(self) -> set[str]:
        """Digests of every blob the registry's tagged manifests use (any repository)."""
        known: set[str] = set()
        status, body = self._http("GET", "/v2/_catalog?n=1000")
        if status != 200:
            return known
        for repo in json.loads(body).get("repositories") or []:
            status, body = self._http("GET", f"/v2/{repo}/tags/list")
            if status != 200:
                continue
            for tag in json.loads(body).get("tags") or []:
                manifest = self._remote_manifest(repo, tag)
                if manifest is not None:
                    known.update(_manifest_blobs(manifest))
        return known

    # ---------------------------------------------------------------- buildah helpers
    def _need_tools(self) -> None:
        if shutil.which("buildah") is None:
            raise ImageError("buildah is not installed: apt-get install -y buildah")

    def _buildah(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["buildah", *args], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ImageError(f"buildah {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def _local_exists(self, image: str) -> bool:
        proc = subprocess.run(
            ["buildah", "inspect", "--type", "image", "--format", "{{.FromImageID}}", image],
            capture_output=True,
            check=False,
        )
        return proc.returncode == 0

    def _untag_others(self, repo: str, keep: str) -> None:
        """Drop older local tags of REPO (the registry keeps them; layers in use stay)."""
        proc = subprocess.run(
            ["buildah", "images", "--json"], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0 or not proc.stdout.strip():
            return
        prefix = f"localhost/{repo}:"
        for image in json.loads(proc.stdout):
            for name in image.get("names") or []:
                if name.startswith(prefix) and name != prefix + keep:
                    subprocess.run(["buildah", "rmi", name], capture_output=True, check=False)

    # ---------------------------------------------------------------- digests of big binaries
    @property
    def _digest_file(self) -> Path:
        return self.work / "binary-digests.json"

    def _load_digests(self) -> None:
        try:
            self._digests = json.loads(self._digest_file.read_text())
        except (OSError, ValueError):
            self._digests = {}

    def _save_digests(self) -> None:
        self._digest_file.parent.mkdir(parents=True, exist_ok=True)
        self._digest_file.write_text(json.dumps(self._digests, indent=1, sort_keys=True))

    def _digest(self, path: Path) -> str:
        """sha256 of a binary, remembered by (path, size, mtime, inode)."""
        st = path.stat()
        key = f"{path}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
        if key not in self._digests:
            self._digests[key] = sha256_file(path)
        return self._digests[key]

    # ---------------------------------------------------------------- processes
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One builder at a time per cache dir (buildah itself is safe; this keeps logs and
        staging directories apart and avoids building the same image twice)."""
        self.work.mkdir(parents=True, exist_ok=True)
        with (self.work / "lock").open("w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._log("images: another build holds the lock; waiting")
                fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _run(
        self,
        argv: Sequence[str],
        *,
        image: str,
        what: str,
        show: Callable[[str], bool] | None = None,
        heartbeat: float = 30.0,
        env: Mapping[str, str] | None = None,
    ) -> list[str]:
        """Run ARGV, appending its output to the image's log and logging the lines SHOW picks
        (and a heartbeat when nothing was logged for HEARTBEAT seconds). Returns the lines."""
        log_path = self.logs_dir / f"{image}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        lines: list[str] = []
        tail: deque[str] = deque(maxlen=_TAIL_LINES)
        t0 = last = time.monotonic()
        with log_path.open("ab") as out:
            out.write(f"\n==> {time.strftime('%F %T')} $ {shlex.join(argv)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
            assert proc.stdout is not None
            fd = proc.stdout.fileno()
            pending = b""
            try:
                while True:
                    ready, _, _ = select.select([fd], [], [], 2.0)
                    if ready:
                        chunk = os.read(fd, 1 << 16)
                        if not chunk:
                            break
                        out.write(chunk)
                        *complete, pending = (pending + chunk).split(b"\n")
                        for raw in complete:
                            line = raw.decode(errors="replace").rstrip("\r")
                            lines.append(line)
                            if line.strip():
                                tail.append(line)
                            if show is not None and show(line):
                                self._log(f"  [{image}] {line[:160]}")
                                last = time.monotonic()
                    now = time.monotonic()
                    if now - last >= heartbeat:
                        latest = tail[-1][:100] if tail else ""
                        self._log(f"  [{image}] {what}: {now - t0:.0f} s ... {latest}")
                        last = now
            finally:
                rc = proc.wait()
            if pending:
                lines.append(pending.decode(errors="replace"))
                tail.append(lines[-1])
            out.write(f"==> exit {rc} after {time.monotonic() - t0:.1f} s\n".encode())
        if rc != 0:
            shown = "\n".join(f"    {line}" for line in tail)
            raise ImageError(
                f"{image} image: {what} failed (exit {rc}); full log: {log_path}\n"
                f"  $ {shlex.join(argv)}\n  last lines:\n{shown}"
            )
        return lines


def _manifest_blobs(manifest: Mapping[str, Any]) -> dict[str, int]:
    """digest -> size of an image manifest's config and layers."""
    blobs = [manifest.get("config") or {}, *(manifest.get("layers") or [])]
    return {str(b["digest"]): int(b.get("size", 0)) for b in blobs if "digest" in b}


def _remove_tree(path: Path) -> None:
    """Remove a debootstrap target safely: unmount anything still mounted below it first
    (a failed debootstrap can leave /proc or /sys mounted there)."""
    if not path.exists():
        return
    prefix = str(path.resolve())
    mounts = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    with open("/proc/self/mountinfo") as f:
        if any(line.split()[4].startswith(prefix + "/") for line in f):
            raise ImageError(f"{path} still has file systems mounted below it; unmount them")
    shutil.rmtree(path)
