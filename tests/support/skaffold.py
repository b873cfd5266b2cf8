"""skaffold.yaml as the tests read it, and the two lookups its tests share."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SKAFFOLD: dict[str, Any] = yaml.safe_load((REPO / "skaffold.yaml").read_text())


def artifacts() -> dict[str, dict[str, Any]]:
    return {a["image"]: a for a in SKAFFOLD["build"]["artifacts"]}


def release() -> dict[str, Any]:
    (rel,) = SKAFFOLD["deploy"]["helm"]["releases"]
    return rel


def template_keys(templates: dict[str, str]) -> dict[str, str]:
    """setValueTemplates value -> the artifact it names (IMAGE_*_<name with - and / as _>)."""
    names = {a.replace("-", "_").replace("/", "_"): a for a in artifacts()}
    out = {}
    for key, value in templates.items():
        m = re.fullmatch(r"\{\{\.IMAGE_(REPO|TAG|DIGEST)_(\w+)\}\}", value)
        assert m, f"{key}: {value!r} is not one skaffold image template"
        assert m.group(2) in names, f"{key}: unknown artifact {m.group(2)}"
        out[key] = f"{names[m.group(2)]}:{m.group(1)}"
    return out
