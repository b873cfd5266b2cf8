"""kopf settings for kubetrain (called from the startup handler) and `kopf.run` arguments.

- Persistence under our own names: finalizer `kubetrain.dev/finalizer`, kopf's bookkeeping
  in `kubetrain.dev/*` annotations (the CRD status schema is ours alone).
- No cluster scanning: namespaces and the CRD are resolved once at start-up, so the
  operator needs no RBAC on namespaces or CustomResourceDefinitions.
- Watch streams time out server-side and client-side so a silently broken connection is
  replaced within minutes instead of hanging forever.
- Events are only the ones the worker posts explicitly (kopf.event), not log lines.
- Each watch daemon holds one executor thread for its lifetime: size the pool for that.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from kubetrain_operator.runtime import Runtime, kopf_emitter
from kubetrain_operator.settings import OperatorSettings

FINALIZER = "kubetrain.dev/finalizer"


def configure_kopf(settings: kopf.OperatorSettings, runtime: Runtime) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kubetrain.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kubetrain.dev", key="last-handled-configuration"
    )
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = "kubetrain-operator"
    settings.peering.stealth = True
    settings.execution.max_workers = runtime.settings.max_watch_threads
    runtime.emit = kopf_emitter


def run_kwargs(s: OperatorSettings) -> dict[str, Any]:
    """Arguments of kopf.run for these settings (scope, peering, liveness)."""
    kwargs: dict[str, Any] = {
        "clusterwide": s.all_namespaces,
        "namespaces": () if s.all_namespaces else s.namespaces,
        "standalone": s.standalone,
        "priority": s.priority,
    }
    if not s.standalone:
        kwargs["peering_name"] = s.peering_name  # mandatory: paused until peers are known
    if s.health_port:
        kwargs["liveness_endpoint"] = f"http://{s.health_host}:{s.health_port}/healthz"
    return kwargs
