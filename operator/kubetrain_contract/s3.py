"""How every kubetrain component reaches MinIO: one endpoint + credentials value.

The operator (watch Secret), the trainer (MINIO_* from the Job), and `kubetrain-data`
(flags or MINIO_*) all build an `S3Connection` here and pass `conn.minio_kwargs()` (plus
their own `http_client`) to `minio.Minio`; each product package has exactly one place that
creates a client. The rules live in this module only:

- the endpoint is `http://host[:port]` or `https://host[:port]`: the scheme decides TLS;
  a path (other than a trailing `/`), query, fragment, whitespace, a bad port, or
  credentials in the URL are refused. Errors name the setting and the value, except an
  endpoint holding credentials, which is never echoed;
- both keys must be non-empty;
- a Kubernetes Secret carries them base64-encoded under `data.accessKey` and
  `data.secretKey`; the environment as MINIO_ENDPOINT, MINIO_ACCESS_KEY, MINIO_SECRET_KEY
  (the names the operator's Job and `.kubetrain/platform.env` use).

The keys never appear in `repr()` or in an error message. Standard library only (see the
package docstring); nothing here imports minio.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self, TypedDict
from urllib.parse import urlsplit

ENDPOINT_ENV = "MINIO_ENDPOINT"
ACCESS_KEY_ENV = "MINIO_ACCESS_KEY"
SECRET_KEY_ENV = "MINIO_SECRET_KEY"
#: Keys of the credentials Secret (spec.source.credentialsSecretRef).
SECRET_ACCESS_KEY = "accessKey"
SECRET_SECRET_KEY = "secretKey"

_SHAPE = "must be http://host:port or https://host:port"


class S3ConfigError(ValueError):
    """An endpoint or credential is unusable; the message names it but never holds a key."""


class MinioKwargs(TypedDict):
    """The keyword arguments of `minio.Minio` that `S3Connection.minio_kwargs` fills in."""

    endpoint: str
    access_key: str
    secret_key: str
    secure: bool


def parse_endpoint(value: str, what: str = "S3 endpoint") -> str:
    """Validate an endpoint URL; returns it as `scheme://host[:port]` (no trailing slash).

    `what` names the setting in the error (e.g. `spec.source.endpoint`, `MINIO_ENDPOINT`).
    """
    if not isinstance(value, str):
        raise S3ConfigError(f"{what}: expected a string, got {type(value).__name__}")
    if "@" in value:
        # Do not echo it: the part before '@' is a credential.
        raise S3ConfigError(
            f"{what} must not contain credentials (user:password@); "
            "give the access and secret keys separately"
        )
    if any(c.isspace() or not c.isprintable() for c in value):
        raise S3ConfigError(f"{what}: {value!r} must not contain whitespace")
    scheme, sep, _ = value.partition("://")
    if not sep or scheme not in ("http", "https"):
        raise S3ConfigError(f"{what}: {value!r} {_SHAPE}")
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        raise S3ConfigError(f"{what}: {value!r} is not a valid URL; it {_SHAPE}") from None
    if not parts.hostname:
        raise S3ConfigError(f"{what}: {value!r} has no host; it {_SHAPE}")
    # The port is what follows the last ':' outside an IPv6 literal's brackets.
    _, colon, port = parts.netloc.rpartition("]")[2].rpartition(":")
    if colon and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise S3ConfigError(f"{what}: {value!r} has an invalid port (1-65535)")
    if parts.path not in ("", "/") or "?" in value or "#" in value:
        raise S3ConfigError(f"{what}: {value!r} has a path, query or fragment; it {_SHAPE}")
    return f"{scheme}://{parts.netloc}"


@dataclass(frozen=True)
class S3Connection:
    """An S3/MinIO endpoint and the keys to sign in with. `repr()` shows the endpoint only.

    Construction validates: the endpoint is normalised by `parse_endpoint`, empty keys are
    refused (S3ConfigError).
    """

    endpoint: str
    """`http(s)://host[:port]`, normalised (no trailing slash)."""
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "endpoint", parse_endpoint(self.endpoint))
        if not self.access_key:
            raise S3ConfigError("the S3 access key is empty")
        if not self.secret_key:
            raise S3ConfigError("the S3 secret key is empty")

    @property
    def secure(self) -> bool:
        """True for https endpoints."""
        return self.endpoint.startswith("https://")

    @property
    def host(self) -> str:
        """`host[:port]` as the minio client wants it."""
        return self.endpoint.split("://", 1)[1]

    def minio_kwargs(self) -> MinioKwargs:
        """Keyword arguments for `minio.Minio`; the caller adds its `http_client`.

        The result holds the keys: pass it to the client, never log it.
        """
        return MinioKwargs(
            endpoint=self.host,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=self.secure,
        )

    @classmethod
    def from_secret(cls, endpoint: str, secret: Mapping[str, Any], name: str) -> Self:
        """`endpoint` with the keys of a Kubernetes Secret object (its base64 `data`).

        `name` says which Secret in errors (e.g. `ns/creds`). Each of `accessKey` and
        `secretKey` must be present, non-empty, strict base64 of UTF-8 text.
        """
        data = secret.get("data") or {}
        if not isinstance(data, Mapping):
            raise S3ConfigError(f"Secret {name!r} has no data")
        keys: list[str] = []
        for key in (SECRET_ACCESS_KEY, SECRET_SECRET_KEY):
            raw = data.get(key)
            if not raw:
                raise S3ConfigError(f"Secret {name!r} has no key {key!r}")
            invalid = S3ConfigError(f"Secret {name!r} key {key!r} is not valid base64 text")
            if not isinstance(raw, str | bytes):
                raise invalid
            try:
                keys.append(base64.b64decode(raw, validate=True).decode())
            except ValueError:  # binascii.Error, UnicodeDecodeError, non-ASCII str
                raise invalid from None
            if not keys[-1]:
                raise S3ConfigError(f"Secret {name!r} key {key!r} is empty")
        return cls(endpoint, keys[0], keys[1])

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        endpoint: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        flags: Mapping[str, str] | None = None,
    ) -> Self:
        """From MINIO_ENDPOINT / MINIO_ACCESS_KEY / MINIO_SECRET_KEY in `env` (default:
        `os.environ`); a non-empty `endpoint` / `access_key` / `secret_key` (a flag) wins.

        `flags` maps a variable to the flag that overrides it, so errors name both
        (`--endpoint / MINIO_ENDPOINT`). Every missing value is listed in one error.
        """
        env = os.environ if env is None else env
        flags = flags or {}

        def label(variable: str) -> str:
            return f"{flags[variable]} / {variable}" if variable in flags else variable

        values = {
            variable: given or env.get(variable, "")
            for variable, given in (
                (ENDPOINT_ENV, endpoint),
                (ACCESS_KEY_ENV, access_key),
                (SECRET_KEY_ENV, secret_key),
            )
        }
        missing = [label(variable) for variable, value in values.items() if not value]
        if missing:
            raise S3ConfigError("MinIO settings missing: " + ", ".join(missing))
        return cls(
            parse_endpoint(values[ENDPOINT_ENV], label(ENDPOINT_ENV)),
            values[ACCESS_KEY_ENV],
            values[SECRET_KEY_ENV],
        )
