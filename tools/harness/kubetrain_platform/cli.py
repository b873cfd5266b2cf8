"""`kubetrain-platform`: start, stop and inspect the local platform.

Thin argparse front end over `kubetrain_platform.platform.Platform`; see that module
for the design. Exit codes: 0 ok, 1 a component failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kubetrain_platform.platform import DEFAULT_PORTS, REPO_ROOT, Platform, PlatformError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kubetrain-platform",
        description="Run the local kubetrain platform from binaries built by tools/harness/platform/build.sh: "
        "etcd, kube-apiserver, kube-controller-manager, kube-scheduler, MinIO and MLflow on "
        "127.0.0.1, and a real node (containerd, runc, CNI bridge, kubelet, kube-proxy, CoreDNS, "
        "Traefik on 127.0.0.1) pulling images from a local registry.",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get("KUBETRAIN_STATE_DIR", REPO_ROOT / ".kubetrain")),
        help="where data, logs, certificates and platform.env live (env KUBETRAIN_STATE_DIR; "
        "default: .kubetrain in the repository)",
    )
    p.add_argument(
        "--bin-dir",
        type=Path,
        default=None,
        help="directory with etcd, kube-apiserver, kube-controller-manager, kubectl, minio, helm "
        "(default: ~/.cache/kubetrain/bin/current)",
    )
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start everything that is not running (idempotent)")
    up.add_argument(
        "--ports",
        choices=["default", "free"],
        default="default",
        help="'default' uses fixed ports ("
        + ", ".join(f"{k} {v}" for k, v in DEFAULT_PORTS.items())
        + "); 'free' picks unused ones. Chosen ports are kept for the state dir.",
    )
    up.add_argument(
        "--minio-webhook",
        metavar="URL",
        default=None,
        help="configure a MinIO webhook notification target (id KUBETRAIN) posting to URL",
    )
    up.add_argument(
        "--no-node",
        action="store_true",
        help="control plane only: no node, registry, DNS or ingress (pods stay Pending)",
    )
    sub.add_parser("down", help="stop everything `up` started and undo its host changes")
    images = sub.add_parser(
        "images", help="build kubetrain's images with buildah and push them to the local registry"
    )
    images.add_argument(
        "names",
        nargs="*",
        default=["operator", "trainer", "minio", "mlflow"],
        help="which images (default: operator trainer minio mlflow; also pause coredns traefik)",
    )
    publish = sub.add_parser(
        "publish",
        help="build one image and push it as $IMAGE (skaffold's custom builder contract)",
    )
    publish.add_argument("name", help="operator, trainer, minio, mlflow, pause, coredns, traefik")
    publish.add_argument(
        "--image",
        default=os.environ.get("IMAGE", ""),
        help="target reference REGISTRY/REPO:TAG (default: $IMAGE, set by skaffold)",
    )
    sub.add_parser(
        "leftovers", help="list what a stopped platform left on the host (exit 1 if anything)"
    )
    sub.add_parser("status", help="say what runs and where")
    sub.add_parser("env", help="print platform.env (contains credentials)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "up":
            plat = Platform(
                args.state_dir,
                bin_dir=args.bin_dir,
                ports=args.ports,
                webhook=args.minio_webhook,
                node=not args.no_node,
            )
            plat.up()
            print(
                f"\nsource {plat.env_path}   # KUBECONFIG, MINIO_*, MLFLOW_TRACKING_URI, KUBETRAIN_BIN"
            )
            return 0
        if args.command == "publish":
            return _publish(args)
        plat = Platform(args.state_dir, bin_dir=args.bin_dir)
        if args.command == "down":
            stopped = plat.down()
            print(
                "platform: stopped "
                + (", ".join(stopped) if stopped else "nothing (nothing was running)")
            )
            return 0
        if args.command == "images":
            for name, ref in plat.images(tuple(args.names)).items():
                print(f"{name:<10} {ref}")
            return 0
        if args.command == "leftovers":
            left = plat.leftovers()
            for line in left:
                print(line)
            return 1 if left else 0
        if args.command == "status":
            rows = plat.status()
            print(f"state dir: {plat.state}")
            print(f"{'component':<20}{'pid':<9}{'state':<22}{'rss':>9}  url")
            for r in rows:
                rss = f"{r.rss_bytes / 2**20:.0f} MiB" if r.pid else "-"
                print(f"{r.name:<20}{r.pid or '-'!s:<9}{r.state:<22}{rss:>9}  {r.url}")
            total = sum(r.rss_bytes for r in rows)
            print(
                f"total rss: {total / 2**20:.0f} MiB   logs: {plat.state / 'logs'}   env: {plat.env_path}"
            )
            return 0 if all(r.state == "ready" for r in rows) else 1
        if args.command == "env":
            if not plat.env_path.exists():
                print(
                    "platform: not started (no platform.env); run `make platform-up`",
                    file=sys.stderr,
                )
                return 1
            print(plat.env_path.read_text(), end="")
            return 0
    except PlatformError as exc:
        print(f"platform: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


def _publish(args: argparse.Namespace) -> int:
    """skaffold runs this with IMAGE and PUSH_IMAGE; the registry is the image's own host."""
    from kubetrain_platform.images import ImageBuilder, ImageError
    from kubetrain_platform.platform import cache_dir, default_bin_dir

    if "/" not in args.image or ":" not in args.image.rsplit("/", 1)[1]:
        print(
            f"platform: error: --image/$IMAGE must be REGISTRY/REPO:TAG, not {args.image!r}",
            file=sys.stderr,
        )
        return 2
    if os.environ.get("PUSH_IMAGE", "true") != "true":
        print(
            "platform: error: images can only reach the node through its registry (push: true)",
            file=sys.stderr,
        )
        return 2
    builder = ImageBuilder(
        registry=args.image.split("/", 1)[0],
        cache_dir=cache_dir(),
        bin_dir=args.bin_dir or default_bin_dir(),
        repo_root=REPO_ROOT,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    try:
        builder.publish(args.name, args.image)
    except ImageError as exc:
        print(f"platform: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
