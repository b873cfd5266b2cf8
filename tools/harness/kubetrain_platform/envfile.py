"""Read `platform.env`, the shell-sourceable interface of the local platform.

Kept free of heavy imports so tests and benchmarks can read it cheaply.
"""

from __future__ import annotations

import shlex
from pathlib import Path


def read_env_file(path: str | Path) -> dict[str, str]:
    """`export KEY='value'` lines -> {KEY: value}; comments and blank lines are ignored."""
    env: dict[str, str] = {}
    for raw in Path(path).read_text().splitlines():
        line = raw.strip().removeprefix("export ")
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        env[key] = shlex.split(value)[0] if value else ""
    return env
