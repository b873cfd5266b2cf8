"""Generate charts/kubetrain/README.md from the chart's values.yaml (helm-docs style).

values.yaml is the single source of truth for what each value means: the README's table
(key, type, default, description) is read from it. A key's description is its `# --`
comment, continued by the comment lines after it up to the key (the helm-docs convention; a
comment without `--`, such as a section heading, is not a description):

- a key with a description is one row; its children are not listed (a Kubernetes object
  such as `resources` or `podSecurityContext` is documented as a whole, its default shown);
- a key without one must be a non-empty mapping, and its children are documented instead;
- anything else (an undocumented scalar, list or empty mapping) is an error naming the key,
  so a value can never be missing from the README.

The type is the YAML type of the default (string, int, float, bool, list, object), the
default its compact JSON. The static part (install, CRD upgrades, where the scenarios are)
is written here; the chart's name, description and versions come from Chart.yaml and the
CRD names from crds/.

`--check` renders into memory and compares with the file on disk; it exits 1 with a unified
diff when they differ (the unit test tests/unit/test_chart_readme.py runs it).
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubetrain"
VALUES = CHART / "values.yaml"
OUT = CHART / "README.md"

COMMAND = ".venv/bin/python tools/harness/gen_chart_readme.py"
CRD_UPGRADE = "kubectl apply --server-side -f charts/kubetrain/crds/"

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_][A-Za-z0-9_.-]*):(?:\s|$)")
_DESCRIPTION = re.compile(r"^\s*# -- ?(?P<text>.*)$")
_COMMENT = re.compile(r"^\s*#(?: ?(?P<text>.*))?$")


class ReadmeError(RuntimeError):
    """values.yaml has a value the README cannot document (the message names it)."""


@dataclass(frozen=True)
class Row:
    key: str
    type: str
    default: str
    description: str


def yaml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "null"


def _lookup(values: dict[str, Any], path: list[str]) -> Any:
    node: Any = values
    for part in path:
        if not isinstance(node, dict) or part not in node:
            raise ReadmeError(f"{'.'.join(path)}: found in the text but not in the parsed YAML")
        node = node[part]
    return node


def rows(text: str) -> list[Row]:
    """One row per documented value of a values.yaml, in file order."""
    values = yaml.safe_load(text) or {}
    lines = text.splitlines()
    out: list[Row] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing undocumented mappings
    comment: list[str] = []  # comment lines directly above the current line
    skip_deeper_than: int | None = None  # inside a documented key: its children are not rows
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            comment = []
            continue
        if _COMMENT.match(line):
            comment.append(line)
            continue
        above, comment = comment, []
        match = _KEY.match(line)
        if match is None:
            continue  # a list item or a continuation: part of the value above
        indent, key = len(match.group("indent")), match.group("key")
        if skip_deeper_than is not None:
            if indent > skip_deeper_than:
                continue
            skip_deeper_than = None
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [k for _, k in stack] + [key]
        dotted = ".".join(path)
        value = _lookup(values, path)
        description = _description(above)
        if description is not None:
            out.append(
                Row(
                    key=dotted,
                    type=yaml_type(value),
                    default=json.dumps(value, separators=(",", ":"), ensure_ascii=False),
                    description=description,
                )
            )
            skip_deeper_than = indent
        elif isinstance(value, dict) and value:
            stack.append((indent, key))
        else:
            raise ReadmeError(
                f"values.yaml line {number}: {dotted} has no `# --` description comment"
            )
    return out


def _description(comment: list[str]) -> str | None:
    """The `# --` description in a comment block, joined into one line; None if it has none."""
    for i, line in enumerate(comment):
        first = _DESCRIPTION.match(line)
        if first is None:
            continue
        parts = [first.group("text").strip()]
        for rest in comment[i + 1 :]:
            more = _COMMENT.match(rest)
            parts.append(((more.group("text") if more else "") or "").strip())
        return " ".join(p for p in parts if p)
    return None


def _cell(text: str, *, code: bool = False) -> str:
    """Text for a table cell: `|` escaped, and outside code spans `<`/`>` too (a Markdown
    renderer would take `<fullname>` for an HTML tag and drop it)."""
    text = text.replace("|", "\\|")
    if code:
        return text
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def table(values_text: str) -> str:
    lines = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for row in rows(values_text):
        lines.append(
            f"| {row.key} | {row.type} | `{_cell(row.default, code=True)}` "
            f"| {_cell(row.description)} |"
        )
    return "\n".join(lines) + "\n"


def crd_names(chart: Path = CHART) -> list[str]:
    names: list[str] = []
    for path in sorted((chart / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                names.append(str(doc["metadata"]["name"]))
    return names


def render(chart: Path = CHART) -> str:
    """The whole README: static header, then the values table."""
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    values_text = (chart / "values.yaml").read_text()
    crds = "\n".join(f"- `{name}`" for name in crd_names(chart))
    header = f"""# {meta["name"]}

{" ".join(str(meta["description"]).split())}

Chart version `{meta["version"]}`, app version `{meta["appVersion"]}`, Kubernetes `{meta["kubeVersion"]}`.

<!-- GENERATED by tools/harness/gen_chart_readme.py from values.yaml and Chart.yaml. Do not edit:
change the `# --` comments in values.yaml, then run `{COMMAND}`. -->

## Install

    helm install kubetrain charts/kubetrain -n kubetrain --create-namespace
    helm test kubetrain -n kubetrain

Every value below is typed in `values.schema.json`: a wrong one fails `helm install` with a
message naming it. Example values for each scenario (bundled or external MinIO/MLflow,
namespaced scope, Ingress, monitoring) are in `ci/*-values.yaml`; docs/packaging.md explains
each choice. Without Helm, `kubectl apply -f manifests/` installs the same objects, rendered
from this chart.

## CRDs and upgrades

Helm installs the CRDs in `crds/` on the first install only:

{crds}

It never upgrades or deletes them: `helm upgrade` leaves an older CRD in place, and
`helm uninstall` keeps it (deleting a CRD would delete every DatasetWatch in the cluster).
After upgrading to a chart version whose CRDs changed, apply them yourself, from that
version's chart:

    {CRD_UPGRADE}

If kubectl reports conflicts with the field manager that created them (e.g. `helm`), add
`--force-conflicts`: the files in `crds/` are the intended state. The CRDs are cluster-scoped and may be shared with other releases (or,
for the peering CRDs, other kopf operators), so upgrade them once per cluster.

## Values

"""
    return header + table(values_text)


def diff(expected: str, actual: str, name: str = "charts/kubetrain/README.md") -> str:
    return "".join(
        difflib.unified_diff(
            actual.splitlines(keepends=True),
            expected.splitlines(keepends=True),
            f"{name} (on disk)",
            f"{name} (from values.yaml)",
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gen_chart_readme",
        description="Render charts/kubetrain/README.md from values.yaml (helm-docs style).",
    )
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on drift")
    parser.add_argument(
        "--out", type=Path, default=OUT, help="README to write (default charts/kubetrain/README.md)"
    )
    args = parser.parse_args(argv)

    try:
        expected = render()
    except ReadmeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out: Path = args.out
    actual = out.read_text() if out.is_file() else ""
    if args.check:
        delta = diff(expected, actual)
        if delta:
            print(delta, end="")
            print(
                f"\n{out} is out of date with charts/kubetrain/values.yaml: run `{COMMAND}`",
                file=sys.stderr,
            )
            return 1
        print(f"{out.name} matches values.yaml")
        return 0
    shown = out.resolve().relative_to(REPO) if out.resolve().is_relative_to(REPO) else out
    if actual == expected:
        print(f"same     {shown}")
    else:
        out.write_text(expected)
        print(f"wrote    {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
