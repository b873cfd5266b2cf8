"""`make demo`: bring the local platform up and show where everything is.

Stages print progress and elapsed time. Idempotent: a second run reuses what runs.
"""

from __future__ import annotations

import sys
import time

from kubetrain_platform.platform import REPO_ROOT, Platform, PlatformError


def main() -> int:
    t0 = time.monotonic()

    def stage(msg: str) -> None:
        print(f"[demo {time.monotonic() - t0:6.1f}s] {msg}", flush=True)

    plat = Platform(REPO_ROOT / ".kubetrain")
    stage("starting the local platform (etcd, kube-apiserver, controller-manager, MinIO, MLflow)")
    try:
        plat.up()
    except PlatformError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    env = plat.env()
    stage("platform ready")
    print(
        f"""
  Kubernetes API   {plat.url("apiserver")}   (KUBECONFIG={env["KUBECONFIG"]})
  MinIO S3 API     {env["MINIO_ENDPOINT"]}
  MinIO console    {env["MINIO_CONSOLE_URL"]}   (credentials in {plat.env_path})
  MLflow UI        {env["MLFLOW_TRACKING_URI"]}

Look around:  source {plat.env_path} && $KUBETRAIN_BIN/kubectl get all -A
Status:       make platform-status
Stop:         make platform-down
"""
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
