"""Static tests of charts/kubetrain that need no binary: values, schema, CRDs, .helmignore.

Pure YAML/JSON: values.yaml against values.schema.json (every ci/ scenario validates, bad
values are rejected, every value is typed and commented), the shipped DatasetWatch CRD's
serving schema against the operator's parser and status writer, and the packaging rules.
Rendering with the real helm binary (lint, every scenario's objects, RBAC, NOTES, the
packaged archive, manifests/ drift) is tests/platform/test_packaging_chart_render.py; what
the apiserver says is tests/platform/test_packaging_install.py and
tests/platform/test_rollout_crd_schema.py.
"""

from __future__ import annotations

import fnmatch
import re

import pytest
import yaml
from kubetrain_operator.serving_rollout.state import Phase
from kubetrain_operator.spec import IngressSpec, ServingSpec, ServingSpecError, parse_serving

from tests.support.chart import (
    BAD_SERVING,
    BAD_VALUES,
    CHART,
    CI,
    SCENARIOS,
    SERVING_SOURCE,
    Obj,
    is_passthrough,
    leaf_paths,
    load_schema,
    load_values,
    refs,
    resolve,
    schema_errors,
    schema_node,
    serving_schemas,
    serving_statuses,
    set_value,
    structure_problems,
    watch_schema,
    with_defaults,
)


def test_scenarios_cover_the_documented_set() -> None:
    assert {"default", "namespaced", "external-endpoints", "all-off", "with-ingress"} <= set(
        SCENARIOS
    )


# ------------------------------------------------------------------------------ values & schema


SCHEMA = load_schema()


def test_every_value_is_in_the_schema_and_objects_are_closed() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    paths = list(leaf_paths(SCHEMA, values))
    assert len(paths) > 80
    missing = [p for p in paths if schema_node(SCHEMA, p) is None]
    assert not missing, f"values without schema: {missing}"
    assert SCHEMA["additionalProperties"] is False
    for key in ("watch", "operator", "rbac", "minio", "mlflow", "networkPolicy"):
        assert SCHEMA["properties"][key]["additionalProperties"] is False, key
    # Passthrough objects are only ever Kubernetes API types, never chart settings.
    opaque = {p.rsplit(".", 1)[-1] for p in paths if is_passthrough(SCHEMA, p)}
    assert opaque <= {
        "podSecurityContext",
        "securityContext",
        "affinity",
        "clientNamespaceSelector",
        "metricsNamespaceSelector",
    }, opaque


def test_every_value_in_values_yaml_is_commented() -> None:
    """Each key has a comment on the line right above it, except parents whose children are
    commented and the inner keys of passthrough Kubernetes objects (commented as a whole)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    key_re = re.compile(r"^(\s*)([A-Za-z0-9_.]+):(.*)$")
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    uncommented = []
    checked = 0
    for i, line in enumerate(lines):
        m = key_re.match(line)
        if not m or line.lstrip().startswith("#"):
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parents = [k for _, k in stack]
        path = ".".join([*parents, key])
        stack.append((indent, key))
        if "resources" in parents or any(
            is_passthrough(SCHEMA, ".".join(parents[: n + 1])) for n in range(len(parents))
        ):
            continue  # inside a Kubernetes object (ResourceRequirements, ...) commented as a whole
        nxt = next(
            (ln for ln in lines[i + 1 :] if ln.strip() and not ln.lstrip().startswith("#")), ""
        )
        nxt_indent = len(nxt) - len(nxt.lstrip())
        if rest.strip() == "" and nxt_indent > indent and not nxt.lstrip().startswith("-"):
            continue  # a parent mapping: its children carry the comments
        checked += 1
        if not (lines[i - 1].strip().startswith("#") if i else False):
            uncommented.append(f"line {i + 1}: {path}")
    assert checked > 80
    assert not uncommented, uncommented


def test_shared_blocks_are_defined_once_and_every_reference_resolves() -> None:
    """Images, resources, quantities and security contexts are `$defs`, referenced from every
    component that has one; no reference dangles and no definition is unused."""
    defs = SCHEMA["$defs"]
    used = set(refs(SCHEMA))
    assert used == {f"#/$defs/{name}" for name in defs}, used ^ {f"#/$defs/{n}" for n in defs}
    for ref in used:
        assert "type" in resolve({"$ref": ref}, SCHEMA) or "oneOf" in resolve({"$ref": ref}, SCHEMA)
    for component in ("operator", "minio", "mlflow"):
        props = SCHEMA["properties"][component]["properties"]
        for key in ("resources", "podSecurityContext", "securityContext"):
            assert props[key] == {"$ref": f"#/$defs/{key}"}, (component, key)
    for component in ("minio", "mlflow"):
        assert SCHEMA["properties"][component]["properties"]["image"]["$ref"] == (
            "#/$defs/upstreamImage"
        )
    for component in ("operator", "trainer"):
        image = SCHEMA["properties"][component]["properties"]["image"]["properties"]
        assert image["repository"] == {"$ref": "#/$defs/imageRepository"}, component
        assert image["digest"] == {"$ref": "#/$defs/imageDigest"}, component


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_scenario_satisfies_the_schema(scenario: str) -> None:
    """values.yaml merged with each ci/ file, as helm merges them, has no schema error."""
    values = load_values(CI / f"{scenario}-values.yaml")
    assert schema_errors(SCHEMA, values) == []


@pytest.mark.parametrize(("assignment", "mentions"), BAD_VALUES)
def test_schema_rejects_bad_values_naming_them(assignment: str, mentions: str) -> None:
    """The same values the helm rendering test feeds `--set`, checked without helm."""
    values = set_value(load_values(), assignment)
    errors = schema_errors(SCHEMA, values)
    assert errors, f"{assignment} was accepted"
    assert mentions in "\n".join(errors), errors


def helmignore_patterns() -> list[str]:
    lines = (CHART / ".helmignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def helm_ignores(relative: str, patterns: list[str]) -> bool:
    """.helmignore semantics for the patterns used: `dir/` matches a directory anywhere, a
    pattern without "/" matches a file's base name, one with "/" the relative path."""
    parts = relative.split("/")
    for pattern in patterns:
        if pattern.endswith("/"):
            if any(fnmatch.fnmatchcase(part, pattern[:-1]) for part in parts[:-1]):
                return True
        elif "/" in pattern:
            if fnmatch.fnmatchcase(relative, pattern.lstrip("/")):
                return True
        elif fnmatch.fnmatchcase(parts[-1], pattern):
            return True
    return False


def test_helmignore_drops_vcs_editor_and_backup_files_only() -> None:
    patterns = helmignore_patterns()
    assert not [p for p in patterns if p.startswith("!")], "nothing needs re-including"
    # The chart's own files (not whatever litter a working tree may hold).
    shipped = sorted(
        str(p.relative_to(CHART))
        for p in CHART.rglob("*")
        if p.is_file() and p.suffix in {".yaml", ".json", ".md", ".tpl", ".txt"}
    )
    assert len(shipped) > 20
    assert {"README.md", "values.schema.json", "ci/default-values.yaml"} <= set(shipped)
    assert [f for f in shipped if helm_ignores(f, patterns)] == []
    for litter in (
        ".git/HEAD",
        ".gitignore",
        ".svn/entries",
        ".idea/workspace.xml",
        ".vscode/settings.json",
        "values.yaml.swp",
        "templates/rbac.yaml~",
        "values.yaml.bak",
        "values.yaml.orig",
        ".DS_Store",
    ):
        assert helm_ignores(litter, patterns), litter


# ------------------------------------------------------------------------------ the shipped CRD


SPEC_SCHEMA = watch_schema()["properties"]["spec"]
SERVING, SERVING_STATUS = serving_schemas()
SERVING_DEFAULTS = {
    "enabled": True,
    "imagePullPolicy": "IfNotPresent",
    "replicas": 1,
    "port": 3000,
    "historyLimit": 5,
    "progressDeadlineSeconds": 600,
}


def spec_with(serving: Obj | None = None) -> Obj:
    """A DatasetWatch spec as the apiserver stores it: defaults applied."""
    spec: Obj = {"source": dict(SERVING_SOURCE)}
    if serving is not None:
        spec["serving"] = serving
    defaulted: Obj = with_defaults(SPEC_SCHEMA, spec)
    return defaulted


def test_crd_schema_is_structural() -> None:
    assert structure_problems(watch_schema()) == []


def test_serving_defaults_are_the_parsers() -> None:
    """`spec.serving` defaults to {} so its own defaults apply to a watch without one; they
    are exactly what spec.parse_serving assumes for a missing field."""
    assert SERVING["default"] == {}
    spec = spec_with()
    assert spec["serving"] == SERVING_DEFAULTS
    assert schema_errors(SPEC_SCHEMA, spec, "spec", structural=True) == []
    assert parse_serving(spec) == parse_serving({}) == ServingSpec()
    spec = spec_with({"ingress": {"host": "a.example.com"}})
    assert spec["serving"]["ingress"] == {"host": "a.example.com", "path": "/"}
    assert parse_serving(spec).ingress == IngressSpec(host="a.example.com")


@pytest.mark.parametrize(("serving", "field"), BAD_SERVING)
def test_bad_serving_is_rejected_naming_the_field(serving: Obj, field: str) -> None:
    errors = schema_errors(SPEC_SCHEMA, spec_with(serving), "spec", structural=True)
    assert [e for e in errors if e.startswith(field)], errors
    if ".resources." not in field:  # the parser leaves quantities to the apiserver
        with pytest.raises(ServingSpecError, match=re.escape(field)):
            parse_serving({"serving": serving})


@pytest.mark.parametrize("key", ["replicas", "port", "historyLimit", "progressDeadlineSeconds"])
def test_serving_ranges_are_the_parsers(key: str) -> None:
    node = SERVING["properties"][key]
    low, high = node["minimum"], node["maximum"]
    for value in (low, high):
        assert schema_errors(SPEC_SCHEMA, spec_with({key: value}), "spec") == [], value
        parse_serving({"serving": {key: value}})
    for value in (low - 1, high + 1):
        assert schema_errors(SPEC_SCHEMA, spec_with({key: value}), "spec"), value
        with pytest.raises(ServingSpecError, match=re.escape(f"spec.serving.{key}")):
            parse_serving({"serving": {key: value}})


GOOD_HOSTS = ["a.example.com", "digits", "x-1.y-2.example", "a" * 63 + ".example.com"]
BAD_HOSTS = [
    "Bad_Host",
    "UPPER.example.com",
    "-a.example.com",
    "a-.example.com",
    "a..b",
    "a.example.com.",
    "*.example.com",
    "a b",
    "a" * 254,
]
GOOD_PATHS = ["/", "/x", "/a/b-c_d.e", "/v1/"]
BAD_PATHS = ["x", "/a b", "/a?b", "/a#b", "/a\tb"]


def ingress_errors(ingress: Obj) -> list[str]:
    return schema_errors(SPEC_SCHEMA, spec_with({"ingress": ingress}), "spec")


def test_ingress_host_and_path_rules_are_the_parsers() -> None:
    for host in GOOD_HOSTS:
        assert ingress_errors({"host": host}) == [], host
        assert parse_serving({"serving": {"ingress": {"host": host}}}).ingress
    for host in BAD_HOSTS:
        assert [e for e in ingress_errors({"host": host}) if "ingress.host" in e], host
        with pytest.raises(ServingSpecError, match=re.escape("spec.serving.ingress.host")):
            parse_serving({"serving": {"ingress": {"host": host}}})
    for path in GOOD_PATHS:
        assert ingress_errors({"host": "a.example.com", "path": path}) == [], path
        parse_serving({"serving": {"ingress": {"host": "a.example.com", "path": path}}})
    for path in BAD_PATHS:
        errors = ingress_errors({"host": "a.example.com", "path": path})
        assert [e for e in errors if "ingress.path" in e], path
        with pytest.raises(ServingSpecError, match=re.escape("spec.serving.ingress.path")):
            parse_serving({"serving": {"ingress": {"host": "a.example.com", "path": path}}})
    # The apiserver's `$` (RE2) is the end of the text: a trailing newline is rejected there.
    assert ingress_errors({"host": "a.example.com\n"})
    assert ingress_errors({"host": "a.example.com", "path": "/a\n"})


@pytest.mark.parametrize("kind", ["requests", "limits"])
def test_serving_resources_take_quantities_only(kind: str) -> None:
    for quantity in ("250m", "512Mi", "2Gi", "1", "0.5", ".5", "+1", "1e3", "1k", 1, 0):
        spec = spec_with({"resources": {kind: {"memory": quantity}}})
        assert schema_errors(SPEC_SCHEMA, spec, "spec") == [], quantity
    for bad in ("lots", "1 Gi", "Mi", "", "1.2.3", "1GB", "1i", True, 1.5, [1]):
        spec = spec_with({"resources": {kind: {"memory": bad}}})
        assert schema_errors(SPEC_SCHEMA, spec, "spec"), bad


def test_status_serving_keeps_every_field_the_operator_writes() -> None:
    """No field of what serving_rollout.status.serving_status returns is pruned or invalid;
    the schema declares nothing the operator never writes (so the two cannot drift apart)."""
    statuses = serving_statuses()
    written: set[str] = set()
    condition_keys: set[str] = set()
    for status in statuses:
        assert schema_errors(SERVING_STATUS, status, "status.serving", structural=True) == []
        written |= set(status)
        condition_keys |= {k for c in status["conditions"] for k in c}
    assert written == set(SERVING_STATUS["properties"])
    assert condition_keys == set(SERVING_STATUS["properties"]["conditions"]["items"]["properties"])
    phases = {s["phase"] for s in statuses}
    assert phases == set(SERVING_STATUS["properties"]["phase"]["enum"]) == set(Phase)
    assert "x-kubernetes-preserve-unknown-fields" not in SERVING_STATUS
    stray = statuses[0] | {"bogus": 1}
    assert schema_errors(SERVING_STATUS, stray, "status.serving", structural=True) == [
        "status.serving.bogus: pruned (no schema declares it)"
    ]
