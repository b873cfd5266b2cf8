"""Serving rollout: a promoted model becomes the `<watch>-serving` Deployment, Service, Ingress.

The package is split by what each part may do. The pure modules take plain dicts and
dataclasses and return the same, with no Kubernetes or MinIO I/O (import-linter enforces
it, see .importlinter); they hold every decision and are unit-tested without a server:

* `spec`: the rollout's view of the one typed watch spec (`kubetrain_operator.spec`), and
  the objects' names and labels;
* `objects`: the desired Deployment, Service and Ingress, and the spec hash that detects
  an edit;
* `state`: the rollout state kept in the Deployment's annotations, and its transitions
  (promote, roll back, fail, become available);
* `observe`: what a live Deployment and its ReplicaSets say, and what to do about it;
* `status`: `status.serving`, recomputed from state and observation;
* `history`: which old Bentos exceed `historyLimit`.

The I/O: `apply` (the entry points; server-side apply and Events through the operator's
one client, `kubetrain_operator.kube.Kube`) and `bentos` (listing and deleting Bentos in
MinIO). `errors` sorts the exceptions into permanent and transient.

The operator uses `on_promoted`, `check` and the three errors, importable from here.
docs/rollout.md describes the behaviour for operators of the system.
"""

from __future__ import annotations

from kubetrain_operator.serving_rollout.apply import check, on_promoted
from kubetrain_operator.serving_rollout.errors import RolloutBusy, RolloutError, ServingSpecError

__all__ = ["RolloutBusy", "RolloutError", "ServingSpecError", "check", "on_promoted"]
