"""The rollout state: which Bento is served, what to fall back to, and how that changes. Pure.

**Where it lives.** Everything the operator must remember between calls (the release being
served, the previous known-good one to roll back to, the phase, why it rolled back) is
kept in annotations of the Deployment itself (`RolloutState.annotations`), not only in the
watch's status. The Deployment is written with one full server-side apply per change, so
state and spec can never disagree, an operator restart loses nothing, and `status.serving`
is always recomputable from the cluster (it is a report, never an input; only when the
Deployment was deleted is it read back, by `state_from_status`).

**Phases** (annotation `kubetrain.dev/rollout-phase`):

* `Progressing`: a newly promoted Bento is rolling out; only in this phase is a rollback
  possible;
* `Available`: the current Bento was observed fully rolled out (known good);
* `RolledBack`: the promoted Bento missed its deadline and the Deployment was set back to
  the previous Bento (known good: its pods never stopped serving);
* `Failed`: the promoted Bento missed its deadline and there was nothing to roll back to.

**Previous release.** On promotion the previous release becomes the *last known-good* one:
the current release if it is Available/RolledBack (or observed complete right now), else the
previous one already recorded (a promotion that lands while another is still rolling out
keeps the older, proven release as rollback target), else, when nothing was ever proven,
the current one (the best there is).

**Idempotence.** `promote()` returns None for a result whose Bento is already current or was
already rolled back from, so replaying a Job result (an operator restart) changes nothing.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from kubetrain_contract import TrainResult

from kubetrain_operator.constants import GROUP
from kubetrain_operator.spec import ServingSpecError

if TYPE_CHECKING:  # observe imports this module
    from kubetrain_operator.serving_rollout.observe import RolloutObservation

# Rollout state, stored on the Deployment.
ANN_MODEL_NAME = f"{GROUP}/model-name"
ANN_MODEL_VERSION = f"{GROUP}/model-version"
ANN_BENTO_URI = f"{GROUP}/bento-uri"
ANN_PREVIOUS_MODEL_VERSION = f"{GROUP}/previous-model-version"
ANN_PREVIOUS_BENTO_URI = f"{GROUP}/previous-bento-uri"
ANN_PHASE = f"{GROUP}/rollout-phase"
ANN_STARTED = f"{GROUP}/rollout-started"
ANN_ROLLED_BACK_FROM = f"{GROUP}/rolled-back-from"
ANN_ROLLED_BACK_FROM_VERSION = f"{GROUP}/rolled-back-from-version"
ANN_MESSAGE = f"{GROUP}/rollout-message"
#: Not state: the digest of the desired objects without it (see objects.desired_objects).
ANN_SPEC_HASH = f"{GROUP}/spec-hash"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/key` -> (bucket, key); ValueError when it is not one."""
    m = re.fullmatch(r"s3://([^/\s]+)/(\S+)", uri)
    if not m:
        raise ValueError(f"{uri!r} is not an s3://bucket/key URI")
    return m.group(1), m.group(2)


@dataclass(frozen=True)
class Release:
    """One servable Bento: what a promoted run produced."""

    bento_uri: str
    model_version: str
    model_name: str = ""

    @classmethod
    def from_result(cls, result: TrainResult) -> Release:
        """The release of a promoted result; ServingSpecError names a missing field."""
        uri = str(result.bentoUri or "")
        try:
            parse_s3_uri(uri)
        except ValueError as exc:
            raise ServingSpecError(f"result.bentoUri: {exc}") from None
        version = str(result.modelVersion or "")
        if not version:
            raise ServingSpecError("result.modelVersion is empty for a promoted result")
        return cls(bento_uri=uri, model_version=version, model_name=str(result.modelName or ""))

    def describe(self) -> str:
        who = f"{self.model_name} " if self.model_name else "model "
        return f"{who}v{self.model_version} ({self.bento_uri})"


class Phase(StrEnum):
    PROGRESSING = "Progressing"
    AVAILABLE = "Available"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"


#: Phases whose current release is known to serve (a valid rollback target later).
PROVEN = (Phase.AVAILABLE, Phase.ROLLED_BACK)


@dataclass(frozen=True)
class RolloutState:
    """What the Deployment is set to serve and what to fall back to (its annotations)."""

    current: Release
    phase: Phase
    started: str
    """RFC 3339 time the current phase's rollout began."""
    previous: Release | None = None
    rolled_back_from: Release | None = None
    message: str = ""
    """Why the last rollback or failure happened, for the status condition."""

    def annotations(self) -> dict[str, str]:
        ann = {
            ANN_MODEL_NAME: self.current.model_name,
            ANN_MODEL_VERSION: self.current.model_version,
            ANN_BENTO_URI: self.current.bento_uri,
            ANN_PHASE: str(self.phase),
            ANN_STARTED: self.started,
        }
        if self.previous:
            ann[ANN_PREVIOUS_BENTO_URI] = self.previous.bento_uri
            ann[ANN_PREVIOUS_MODEL_VERSION] = self.previous.model_version
        if self.rolled_back_from:
            ann[ANN_ROLLED_BACK_FROM] = self.rolled_back_from.bento_uri
            ann[ANN_ROLLED_BACK_FROM_VERSION] = self.rolled_back_from.model_version
        if self.message:
            ann[ANN_MESSAGE] = self.message[:1000]
        return ann

    @classmethod
    def from_annotations(cls, ann: Mapping[str, str] | None) -> RolloutState | None:
        """The state recorded on a live Deployment, or None if it carries none."""
        ann = ann or {}
        uri = ann.get(ANN_BENTO_URI, "")
        if not uri:
            return None
        name = ann.get(ANN_MODEL_NAME, "")
        try:
            phase = Phase(ann.get(ANN_PHASE, Phase.PROGRESSING))
        except ValueError:
            phase = Phase.PROGRESSING
        prev_uri = ann.get(ANN_PREVIOUS_BENTO_URI, "")
        failed_uri = ann.get(ANN_ROLLED_BACK_FROM, "")
        return cls(
            current=Release(uri, ann.get(ANN_MODEL_VERSION, ""), name),
            phase=phase,
            started=ann.get(ANN_STARTED, ""),
            previous=(
                Release(prev_uri, ann.get(ANN_PREVIOUS_MODEL_VERSION, ""), name)
                if prev_uri
                else None
            ),
            rolled_back_from=(
                Release(failed_uri, ann.get(ANN_ROLLED_BACK_FROM_VERSION, ""), name)
                if failed_uri
                else None
            ),
            message=ann.get(ANN_MESSAGE, ""),
        )

    @classmethod
    def of_deployment(cls, deployment: Mapping[str, Any] | None) -> RolloutState | None:
        """The state recorded on a live Deployment (None: no Deployment, or no state)."""
        if not deployment:
            return None
        return cls.from_annotations((deployment.get("metadata") or {}).get("annotations"))


def state_from_status(status: Mapping[str, Any] | None, now: str) -> RolloutState | None:
    """The state to re-create a deleted Deployment from the watch's `status.serving`.

    The Deployment's annotations are the source of truth; when the Deployment itself is
    gone (deleted by hand), the last reported status is the best record left. The release
    restarts as Progressing, so a Bento that no longer comes up falls back to the previous.
    """
    if not status or not status.get("bentoUri") or not status.get("modelVersion"):
        return None
    name = str(status.get("modelName") or "")
    prev_uri = str(status.get("previousBentoUri") or "")
    return RolloutState(
        current=Release(str(status["bentoUri"]), str(status["modelVersion"]), name),
        phase=Phase.PROGRESSING,
        started=now,
        previous=(
            Release(prev_uri, str(status.get("previousModelVersion") or ""), name)
            if prev_uri
            else None
        ),
    )


# ------------------------------------------------------------------------------ transitions


def promote(
    state: RolloutState | None,
    obs: RolloutObservation | None,
    release: Release,
    now: str,
) -> RolloutState | None:
    """The state after promoting `release`, or None when the promotion changes nothing."""
    if state is not None:
        if release.bento_uri == state.current.bento_uri:
            return None  # already the Deployment's Bento: a replayed result
        if state.rolled_back_from and release.bento_uri == state.rolled_back_from.bento_uri:
            return None  # this Bento already failed its rollout once
    previous: Release | None = None
    if state is not None:
        proven = state.phase in PROVEN or (obs is not None and obs.complete)
        if proven:
            previous = state.current
        elif state.previous is not None:
            previous = state.previous  # keep the older, proven release as the target
        elif state.phase == Phase.PROGRESSING:
            previous = state.current  # nothing proven yet: the best there is
    return RolloutState(current=release, phase=Phase.PROGRESSING, started=now, previous=previous)


def rolled_back(state: RolloutState, message: str, now: str) -> RolloutState:
    """The state after going back to `state.previous` (which must be set)."""
    if state.previous is None:
        raise ValueError("rollback needs a previous release")
    return RolloutState(
        current=state.previous,
        phase=Phase.ROLLED_BACK,
        started=now,
        previous=None,
        rolled_back_from=state.current,
        message=message,
    )


def failed(state: RolloutState, message: str) -> RolloutState:
    return dataclasses.replace(state, phase=Phase.FAILED, message=message)


def available(state: RolloutState) -> RolloutState:
    # A Bento that rolled out after all clears a failure message; a rollback's stays.
    if state.phase == Phase.FAILED:
        return dataclasses.replace(state, phase=Phase.AVAILABLE, message="")
    return dataclasses.replace(state, phase=Phase.AVAILABLE)
