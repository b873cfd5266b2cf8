"""`kubetrain-serve`: fetch a Bento, put it in the local BentoML store, and serve it.

    kubetrain-serve --bento s3://bucket/.kubetrain/bentos/mnist-7.bento [--port 3000] [--host 0.0.0.0]

`--bento` takes an `s3://` URI of an exported Bento (what the trainer writes), a local
exported file (`*.bento`), a Bento directory (with bento.yaml), or a tag already in
the store (`name:version`). Remote and file Bentos are imported into the store under
`BENTOML_HOME` (default `~/bentoml`; in a pod, point it at a writable emptyDir); a
Bento whose tag is already there is reused, so a restarted container does not
download it again.

S3 access goes through fsspec/s3fs, which read the standard AWS variables
(`AWS_ENDPOINT_URL_S3`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`). The platform's
MinIO variables (`MINIO_ENDPOINT`, `MINIO_ACCESS_KEY`, `MINIO_SECRET_KEY`) are mapped
onto them when the AWS ones are unset. Credentials are never printed.

Serving then *replaces this process* with `bentoml serve <tag>` (exec), so the
container's signals (SIGTERM on rollout) reach BentoML's supervisor directly and it
shuts its workers down gracefully; there is no wrapper process to forward them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("kubetrain.serve")

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_TRANSIENT = 75


@dataclass(frozen=True)
class ServeOptions:
    """What to serve and where (command line, with env defaults)."""

    bento: str
    """s3:// URI, exported file, Bento directory or `name:version` tag."""
    host: str = "0.0.0.0"
    """Interface to listen on."""
    port: int = 3000
    """TCP port to listen on."""
    bentoml_home: str = ""
    """BentoML home (store of Bentos and models); empty = BENTOML_HOME or ~/bentoml."""
    import_only: bool = False
    """Import the Bento, print its tag, and exit instead of serving."""


def prepare_env(env: MutableMapping[str, str], bentoml_home: str = "") -> None:
    """Fill in BentoML and S3 settings; never overrides what is already set."""
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    if bentoml_home:
        env["BENTOML_HOME"] = bentoml_home
    minio = env.get("MINIO_ENDPOINT", "").strip()
    if minio and not env.get("AWS_ENDPOINT_URL_S3") and not env.get("AWS_ENDPOINT_URL"):
        env["AWS_ENDPOINT_URL_S3"] = minio
    if env.get("MINIO_ACCESS_KEY") and not env.get("AWS_ACCESS_KEY_ID"):
        env["AWS_ACCESS_KEY_ID"] = env["MINIO_ACCESS_KEY"]
    if env.get("MINIO_SECRET_KEY") and not env.get("AWS_SECRET_ACCESS_KEY"):
        env["AWS_SECRET_ACCESS_KEY"] = env["MINIO_SECRET_KEY"]
    if env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"):
        # MinIO ignores the region but botocore insists on one; and there is no EC2
        # metadata service to ask for credentials (asking it stalls for seconds).
        env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        env.setdefault("AWS_EC2_METADATA_DISABLED", "true")


def classify_source(bento: str) -> str:
    """ "s3" | "file" (exported archive) | "dir" (Bento directory) | "tag"."""
    if bento.startswith("s3://"):
        return "s3"
    if "://" in bento:
        raise ValueError(f"--bento {bento!r}: only s3:// URIs, local paths and tags are supported")
    path = Path(bento)
    if path.is_dir():
        if not (path / "bento.yaml").is_file():
            raise ValueError(f"--bento {bento!r}: directory has no bento.yaml (not a Bento)")
        return "dir"
    if path.is_file():
        return "file"
    if bento.endswith((".bento", ".tar", ".gz", ".zip")) or os.sep in bento:
        raise ValueError(f"--bento {bento!r}: no such file")
    return "tag"


def import_bento(source: str) -> str:
    """Import an exported Bento (s3:// or local file) into the store; returns its tag.

    The same Bento already in the store (same tag and build time) is reused; a
    different one under the same tag (another model's `v1`, say) is replaced.
    """
    import bentoml
    from bentoml.exceptions import NotFound

    bento = bentoml.Bento.import_from(source)
    try:
        existing = bentoml.bentos.get(bento.tag)
    except NotFound:
        existing = None
    if existing is not None:
        if existing.info.creation_time == bento.info.creation_time:
            log.info("Bento %s is already in the store; reusing it", bento.tag)
            return str(existing.tag)
        log.info("replacing a different Bento stored under the same tag %s", bento.tag)
        bentoml.bentos.delete(existing.tag)
    saved = bento.save()
    return str(saved.tag)


def packed_models(bento: Any) -> list[str]:
    """Tags of the models a Bento carries (BentoML 1.4 lists them per service)."""
    tags = {str(m.tag) for m in bento.info.all_models}
    for svc in bento.info.services:
        tags.update(str(m.tag) for m in svc.models)
    return sorted(tags)


def resolve(options: ServeOptions) -> str:
    """Make the Bento servable locally; returns what to pass to `bentoml serve`.

    Refuses (ValueError) a Bento that packs no model: BentoML would otherwise start,
    fail to load the service, and restart its worker forever without becoming ready.
    """
    import bentoml
    from bentoml.exceptions import NotFound

    kind = classify_source(options.bento)
    if kind == "dir":
        bento = bentoml.Bento.from_path(str(Path(options.bento).resolve()))
        target = str(bento.path)
    elif kind == "tag":
        try:
            bento = bentoml.bentos.get(options.bento)
        except NotFound:
            raise ValueError(
                f"--bento {options.bento!r}: no such Bento in the store ({os.environ.get('BENTOML_HOME', '~/bentoml')})"
            ) from None
        target = str(bento.tag)
    else:
        log.info("importing %s into the BentoML store", options.bento)
        target = import_bento(options.bento)
        bento = bentoml.bentos.get(target)
    if not packed_models(bento) and not os.environ.get("KUBETRAIN_BENTO_MODEL"):
        raise ValueError(
            f"Bento {bento.tag} packs no model (it was built without KUBETRAIN_BENTO_MODEL); "
            "nothing to serve"
        )
    return target


def parse_args(argv: list[str] | None) -> ServeOptions:
    parser = argparse.ArgumentParser(
        prog="kubetrain-serve",
        description="Import a Bento (s3://, file, directory or tag) into the local BentoML "
        "store and serve it with `bentoml serve` (/predict, /classify, /readyz, /metrics).",
        epilog="Environment: BENTOML_HOME (store location), AWS_ENDPOINT_URL_S3 / "
        "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or MINIO_ENDPOINT / MINIO_ACCESS_KEY / "
        "MINIO_SECRET_KEY (s3:// Bentos), KUBETRAIN_SERVING_* (service tuning, see docs/serving.md).",
    )
    parser.add_argument(
        "--bento",
        required=True,
        help="s3://bucket/key.bento, a .bento file, a Bento directory, or name:version",
    )
    parser.add_argument("--port", type=int, default=3000, help="port to listen on (default 3000)")
    parser.add_argument(
        "--host", default="0.0.0.0", help="interface to listen on (default 0.0.0.0)"
    )
    parser.add_argument(
        "--bentoml-home",
        default="",
        help="BentoML store directory (default: $BENTOML_HOME or ~/bentoml)",
    )
    parser.add_argument(
        "--import-only", action="store_true", help="import the Bento, print its tag, exit"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error(f"--port {args.port} is not a TCP port")
    return ServeOptions(
        bento=args.bento,
        host=args.host,
        port=args.port,
        bentoml_home=args.bentoml_home,
        import_only=args.import_only,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    prepare_env(os.environ, options.bentoml_home)
    try:
        target = resolve(options)
    except ValueError as exc:
        log.error("%s", exc)
        return EXIT_BAD_INPUT
    except FileNotFoundError as exc:
        log.error("Bento not found: %s", exc)
        return EXIT_BAD_INPUT
    except Exception as exc:  # network, S3 permissions, corrupt archive: worth a retry
        log.error("cannot import %s: %s: %s", options.bento, type(exc).__name__, exc)
        return EXIT_TRANSIENT
    if options.import_only:
        print(target)
        return EXIT_OK
    command = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        target,
        "--host",
        options.host,
        "--port",
        str(options.port),
    ]
    log.info("serving %s on %s:%d", target, options.host, options.port)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(command[0], command, dict(os.environ))
    return EXIT_OK  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main())
