"""What one DatasetWatch asks of its serving objects, and what they are called. Pure.

The rollout has no parser of its own: `parse_target` reads the operator's one typed model
of the spec (`kubetrain_operator.spec.parse_watch`, `spec.serving` included) and adds what
only the rollout needs: the owning watch's identity (its uid is required, since every
serving object carries an ownerReference to it), the image resolved against the
operator's default, and the names and labels of the objects. Every problem is raised as
`ServingSpecError`, the rollout's documented error for "this spec cannot be rolled out".
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubetrain_operator.constants import (
    API_VERSION,
    KIND,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_WATCH,
    MANAGED_BY,
)
from kubetrain_operator.settings import RolloutSettings
from kubetrain_operator.spec import ServingSpec, ServingSpecError, SpecError, WatchSpec, parse_watch

#: `app.kubernetes.io/name` of the serving objects (the pod selector's first half).
SERVING_APP = "kubetrain-serving"

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class WatchRef:
    """Identity of the owning DatasetWatch."""

    namespace: str
    name: str
    uid: str
    generation: int = 0
    """`metadata.generation` the target was read from (the conditions' observedGeneration)."""

    @property
    def watch_id(self) -> str:
        return f"{self.namespace}/{self.name}"

    def reference(self) -> dict[str, Any]:
        """The watch as an Event's `involvedObject`."""
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "namespace": self.namespace,
            "uid": self.uid,
        }

    def owner_reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class ServingTarget:
    """Everything from a DatasetWatch that shapes its serving objects."""

    watch: WatchRef
    endpoint: str
    """MinIO/S3 endpoint `http(s)://host:port` (spec.source.endpoint)."""
    credentials_secret: str
    """Secret with keys accessKey/secretKey (spec.source.credentialsSecretRef.name)."""
    image: str
    serving: ServingSpec

    @property
    def name(self) -> str:
        return serving_name(self.watch.name)

    @classmethod
    def of(cls, spec: WatchSpec, settings: RolloutSettings) -> ServingTarget:
        """The target of a parsed watch; ServingSpecError when it cannot be rolled out."""
        if spec.serving_problem:
            raise ServingSpecError(spec.serving_problem)
        if not spec.uid:
            raise ServingSpecError("metadata.uid is required (the owner of the serving objects)")
        return cls(
            watch=WatchRef(spec.namespace, spec.name, spec.uid, spec.generation),
            endpoint=spec.source.endpoint,
            credentials_secret=spec.source.credentials_secret,
            image=spec.serving.image or spec.training.image or settings.default_image,
            serving=spec.serving,
        )


def parse_target(body: Mapping[str, Any], settings: RolloutSettings) -> ServingTarget:
    """What a DatasetWatch object (kopf body or API dict) asks of its serving objects."""
    try:
        spec = parse_watch(body)
    except ServingSpecError:
        raise
    except SpecError as exc:  # the rollout's callers expect one error type for a bad spec
        raise ServingSpecError(str(exc)) from None
    return ServingTarget.of(spec, settings)


# ------------------------------------------------------------------------------ names


def short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def serving_name(watch: str) -> str:
    """`<watch>-serving`, or a valid, stable stand-in when that is not a DNS-1035 label.

    Service names must be DNS-1035 labels (<= 63 chars, start with a letter, no dots) while
    watch names are DNS-1123 subdomains (<= 253 chars, dots, may start with a digit).
    """
    base = f"{watch}-serving"
    if len(base) <= 63 and _DNS1035.fullmatch(base):
        return base
    cleaned = re.sub(r"[^a-z0-9-]+", "-", watch.lower()).strip("-")
    if not cleaned or not cleaned[0].isalpha():
        cleaned = "w-" + cleaned
    stem = cleaned[: 63 - len("-serving") - 9].rstrip("-")
    return f"{stem}-{short_hash(watch)}-serving"


def label_value(text: str) -> str:
    """A label value (<= 63 chars) standing for `text`; long names get a hash suffix."""
    if len(text) <= 63:
        return text
    return f"{text[:54].rstrip('.-_')}-{short_hash(text)}"


def selector_labels(watch: str) -> dict[str, str]:
    """The Deployment's (immutable) pod selector and the Service's selector."""
    return {LABEL_NAME: SERVING_APP, LABEL_INSTANCE: label_value(watch)}


def selector(watch: str) -> str:
    """`selector_labels` as a label selector string."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(watch).items())


def object_labels(watch: str) -> dict[str, str]:
    return {
        **selector_labels(watch),
        LABEL_COMPONENT: "serving",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_WATCH: label_value(watch),
    }
