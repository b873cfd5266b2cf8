"""What the chart tests share: paths, the scenarios, the values schema and the shipped CRDs.

Nothing here runs a binary. `schema_errors` is a small validator for the subset of JSON
Schema (values.schema.json: `$ref`, `oneOf`, `propertyNames`, ...) and of the apiserver's
structural OpenAPI schemas (the CRDs: `nullable`, `x-kubernetes-int-or-string`, pruning of
unknown fields) that these files use; `with_defaults` applies a CRD schema's defaults the way
the apiserver does on create. CEL rules (`x-kubernetes-validations`) are not evaluated: the
platform tests put them in front of a real apiserver.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubetrain"
CI = CHART / "ci"
CRDS = CHART / "crds"
WATCH_CRD = CRDS / "datasetwatch.yaml"
SCENARIOS = sorted(p.stem.removesuffix("-values") for p in CI.glob("*-values.yaml"))

Obj = dict[str, Any]

# ------------------------------------------------------------------------------ values


def load_schema() -> Obj:
    schema: Obj = json.loads((CHART / "values.schema.json").read_text())
    return schema


def load_values(*files: Path) -> Obj:
    """values.yaml coalesced with `files` in order, as Helm merges them (null deletes a key)."""
    merged: Obj = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in files:
        merged = coalesce(merged, yaml.safe_load(path.read_text()) or {})
    return merged


def coalesce(base: Obj, override: Mapping[str, Any]) -> Obj:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = coalesce(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_value(values: Obj, assignment: str) -> Obj:
    """`values` with one `helm --set key=value` applied (the forms the tests use: scalars,
    `{a,b}` lists, `null`)."""
    key, _, raw = assignment.partition("=")
    value: Any
    if raw.startswith("{") and raw.endswith("}"):
        value = [item for item in raw[1:-1].split(",") if item]
    elif raw in ("true", "false"):
        value = raw == "true"
    elif raw == "null":
        value = None
    elif re.fullmatch(r"-?[0-9]+", raw):
        value = int(raw)
    else:
        value = raw
    override: Obj = {}
    node = override
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return coalesce(values, override)


#: (`helm --set` assignment, what the error must mention): values the schema rejects. The
#: later ones hit the shared `$defs` (image, resources, quantities, security contexts) from
#: every place that uses them.
BAD_VALUES: list[tuple[str, str]] = [
    ("watch.scope=everywhere", "scope"),
    ("operator.settings.FOO=1", "FOO"),
    ("notAValue=1", "notAValue"),
    ("operator.healthPort=70000", "healthPort"),
    ("rbac.secretAccess.mode=some", "mode"),
    ("operator.image.digest=latest", "digest"),
    ("minio.auth.rootPassword=short", "rootPassword"),
    ("watch.namespaces={Bad_NS}", "namespaces"),
    ("operator.image.repository=", "repository"),
    ("operator.image.pullPolicy=Sometimes", "pullPolicy"),
    ("trainer.image.digest=sha256:abc", "digest"),
    ("trainer.image.pullPolicy=Always", "pullPolicy"),
    ("minio.image.tag=", "tag"),
    ("minio.image.digest=sha256:" + "a" * 64, "digest"),
    ("mlflow.image.pullPolicy=Sometimes", "pullPolicy"),
    ("mlflow.image.repository=", "repository"),
    ("operator.resources.limits.memory=lots", "memory"),
    ("operator.resources.claims=x", "claims"),
    ("minio.resources.requests.cpu=-1", "cpu"),
    ("mlflow.resources.extra=1", "extra"),
    ("operator.tmpSizeLimit=big", "tmpSizeLimit"),
    ("minio.persistence.size=10 Gi", "size"),
    ("mlflow.persistence.size=x", "size"),
    ("operator.podSecurityContext=locked", "podSecurityContext"),
    ("minio.securityContext=locked", "securityContext"),
    ("mlflow.podSecurityContext=1", "podSecurityContext"),
]


def resolve(node: Any, root: Mapping[str, Any]) -> Any:
    """Follow local `$ref`s ("#/a/b") to the schema they name."""
    seen = 0
    while isinstance(node, Mapping) and "$ref" in node:
        ref = str(node["$ref"])
        if not ref.startswith("#/"):
            raise ValueError(f"only local references are supported: {ref}")
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        # A $ref's siblings (descriptions) annotate; the target validates.
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        seen += 1
        if seen > 20:
            raise ValueError(f"reference loop at {ref}")
    return node


def refs(node: Any) -> Iterator[str]:
    """Every `$ref` in a schema."""
    if isinstance(node, Mapping):
        if "$ref" in node:
            yield str(node["$ref"])
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def schema_node(schema: Obj, path: str) -> Obj | None:
    """The (resolved) schema of a dotted values path, or None when the schema has none."""
    node = resolve(schema, schema)
    for part in path.split("."):
        props = node.get("properties", {})
        if part in props:
            node = resolve(props[part], schema)
        elif isinstance(node.get("additionalProperties"), dict):
            node = resolve(node["additionalProperties"], schema)
        else:
            return None
    return dict(node)


def is_passthrough(schema: Obj, path: str) -> bool:
    """A Kubernetes API object handed through verbatim (securityContext, affinity, ...):
    the schema types it as an open object; its inner keys are the Kubernetes API's."""
    node = schema_node(schema, path)
    return (
        node is not None
        and node.get("type") == "object"
        and "properties" not in node
        and "additionalProperties" not in node
    )


def leaf_paths(schema: Obj, node: Any, prefix: str = "") -> Iterator[str]:
    """Dotted paths of the values below `node`, stopping at passthrough objects."""
    if isinstance(node, dict) and node and not (prefix and is_passthrough(schema, prefix)):
        for key, value in node.items():
            yield from leaf_paths(schema, value, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix


# ------------------------------------------------------------------------------ CRDs


def load_crd(path: Path = WATCH_CRD) -> Obj:
    crd: Obj = yaml.safe_load(path.read_text())
    return crd


def openapi_schema(crd: Obj, version: str = "v1alpha1") -> Obj:
    (found,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema: Obj = found["schema"]["openAPIV3Schema"]
    return schema


def watch_schema() -> Obj:
    """openAPIV3Schema of the shipped DatasetWatch CRD."""
    return openapi_schema(load_crd())


def serving_schemas() -> tuple[Obj, Obj]:
    """(spec.serving, status.serving) schemas of the shipped DatasetWatch CRD."""
    props = watch_schema()["properties"]
    return (
        props["spec"]["properties"]["serving"],
        props["status"]["properties"]["serving"],
    )


def with_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    """`value` with the schema's defaults filled in, top down (a defaulted `{}` gets the
    defaults of its own properties), as the apiserver does when it decodes an object."""
    if isinstance(value, dict):
        out = dict(value)
        props = schema.get("properties", {})
        for key, sub in props.items():
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
        extra = schema.get("additionalProperties")
        for key in out:
            if key in props:
                out[key] = with_defaults(props[key], out[key])
            elif isinstance(extra, Mapping):
                out[key] = with_defaults(extra, out[key])
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [with_defaults(schema["items"], item) for item in value]
    return value


SERVING_SOURCE = {
    "endpoint": "http://minio.example:9000",
    "bucket": "mnist",
    "credentialsSecretRef": {"name": "minio-credentials"},
}
"""A valid `spec.source`: the CRD requires one in every DatasetWatch."""


def serving_statuses() -> list[Obj]:
    """`status.serving` as serving_rollout.status.serving_status writes it, in every phase and
    in each branch of its conditions, first and with the previous status (kept transition
    times)."""
    from kubetrain_operator.serving_rollout import state as rollout_state
    from kubetrain_operator.serving_rollout.observe import RolloutObservation
    from kubetrain_operator.serving_rollout.spec import parse_target
    from kubetrain_operator.serving_rollout.status import serving_status
    from kubetrain_operator.settings import RolloutSettings

    settings = RolloutSettings()
    body: Obj = {
        "metadata": {"name": "s", "namespace": "ns", "uid": "u"},
        "spec": {"source": dict(SERVING_SOURCE)},
    }
    plain = parse_target(body, settings)
    body["spec"]["serving"] = {"ingress": {"host": "a.example.com", "tlsSecretName": "t"}}
    with_ingress = parse_target(body, settings)
    v1 = rollout_state.Release("s3://b/.kubetrain/bentos/m-1.bento", "1", "m")
    v2 = rollout_state.Release("s3://b/.kubetrain/bentos/m-2.bento", "2", "m")
    t0, t1 = "2026-11-26T06:00:00Z", "2026-11-26T06:00:05Z"
    rolling = rollout_state.RolloutState(
        current=v2, phase=rollout_state.Phase.PROGRESSING, started=t0, previous=v1
    )
    states: list[tuple[Any, Any, Any]] = [
        (
            plain,
            rolling,
            RolloutObservation(replicas=2, total=3, updated=1, new_available=0, old_available=2),
        ),
        (
            plain,
            rolling,
            RolloutObservation(replicas=1, deadline_exceeded=True, deadline_message="no progress"),
        ),
        (
            with_ingress,
            rollout_state.rolled_back(rolling, "v2 missed its deadline", t1),
            RolloutObservation(replicas=1, total=1, available=0),
        ),
        (
            with_ingress,
            rollout_state.available(rolling),
            RolloutObservation(
                replicas=1, total=1, updated=1, ready=1, available=1, observed=True, complete=True
            ),
        ),
        (
            plain,
            rollout_state.failed(
                rollout_state.RolloutState(
                    current=v1, phase=rollout_state.Phase.PROGRESSING, started=""
                ),
                "nothing to roll back to",
            ),
            RolloutObservation(replicas=1),
        ),
    ]
    out: list[Obj] = []
    for target, state, obs in states:
        first = serving_status(target, state, obs, settings, now=t0)
        out.append(first)
        out.append(serving_status(target, state, obs, settings, now=t1, old_status=first))
    return out


#: (spec.serving, the field the apiserver's message must name): each is rejected by the
#: shipped CRD (statically in tests/unit, by the apiserver in tests/platform).
BAD_SERVING: list[tuple[Obj, str]] = [
    ({"replicas": 0}, "spec.serving.replicas"),
    ({"replicas": 101}, "spec.serving.replicas"),
    ({"port": 80}, "spec.serving.port"),
    ({"historyLimit": 0}, "spec.serving.historyLimit"),
    ({"progressDeadlineSeconds": 1}, "spec.serving.progressDeadlineSeconds"),
    ({"ingress": {"path": "/x"}}, "spec.serving.ingress.host"),
    ({"ingress": {"host": "Bad_Host"}}, "spec.serving.ingress.host"),
    ({"ingress": {"host": "*.example.com"}}, "spec.serving.ingress.host"),
    ({"ingress": {"host": "a.example.com", "path": "x"}}, "spec.serving.ingress.path"),
    ({"ingress": {"host": "a.example.com", "path": "/a b"}}, "spec.serving.ingress.path"),
    ({"resources": {"limits": {"memory": "lots"}}}, "spec.serving.resources.limits"),
    ({"resources": {"requests": {"cpu": "1 core"}}}, "spec.serving.resources.requests"),
    ({"imagePullPolicy": "Sometimes"}, "spec.serving.imagePullPolicy"),
]

# ------------------------------------------------------------------------------ validation

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "null": (type(None),),
}
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _is(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES[kind])


def _search(pattern: str, text: str) -> bool:
    # JSON Schema patterns are unanchored ECMA/RE2 expressions; `$` there is the end of the
    # text, while Python's also matches before a final newline.
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.search(pattern, text) is not None


def schema_errors(
    schema: Mapping[str, Any],
    value: Any,
    path: str = "",
    *,
    root: Mapping[str, Any] | None = None,
    structural: bool = False,
) -> list[str]:
    """Why `value` does not satisfy `schema`: one "<dotted path>: <reason>" per problem.

    `structural`: read the schema as a CRD's, where a field no schema declares is not an
    error but is pruned (dropped) by the apiserver; such fields are reported as "pruned".
    """
    root = schema if root is None else root
    node = resolve(schema, root)
    where = path or "<root>"

    def sub(child: Mapping[str, Any], item: Any, child_path: str) -> list[str]:
        return schema_errors(child, item, child_path, root=root, structural=structural)

    def join(key: str) -> str:
        return f"{path}.{key}" if path else key

    if value is None and node.get("nullable"):
        return []
    if node.get("x-kubernetes-int-or-string"):
        if not (_is(value, "integer") or _is(value, "string")):
            return [f"{where}: must be an integer or a string, got {value!r}"]
    elif "type" in node:
        kinds = node["type"] if isinstance(node["type"], list) else [node["type"]]
        if not any(_is(value, k) for k in kinds):
            return [f"{where}: must be of type {'/'.join(kinds)}, got {value!r}"]
    errors: list[str] = []
    if "enum" in node and value not in node["enum"]:
        errors.append(f"{where}: {value!r} is not one of {node['enum']}")
    if isinstance(value, str):
        if len(value) < node.get("minLength", 0):
            errors.append(f"{where}: shorter than {node['minLength']}")
        if "maxLength" in node and len(value) > node["maxLength"]:
            errors.append(f"{where}: longer than {node['maxLength']}")
        if "pattern" in node and not _search(node["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {node['pattern']!r}")
        if node.get("format") == "date-time" and not _DATE_TIME.match(value):
            errors.append(f"{where}: {value!r} is not an RFC 3339 date-time")
    if _is(value, "number"):
        if "minimum" in node and value < node["minimum"]:
            errors.append(f"{where}: {value} is less than {node['minimum']}")
        if "maximum" in node and value > node["maximum"]:
            errors.append(f"{where}: {value} is greater than {node['maximum']}")
    if isinstance(value, dict):
        props = node.get("properties", {})
        extra = node.get("additionalProperties")
        errors += [f"{join(k)}: required" for k in node.get("required", []) if k not in value]
        for key, item in value.items():
            if "propertyNames" in node:
                errors += [
                    f"{where}: property name {key!r}: {e.split(': ', 1)[-1]}"
                    for e in sub(node["propertyNames"], key, join(key))
                ]
            if key in props:
                errors += sub(props[key], item, join(key))
            elif isinstance(extra, Mapping):
                errors += sub(extra, item, join(key))
            elif extra is False:
                errors.append(f"{where}: additional property {key!r} is not allowed")
            elif structural and not node.get("x-kubernetes-preserve-unknown-fields"):
                errors.append(f"{join(key)}: pruned (no schema declares it)")
    if isinstance(value, list):
        if "items" in node:
            for i, item in enumerate(value):
                errors += sub(node["items"], item, f"{path}[{i}]")
        if node.get("uniqueItems") and len({json.dumps(v, sort_keys=True) for v in value}) < len(
            value
        ):
            errors.append(f"{where}: items are not unique")
    for keyword in ("anyOf", "oneOf"):
        if keyword in node and not node.get("x-kubernetes-int-or-string"):
            matched = sum(not sub(option, value, path) for option in node[keyword])
            if matched == 0 or (keyword == "oneOf" and matched > 1):
                errors.append(f"{where}: {keyword} failed ({matched} of the options matched)")
    return errors


def structure_problems(node: Any, path: str = "") -> list[str]:
    """Where a CRD schema is not structural: a node without a type (int-or-string and
    preserve-unknown-fields nodes excepted), or properties on a non-object."""
    problems: list[str] = []
    if not isinstance(node, Mapping):
        return problems
    if (
        "type" not in node
        and not node.get("x-kubernetes-int-or-string")
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        problems.append(f"{path or '<root>'}: no type")
    if "properties" in node and node.get("type") != "object":
        problems.append(f"{path}: properties on a {node.get('type')}")
    for key, child in node.get("properties", {}).items():
        problems += structure_problems(child, f"{path}.{key}" if path else key)
    for keyword in ("additionalProperties", "items"):
        if isinstance(node.get(keyword), Mapping):
            problems += structure_problems(node[keyword], f"{path}[{keyword}]")
    return problems
