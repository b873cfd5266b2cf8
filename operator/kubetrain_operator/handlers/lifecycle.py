"""Operator start-up configuration and the liveness probe."""

from __future__ import annotations

from typing import Any

import kopf

from kubetrain_operator import lifecycle


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    lifecycle.configure_kopf(settings, memo.runtime)


@kopf.on.probe(id="watches")
def watches_probe(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    return memo.runtime.probe()  # type: ignore[no-any-return,unused-ignore]
