"""charts/kubetrain/README.md is generated from values.yaml: it must not drift, and the
generator must document every value or refuse (tools/harness/gen_chart_readme.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gen_chart_readme
import pytest
import yaml

from tests.support.chart import CHART, REPO

README = CHART / "README.md"
VALUES_TEXT = (CHART / "values.yaml").read_text()


def all_leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every leaf of values.yaml with its full dotted path (no stopping at objects)."""
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from all_leaves(value, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix, node


def test_readme_matches_values_yaml() -> None:
    expected = gen_chart_readme.render()
    actual = README.read_text()
    delta = gen_chart_readme.diff(expected, actual)
    assert not delta, (
        "charts/kubetrain/README.md is out of date with values.yaml; run "
        f"`.venv/bin/python tools/harness/gen_chart_readme.py`:\n{delta[:4000]}"
    )


def test_check_mode_detects_drift(tmp_path: Path) -> None:
    out = tmp_path / "README.md"
    assert gen_chart_readme.main(["--check", "--out", str(out)]) == 1  # missing
    assert gen_chart_readme.main(["--out", str(out)]) == 0
    assert gen_chart_readme.main(["--check", "--out", str(out)]) == 0
    out.write_text(out.read_text().replace("| watch.scope |", "| watch.scopes |"))
    assert gen_chart_readme.main(["--check", "--out", str(out)]) == 1
    assert gen_chart_readme.main(["--out", str(out)]) == 0
    assert out.read_text() == gen_chart_readme.render()


def test_every_value_is_in_exactly_one_row_with_its_type_and_default() -> None:
    values = yaml.safe_load(VALUES_TEXT)
    rows = gen_chart_readme.rows(VALUES_TEXT)
    keys = [row.key for row in rows]
    assert len(keys) == len(set(keys)) > 80
    for path, _ in all_leaves(values):
        covering = [k for k in keys if path == k or path.startswith(k + ".")]
        assert len(covering) == 1, (path, covering)
    for row in rows:
        value: Any = values
        for part in row.key.split("."):
            value = value[part]
        assert json.loads(row.default) == value, row.key
        assert row.type == gen_chart_readme.yaml_type(value), row.key
        assert row.description, row.key
    # Kubernetes objects are documented as a whole, with their default.
    by_key = {row.key: row for row in rows}
    assert "operator.resources.requests.cpu" not in by_key
    assert json.loads(by_key["operator.resources"].default) == values["operator"]["resources"]
    assert by_key["operator.replicas"].type == "int"
    assert by_key["watch.namespaces"].type == "list"
    assert by_key["helmTest.enabled"].type == "bool"
    assert by_key["datasetWatches"].description.startswith("DatasetWatches to create")


def test_descriptions_follow_the_helm_docs_comment_convention() -> None:
    text = (
        "# A section heading, not a description.\n"
        "section:\n"
        "  # Leading words are ignored.\n"
        "  # -- First line\n"
        "  # continues | here <x> `<y>`.\n"
        "  value: 2\n"
        "  # -- A Kubernetes object, documented whole.\n"
        "  object:\n"
        "    # not a row\n"
        "    inner: {a: 1}\n"
        "  # -- A list.\n"
        "  items:\n"
        "    - one\n"
    )
    rows = gen_chart_readme.rows(text)
    assert rows == [
        gen_chart_readme.Row("section.value", "int", "2", "First line continues | here <x> `<y>`."),
        gen_chart_readme.Row(
            "section.object",
            "object",
            '{"inner":{"a":1}}',
            "A Kubernetes object, documented whole.",
        ),
        gen_chart_readme.Row("section.items", "list", '["one"]', "A list."),
    ]
    line = gen_chart_readme.table(text).splitlines()[2]
    assert line == "| section.value | int | `2` | First line continues \\| here &lt;x&gt; `<y>`. |"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("plain: 1\n", "line 1: plain"),
        ("# Not a description.\nplain: 1\n", "line 2: plain"),
        ("# -- Detached by a blank line.\n\nplain: 1\n", "line 3: plain"),
        ("parent:\n  # -- Fine.\n  a: 1\n  b: []\n", "line 4: parent.b"),
        ("empty: {}\n", "line 1: empty"),
    ],
)
def test_an_undocumented_value_is_an_error_naming_it(text: str, names: str) -> None:
    with pytest.raises(gen_chart_readme.ReadmeError, match=names):
        gen_chart_readme.rows(text)


def test_readme_and_docs_give_the_crd_upgrade_command() -> None:
    command = "kubectl apply --server-side -f charts/kubetrain/crds/"
    readme = README.read_text()
    assert f"\n    {command}\n" in readme
    for path in sorted((CHART / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                assert f"`{doc['metadata']['name']}`" in readme, path
    packaging = (REPO / "docs" / "packaging.md").read_text()
    assert f"\n    {command}\n" in packaging
    assert "charts/kubetrain/README.md" in packaging
