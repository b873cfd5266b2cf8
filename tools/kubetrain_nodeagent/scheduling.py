"""Which unscheduled pods this node binds, and whether they fit. Pure functions.

The agent is the only scheduler of the local platform, so it behaves like a one-node
kube-scheduler: it takes pods whose `spec.schedulerName` is its own (default
`default-scheduler`), that have no `spec.nodeName`, no scheduling gates, no deletion in
progress, and no other node nominated; it honours `nodeSelector`, required node
affinity (matchExpressions/matchFields), node taints vs. tolerations, cordoning
(`spec.unschedulable`), the pod count, and cpu/memory requests against allocatable.
Several agents (one per test) may share an apiserver: the binding subresource is atomic,
so a pod bound by another agent is simply skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .podspec import DEFAULT_SCHEDULER, quantity

Obj = dict[str, Any]


@dataclass(frozen=True)
class NodeView:
    """What the binding decision needs to know about this node."""

    name: str
    labels: Mapping[str, str]
    scheduler_name: str = DEFAULT_SCHEDULER
    namespaces: frozenset[str] = frozenset()
    """Only bind pods in these namespaces; empty means all."""
    unschedulable: bool = False
    taints: tuple[Mapping[str, str], ...] = ()


def _match_expression(expr: Mapping[str, Any], values: Mapping[str, str]) -> bool:
    key = expr.get("key", "")
    op = expr.get("operator", "")
    want = [str(v) for v in expr.get("values") or []]
    have = values.get(key)
    if op == "In":
        return have is not None and have in want
    if op == "NotIn":
        return have is None or have not in want
    if op == "Exists":
        return have is not None
    if op == "DoesNotExist":
        return have is None
    if op in ("Gt", "Lt"):
        try:
            a, b = int(have or ""), int(want[0])
        except (ValueError, IndexError):
            return False
        return a > b if op == "Gt" else a < b
    return False


def node_affinity_matches(pod: Obj, node: NodeView) -> bool:
    affinity = ((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    terms = required.get("nodeSelectorTerms") or []
    if not terms:
        return True
    fields = {"metadata.name": node.name}
    for term in terms:  # terms are ORed, expressions within a term ANDed
        exprs = term.get("matchExpressions") or []
        fexprs = term.get("matchFields") or []
        if not exprs and not fexprs:
            continue
        if all(_match_expression(e, node.labels) for e in exprs) and all(
            _match_expression(e, fields) for e in fexprs
        ):
            return True
    return False


def tolerates(pod: Obj, taints: Iterable[Mapping[str, str]]) -> bool:
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    for taint in taints:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        ok = False
        for t in tolerations:
            if t.get("effect") and t.get("effect") != taint.get("effect"):
                continue
            if t.get("operator") == "Exists":
                ok = not t.get("key") or t.get("key") == taint.get("key")
            else:
                ok = t.get("key") == taint.get("key") and (t.get("value") or "") == (
                    taint.get("value") or ""
                )
            if ok:
                break
        if not ok:
            return False
    return True


def bind_candidate(pod: Obj, node: NodeView) -> tuple[bool, str]:
    """Whether this node should try to bind `pod`, and why not."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    if spec.get("nodeName"):
        return False, f"already bound to {spec['nodeName']}"
    if (spec.get("schedulerName") or DEFAULT_SCHEDULER) != node.scheduler_name:
        return False, f"schedulerName {spec.get('schedulerName')!r} is not ours"
    if node.namespaces and meta.get("namespace") not in node.namespaces:
        return False, "namespace not served by this agent"
    if meta.get("deletionTimestamp"):
        return False, "being deleted"
    if status.get("phase") in ("Succeeded", "Failed"):
        return False, "terminal"
    if spec.get("schedulingGates"):
        return False, "has scheduling gates"
    nominated = status.get("nominatedNodeName")
    if nominated and nominated != node.name:
        return False, f"nominated to {nominated}"
    if node.unschedulable:
        return False, "node is cordoned"
    selector = spec.get("nodeSelector") or {}
    if any(node.labels.get(k) != v for k, v in selector.items()):
        return False, "nodeSelector does not match"
    if not node_affinity_matches(pod, node):
        return False, "node affinity does not match"
    if not tolerates(pod, node.taints):
        return False, "untolerated taint"
    return True, ""


def pod_requests(pod: Obj) -> dict[str, Decimal]:
    """Effective cpu/memory requests: max(largest init container, sum of containers) plus
    overhead, as the scheduler computes them. Raises ValueError on a bad quantity."""
    spec = pod.get("spec") or {}

    def req(c: Obj, res: str) -> Decimal:
        resources = c.get("resources") or {}
        raw = (resources.get("requests") or {}).get(res)
        if raw is None:
            raw = (resources.get("limits") or {}).get(res)
        return quantity(raw) if raw is not None else Decimal(0)

    out: dict[str, Decimal] = {}
    for res in ("cpu", "memory"):
        total = sum((req(c, res) for c in spec.get("containers") or []), Decimal(0))
        init = max((req(c, res) for c in spec.get("initContainers") or []), default=Decimal(0))
        overhead = (spec.get("overhead") or {}).get(res)
        out[res] = max(total, init) + (quantity(overhead) if overhead else Decimal(0))
    return out


def fits(pod: Obj, running: Iterable[Obj], allocatable: Mapping[str, str]) -> tuple[bool, str]:
    """Whether `pod` fits next to the (non-terminal) pods already on the node."""
    running = list(running)
    if len(running) + 1 > int(quantity(allocatable.get("pods", "110"))):
        return False, "Too many pods"
    try:
        want = pod_requests(pod)
    except ValueError as exc:
        return False, f"invalid resources: {exc}"
    used = {"cpu": Decimal(0), "memory": Decimal(0)}
    for other in running:
        try:
            for k, v in pod_requests(other).items():
                used[k] += v
        except ValueError:
            continue
    for res in ("cpu", "memory"):
        cap = quantity(allocatable.get(res, "0"))
        if want[res] > 0 and used[res] + want[res] > cap:
            return False, f"Insufficient {res}"
    return True, ""
