"""Failure classes that decide the exit code (see contract.EXIT_*).

`BadInput` means retrying cannot help (a malformed manifest, an empty dataset, wrong
settings): the Job's podFailurePolicy fails it at once on exit code 2. `Transient`
means the world may fix itself (MinIO or MLflow unreachable, a 5xx): exit 75 and the
Job retries within its backoffLimit. Anything else unexpected is also reported as
transient (exit 75) with the reason prefixed "internal error" — retries are bounded by
backoffLimit, and a crash must never be mistaken for bad data.
"""

from __future__ import annotations


class TrainerError(Exception):
    """Base class; the message is what goes into the result's `reason`."""


class BadInput(TrainerError):
    """The input is wrong; retrying the same Job cannot succeed."""


class Transient(TrainerError):
    """A dependency failed in a way that may pass; retry."""
