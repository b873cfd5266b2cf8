"""`kubetrain-nodeagent`: run the local node agent (`run`) or only the ingress (`ingress`).

The kubeconfig comes from --kubeconfig, else $KUBECONFIG, else the KUBECONFIG line of the
platform's env file ($KUBETRAIN_PLATFORM_ENV or ./.kubetrain/platform.env). SIGTERM and
SIGINT stop it cleanly: every pod process is terminated before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from kubetrain_platform.envfile import read_env_file

from .settings import AgentSettings, IngressSettings, default_venv_bin

log = logging.getLogger("kubetrain_nodeagent")


def _platform_kubeconfig() -> str | None:
    env_file = Path(os.environ.get("KUBETRAIN_PLATFORM_ENV") or ".kubetrain/platform.env")
    if not env_file.is_file():
        return None
    return read_env_file(env_file).get("KUBECONFIG") or None


def resolve_kubeconfig(arg: str | None) -> str:
    path = arg or os.environ.get("KUBECONFIG") or _platform_kubeconfig()
    if not path:
        raise SystemExit(
            "error: no kubeconfig: pass --kubeconfig, set KUBECONFIG, or start the platform "
            "(`kubetrain-platform up` writes .kubetrain/platform.env)"
        )
    if not Path(path).is_file():
        raise SystemExit(f"error: kubeconfig {path!r} does not exist")
    return path


def _label(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--label {value!r}: expected KEY=VALUE")
    return key, val


def _add_ingress_args(p: argparse.ArgumentParser, prefix: str) -> None:
    p.add_argument(
        f"--{prefix}address", default="127.0.0.1", help="ingress listen address (default 127.0.0.1)"
    )
    p.add_argument(
        f"--{prefix}class", default="", help="serve only Ingresses of this class (default: all)"
    )
    p.add_argument(
        f"--{prefix}timeout",
        type=float,
        default=300.0,
        help="upstream request timeout in seconds (default 300)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubetrain-nodeagent",
        description="Local Kubernetes node for the kubetrain platform: runs pods as processes "
        "in the project venv, plus a local HTTP ingress. Dev/test tooling; see docs/nodeagent.md.",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run", help="register a Node, bind and run pods (optionally serve the ingress)"
    )
    run.add_argument(
        "--kubeconfig", help="admin kubeconfig (default $KUBECONFIG or the platform's)"
    )
    run.add_argument(
        "--node-name", default=AgentSettings().node_name, help="Node name (default %(default)s)"
    )
    run.add_argument(
        "--state-dir",
        default=".kubetrain/nodeagent",
        help="pod dirs, volumes and logs go to STATE_DIR/NODE_NAME (default %(default)s)",
    )
    run.add_argument(
        "--pod-cidr",
        default="auto",
        help="pod IP range, loopback only: 'auto' (127.0.0.0/24) or a /16../30 inside "
        "127.0.0.0/8, e.g. 127.0.5.0/24 (default auto; see docs/nodeagent.md)",
    )
    run.add_argument("--cpu", default=AgentSettings().cpu, help="allocatable cpu (default: cores)")
    run.add_argument(
        "--memory", default="", help="allocatable memory, e.g. 16Gi (default: physical)"
    )
    run.add_argument("--max-pods", type=int, default=110, help="allocatable pods (default 110)")
    run.add_argument(
        "--scheduler-name",
        default="default-scheduler",
        help="bind pods with this spec.schedulerName",
    )
    run.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="bind only pods in this namespace (repeatable; default: all)",
    )
    run.add_argument(
        "--label", action="append", type=_label, default=[], help="extra Node label KEY=VALUE"
    )
    run.add_argument(
        "--venv-bin", default=default_venv_bin(), help="first entry of containers' PATH"
    )
    run.add_argument(
        "--pass-env",
        action="append",
        default=[],
        help="agent env var passed to containers (repeatable)",
    )
    run.add_argument(
        "--restart-backoff", type=float, default=10.0, help="first restart back-off, s (default 10)"
    )
    run.add_argument(
        "--restart-backoff-max", type=float, default=300.0, help="back-off cap, s (default 300)"
    )
    run.add_argument(
        "--shutdown-grace",
        type=float,
        default=10.0,
        help="SIGTERM->SIGKILL on agent exit, s (default 10)",
    )
    run.add_argument(
        "--heartbeat", type=float, default=10.0, help="Lease renew interval, s (default 10)"
    )
    run.add_argument(
        "--delete-node-on-exit",
        action="store_true",
        help="delete the Node on exit (else mark it NotReady)",
    )
    run.add_argument("--ingress-port", type=int, help="also serve the ingress on this port")
    _add_ingress_args(run, "ingress-")

    ing = sub.add_parser("ingress", help="only the ingress reverse proxy")
    ing.add_argument(
        "--kubeconfig", help="admin kubeconfig (default $KUBECONFIG or the platform's)"
    )
    ing.add_argument(
        "--port", type=int, default=8081, help="listen port (default 8081; 0 picks a free one)"
    )
    _add_ingress_args(ing, "")
    ing.add_argument(
        "--namespace", action="append", default=[], help="serve only this namespace (repeatable)"
    )
    return parser


def _run(coro_factory: object) -> int:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await coro_factory(stop)  # type: ignore[operator]

    asyncio.run(main())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from .kube import Kube

    kubeconfig = resolve_kubeconfig(args.kubeconfig)
    if args.command == "ingress":
        isettings = IngressSettings(
            port=args.port,
            address=args.address,
            ingress_class=args.__dict__["class"],
            namespaces=tuple(args.namespace),
            upstream_timeout=args.timeout,
        )
        kube = Kube(kubeconfig, api_workers=2)
        from .ingress import serve

        try:
            return _run(lambda stop: serve(isettings, kube, stop))
        finally:
            kube.close()

    ingress = None
    if args.ingress_port is not None:
        ingress = IngressSettings(
            port=args.ingress_port,
            address=args.ingress_address,
            ingress_class=args.ingress_class,
            upstream_timeout=args.ingress_timeout,
        )
    settings = AgentSettings(
        node_name=args.node_name,
        kubeconfig=kubeconfig,
        state_dir=Path(args.state_dir).resolve(),
        pod_cidr=args.pod_cidr,
        cpu=args.cpu,
        memory=args.memory,
        max_pods=args.max_pods,
        scheduler_name=args.scheduler_name,
        namespaces=tuple(args.namespace),
        labels=tuple(args.label),
        venv_bin=args.venv_bin,
        pass_env=tuple(args.pass_env),
        heartbeat_seconds=args.heartbeat,
        restart_backoff=args.restart_backoff,
        restart_backoff_max=args.restart_backoff_max,
        shutdown_grace=args.shutdown_grace,
        delete_node_on_exit=args.delete_node_on_exit,
        ingress=ingress,
    )
    try:
        settings.validate()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from .agent import NodeAgent
    from .podnet import PodNetworkError

    kube = Kube(kubeconfig, api_workers=settings.api_workers)
    try:
        return _run(lambda stop: NodeAgent(settings, kube).run(stop))
    except PodNetworkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        kube.close()


if __name__ == "__main__":
    sys.exit(main())
