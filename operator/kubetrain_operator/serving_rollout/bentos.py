"""Where the Bentos live, and deleting those beyond `spec.serving.historyLimit`. MinIO I/O.

`prune_bentos` lists the current Bento's folder and deletes what `history.bentos_to_delete`
chose; it talks to a `BentoStore`, so tests hand it an in-memory one. `MinioBentoStore` is
the production store: a MinIO client for the watch's endpoint, with the keys of the
watch's credentials Secret read at that moment (never logged, never kept).
"""

from __future__ import annotations

from typing import Any, Protocol

from kubetrain_contract.s3 import S3ConfigError, S3Connection

from kubetrain_operator.kube import Kube
from kubetrain_operator.serving_rollout.errors import RolloutError
from kubetrain_operator.serving_rollout.history import StoredObject, bento_folder, bentos_to_delete
from kubetrain_operator.serving_rollout.spec import ServingTarget
from kubetrain_operator.serving_rollout.state import RolloutState


class BentoStore(Protocol):
    """Where Bentos live; `MinioBentoStore` in production, any S3-like store in principle."""

    def list_objects(self, bucket: str, prefix: str) -> list[StoredObject]: ...

    def delete_object(self, bucket: str, key: str) -> None: ...


class MinioBentoStore:
    """BentoStore over a minio.Minio client."""

    def __init__(self, client: Any) -> None:
        self.client = client

    @classmethod
    def from_secret(cls, kube: Kube, target: ServingTarget, timeout: float) -> MinioBentoStore:
        """A client for the watch's endpoint with the keys of its credentials Secret."""
        import urllib3

        from kubetrain_operator.objectstore import new_client

        ns, name = target.watch.namespace, target.credentials_secret
        secret = kube.get(f"/api/v1/namespaces/{ns}/secrets/{name}")
        if secret is None:
            raise RolloutError(f"Secret {ns}/{name} (spec.source.credentialsSecretRef) not found")
        try:
            conn = S3Connection.from_secret(target.endpoint, secret, f"{ns}/{name}")
        except S3ConfigError as exc:
            raise RolloutError(f"{exc} (spec.source.credentialsSecretRef)") from None
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(timeout, 10.0), read=timeout),
            retries=urllib3.Retry(
                total=2, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)
            ),
        )
        return cls(new_client(conn, http))

    def list_objects(self, bucket: str, prefix: str) -> list[StoredObject]:
        out = []
        for obj in self.client.list_objects(bucket, prefix=prefix, recursive=False):
            if obj.is_dir or obj.object_name is None:
                continue
            ts = obj.last_modified.timestamp() if obj.last_modified else 0.0
            out.append(StoredObject(key=obj.object_name, last_modified=ts))
        return out

    def delete_object(self, bucket: str, key: str) -> None:
        self.client.remove_object(bucket, key)


def prune_bentos(store: BentoStore, served: RolloutState, limit: int) -> tuple[str, list[str]]:
    """Delete the current model's Bentos beyond `limit`; returns (bucket, deleted keys)."""
    bucket, prefix = bento_folder(served.current)
    doomed = bentos_to_delete(
        store.list_objects(bucket, prefix),
        current=served.current,
        previous=served.previous,
        limit=limit,
    )
    deleted = []
    for victim in doomed:
        store.delete_object(bucket, victim)
        deleted.append(victim)
    return bucket, deleted
