"""`make demo`: the whole product on this machine, from upload to a served prediction.

1. start the local platform (etcd, kube-apiserver, controller-manager, scheduler, a real node:
   containerd, kubelet, kube-proxy, CoreDNS, Traefik) and build kubetrain's images with
   buildah into the local registry (only what changed);
2. `helm upgrade --install` the chart with its bundled MinIO and MLflow, then `helm test`;
3. write the sample CSV, convert it to label folders, upload them to the bundled MinIO through
   `kubectl port-forward`, apply the example DatasetWatch;
4. wait for the first model to be trained and served;
5. send held-out digits through the Ingress and print predictions vs. labels and the accuracy;
6. change more than 200 images of one label, wait for the retrain and the rollout, show the
   version change.

Every stage prints elapsed time. Idempotent: a second run reuses the platform, the release, the
uploaded objects and a model that is already served (step 6 then retrains once more).
"""

from __future__ import annotations

import argparse
import sys
import time

from kubetrain_platform.e2e import Flow, FlowConfig, FlowError
from kubetrain_platform.platform import PRODUCT_IMAGES, REPO_ROOT, Platform, PlatformError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training epochs per run (default: the DatasetWatch default, 25, what users get)",
    )
    p.add_argument("--label", default="3", help="the label whose images step 6 changes (default 3)")
    args = p.parse_args(argv)
    t0 = time.monotonic()

    def stage(msg: str) -> None:
        print(f"[demo {time.monotonic() - t0:7.1f}s] {msg}", flush=True)

    flow: Flow | None = None
    try:
        stage("1/6 starting the local platform")
        plat = Platform(REPO_ROOT / ".kubetrain", node=True)
        plat.up()
        stage(
            "    images: kubetrain-operator, kubetrain-trainer, MinIO, MLflow (buildah -> local registry)"
        )
        images = plat.images(PRODUCT_IMAGES)
        cfg = FlowConfig(epochs=args.epochs)
        flow = Flow(plat, cfg, log=lambda m: print(f"[demo] {m}", flush=True))
        stage(f"2/6 helm upgrade --install {cfg.release} charts/kubetrain -n {cfg.namespace}")
        flow.install_chart(images)
        stage("    helm test")
        flow.helm_test()
        stage("3/6 dataset: sample CSV -> label folders -> MinIO; applying the DatasetWatch")
        held = flow.prepare_dataset()
        already = flow.served_version()
        if already:
            # Re-uploading would undo the changes an earlier run made (and count them again).
            stage(
                f"    a model (version {already}) is already served: not re-uploading the dataset"
            )
        else:
            flow.upload()
        flow.apply_watch()
        stage("4/6 waiting for the first model to be trained and served (minutes on 2 cores)")
        first = already or flow.wait_served(None, timeout=1800)
        stage(f"    model version {first} is served through the Ingress (Host: {cfg.host})")
        stage(f"5/6 predicting {len(held)} held-out digits through the Ingress")
        acc, version, pairs = flow.evaluate(held)
        print(
            "    truth -> prediction (first 20): " + "  ".join(f"{t}->{p}" for t, p in pairs[:20])
        )
        stage(f"    accuracy {acc:.1%} on {len(pairs)} held-out digits (model version {version})")
        stage(f"6/6 changing 201 images of label {args.label} (threshold: more than 200)")
        keys = flow.mutate(args.label, 201, seed=int(time.time()))
        stage(f"    changed {len(keys)} objects, e.g. {keys[0]}; waiting for retrain and rollout")
        second = flow.wait_served(first, timeout=1800)
        acc2, version2, _ = flow.evaluate(held)
        stage(f"    model version {first} -> {second}; accuracy {acc2:.1%} (version {version2})")
    except (PlatformError, FlowError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        print(
            "demo: platform logs are in .kubetrain/logs/; pod logs: "
            "`$KUBETRAIN_BIN/kubectl -n kubetrain-demo logs <pod>`",
            file=sys.stderr,
        )
        return 1
    finally:
        if flow is not None:
            flow.close()
    env = plat.env()
    flow_minio = f"{cfg.release}-minio"
    print(
        f"""
Done in {time.monotonic() - t0:.0f}s.

  MLflow UI        $KUBETRAIN_BIN/kubectl -n {cfg.namespace} port-forward svc/{cfg.release}-mlflow 5000
                   then http://127.0.0.1:5000
  MinIO console    $KUBETRAIN_BIN/kubectl -n {cfg.namespace} port-forward svc/{flow_minio} 9001
                   (user/password: keys rootUser/rootPassword of Secret {flow_minio})
  Model (Ingress)  curl -H 'Host: {cfg.host}' -H 'Content-Type: application/json' \\
                     -d '{{"data": "<base64 PNG>"}}' {env["KUBETRAIN_INGRESS_URL"]}/predict

Look around:
  source {plat.env_path}
  $KUBETRAIN_BIN/kubectl -n {cfg.namespace} get dsw,jobs,deploy,pods,ingress
  $KUBETRAIN_BIN/kubectl -n {cfg.namespace} get events --sort-by=.lastTimestamp
  $KUBETRAIN_BIN/kubectl -n {cfg.namespace} logs deploy/{cfg.release}-operator
  ls .kubetrain/logs                              # platform server logs
Stop:  make platform-down     (everything; `make demo` again resumes where this left off)
"""
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
