"""One daemon per DatasetWatch: the worker loop (kubetrain_operator.worker) in a kopf thread."""

from __future__ import annotations

from typing import Any

import kopf

from kubetrain_operator import worker
from kubetrain_operator.spec import GROUP, PLURAL, VERSION


def _startup_delay(memo: Any, **_: Any) -> float:
    return float(memo.runtime.startup_delay())


@kopf.daemon(
    GROUP, VERSION, PLURAL, id="watch", initial_delay=_startup_delay, cancellation_polling=1
)
def watch_daemon(
    body: kopf.Body,
    namespace: str | None,
    name: str,
    stopped: kopf.DaemonStopped,
    memo: Any,
    **_: Any,
) -> None:
    worker.run_watch(memo.runtime, namespace=namespace or "", name=name, body=body, stopped=stopped)
