"""The rollout's errors, by what the caller should do about them.

Permanent (a Warning Event, no retry): `ServingSpecError` (defined with the spec model in
`kubetrain_operator.spec`, re-exported here) for a spec or result that cannot be rolled
out, and `RolloutError` for a serving object owned by someone else or rejected by the
apiserver. Transient (retry later): `RolloutBusy`, and anything else (`KubeError` 5xx,
connection errors).
"""

from __future__ import annotations

from kubetrain_operator.spec import ServingSpecError as ServingSpecError


class RolloutError(Exception):
    """A rollout that retrying cannot fix; the message says what and where."""


class RolloutBusy(RuntimeError):
    """The Deployment kept changing under every retry: transient, call again later."""
