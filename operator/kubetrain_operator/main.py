"""`kubetrain-operator`: parse settings, start metrics, hand over to kopf. Nothing else.

    kubetrain-operator [--namespace NS]... | [--all-namespaces] [--standalone] ...

Health: GET :8080/healthz (kopf liveness + the `watches` probe). Metrics: GET :9090/metrics.
MinIO webhook receiver: POST :8081/minio/events.
Every flag also reads env KUBETRAIN_OPERATOR_<FLAG>; see settings.py and docs/operator.md.
"""

from __future__ import annotations

import logging
import sys

import kopf

from kubetrain_operator import lifecycle, metrics
from kubetrain_operator.kube import Kube
from kubetrain_operator.runtime import Runtime
from kubetrain_operator.settings import load_settings
from kubetrain_operator.webhook import WebhookRouter, WebhookServer


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
    except ValueError as exc:
        print(f"kubetrain-operator: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("kubetrain").setLevel(settings.log_level)
    logging.getLogger("kopf").setLevel(
        logging.INFO if settings.log_level == "DEBUG" else logging.WARNING
    )
    log = logging.getLogger("kubetrain.operator")
    scope = "all namespaces" if settings.all_namespaces else ", ".join(settings.namespaces)
    log.info("starting: %s; settings %s", scope, settings)

    try:
        kube = Kube.from_environment()
    except Exception as exc:  # no kubeconfig and not in a cluster
        print(f"kubetrain-operator: no Kubernetes credentials: {exc}", file=sys.stderr)
        return 2
    try:
        metrics.start_server(settings.metrics_host, settings.metrics_port)
    except OSError as exc:
        print(f"kubetrain-operator: metrics port {settings.metrics_port}: {exc}", file=sys.stderr)
        return 2

    router: WebhookRouter | None = None
    if settings.webhook_port:
        router = WebhookRouter()
        try:
            WebhookServer(
                router,
                host=settings.webhook_host,
                port=settings.webhook_port,
                path=settings.webhook_path,
                token=settings.webhook_token,
            ).start()
        except OSError as exc:
            print(
                f"kubetrain-operator: webhook port {settings.webhook_port}: {exc}", file=sys.stderr
            )
            return 2

    import kubetrain_operator.handlers  # noqa: F401  (registers the kopf handlers)

    memo = kopf.Memo(runtime=Runtime(settings=settings, kube=kube, webhook=router))
    kopf.run(memo=memo, **lifecycle.run_kwargs(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
