"""Names the operator shares across modules: the CRD's identity, label keys, RFC 3339 times.

One module, so the API version in an ownerReference, the group a kopf handler watches and
the labels a selector matches cannot drift apart. Plain values only: importing this module
does no I/O and pulls in only the stdlib-only contract (the pure modules depend on it).
"""

from __future__ import annotations

import datetime as dt

from kubetrain_contract import API_VERSION

# -- the DatasetWatch CRD ---------------------------------------------------------------
# The contract owns the API version (its snapshot manifests carry it too); group and
# version are its two halves.
GROUP, VERSION = API_VERSION.split("/")
PLURAL = "datasetwatches"
KIND = "DatasetWatch"

# -- labels -----------------------------------------------------------------------------
# Recommended labels (kubernetes.io/docs/concepts/overview/working-with-objects/common-labels)
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
#: Value of LABEL_MANAGED_BY on everything the operator creates (also its field manager
#: and Event source by default).
MANAGED_BY = "kubetrain-operator"
PART_OF = "kubetrain"
# Ours: which watch (and run) an object belongs to.
LABEL_WATCH = f"{GROUP}/watch"
LABEL_RUN = f"{GROUP}/run"


# -- times ------------------------------------------------------------------------------
def rfc3339(when: float | dt.datetime | None = None, *, millis: bool = False) -> str:
    """RFC 3339 in UTC ("2026-01-02T03:04:05Z"), seconds precision unless `millis`.

    `when` is epoch seconds or an aware datetime; None means now. This is the format of
    every time the operator writes (status fields, conditions, rollout annotations).
    """
    if when is None:
        when = dt.datetime.now(dt.UTC)
    elif not isinstance(when, dt.datetime):
        when = dt.datetime.fromtimestamp(when, dt.UTC)
    when = when.astimezone(dt.UTC)
    if millis:
        return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
