"""Operator benchmarks: upload-to-status latency, and resync time + memory at 10k/100k objects.

Every figure is printed next to a baseline measured in the same run, as a ratio:

1. **Upload-to-status latency** at bounded upload rates (default 100 and 200 uploads/s for
   10 s each, loopback only). A real `kubetrain-operator` process watches a fresh bucket;
   uploader threads PUT new keys at the given rate; a poller reads the DatasetWatch status
   every 50 ms. The k-th completed upload counts as visible when status shows >= k changes.
   The bench starts its own MinIO (the platform's binary, loopback) with two webhook
   targets. *Baseline*: a bare webhook receiver subscribed to the same bucket, timing
   upload -> event received (the floor the notification path imposes). Also reports the achieved upload rate
   and whether the operator kept up (final status count == uploads).
2. **Resync** of N objects (default 10,000 and 100,000; tiny unique objects so ETags differ,
   as in real data) under 10 labels, in a child process each: list + feed into the compact
   tally against a baseline of the same snapshot (the operator's steady state).
   *Baseline*: a bare `list_objects` loop that keeps nothing, in its own child process.
   Reports seconds, objects/s, ratio, and peak RSS growth per object for the tally.

Needs the platform (env file named by KUBETRAIN_PLATFORM_ENV, default
.kubetrain/platform.env) for the apiserver and the MinIO binary; MinIO servers of its own run
on loopback. The resync buckets `kubetrain-bench-<N>` live in .kubetrain/bench/minio-resync
and are kept between runs (uploading 100k objects takes minutes) unless --fresh.

    python tools/harness/bench/bench_operator.py [--rates 100,200] [--seconds 10] [--sizes 10000,100000]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubetrain_platform.envfile import read_env_file
from kubetrain_platform.minio_server import StandaloneMinio
from kubetrain_platform.platform import free_port

BENCH_CREDENTIALS = ("kubetrain-bench", "kubetrain-bench-secret")
"""Root user and password of the benchmark's own MinIO servers (loopback only)."""

REPO = Path(__file__).resolve().parents[3]
for sub in ("operator", "tools", "tools/harness"):
    if str(REPO / sub) not in sys.path:
        sys.path.insert(0, str(REPO / sub))

LABELS = 10


def minio_client(env: dict[str, str]) -> Any:
    from minio import Minio

    ep = env["MINIO_ENDPOINT"]
    return Minio(
        ep.split("://", 1)[1],
        access_key=env["MINIO_ACCESS_KEY"],
        secret_key=env["MINIO_SECRET_KEY"],
        secure=ep.startswith("https"),
    )


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


# ----------------------------------------------------------------------------- servers
class BareReceiver:
    """Baseline: a bare webhook receiver recording when each key's event arrives."""

    def __init__(self, port: int) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import unquote_plus

        arrivals: dict[str, float] = {}

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                now = time.monotonic()
                try:
                    for rec in json.loads(body).get("Records") or []:
                        arrivals.setdefault(unquote_plus(rec["s3"]["object"]["key"]), now)
                except ValueError:
                    pass
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.arrivals = arrivals
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ----------------------------------------------------------------------------- latency
def apply_crds(kube: Any) -> None:
    import yaml

    for path in sorted((REPO / "charts" / "kubetrain" / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                kube.request(
                    "PATCH",
                    f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{doc['metadata']['name']}",
                    body=doc,
                    query={"fieldManager": "kubetrain-bench", "force": "true"},
                    content_type="application/apply-patch+yaml",
                )
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            kube.request("GET", "/apis/kubetrain.dev/v1alpha1")
            return
        except Exception:
            time.sleep(0.5)
    raise RuntimeError("CRD kubetrain.dev not served after 30s")


def latency_run(env: dict[str, str], rate: int, seconds: float, log_dir: Path) -> dict[str, Any]:
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config
    from kubetrain_operator.kube import Kube
    from minio.notificationconfig import NotificationConfig, QueueConfig

    cfg = k8s_client.Configuration()
    k8s_config.load_kube_config(config_file=env["KUBECONFIG"], client_configuration=cfg)
    kube = Kube(k8s_client.ApiClient(cfg))
    apply_crds(kube)
    tag = uuid.uuid4().hex[:6]
    ns, bucket, watch = f"bench-{tag}", f"bench-lat-{tag}", "bench"
    op_port, bare_port = free_port(), free_port()
    bare = BareReceiver(bare_port)
    # Two webhook targets: KUBETRAIN -> the operator, BENCH -> the bare baseline receiver.
    server = StandaloneMinio(
        Path(env["KUBETRAIN_BIN"]),
        log_dir / f"minio-lat-{tag}" / "data",
        *BENCH_CREDENTIALS,
        {
            "KUBETRAIN": f"http://127.0.0.1:{op_port}/minio/events",
            "BENCH": f"http://127.0.0.1:{bare_port}/events",
        },
    ).start()
    menv = server.env()
    minio = minio_client(menv)
    minio.make_bucket(bucket)
    minio.set_bucket_notification(
        bucket,
        NotificationConfig(
            queue_config_list=[
                QueueConfig(
                    queue="arn:minio:sqs::BENCH:webhook",
                    events=["s3:ObjectCreated:*"],
                    config_id="bench",
                )
            ]
        ),
    )
    kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": ns}})
    op: subprocess.Popen[bytes] | None = None
    try:
        kube.request(
            "POST",
            f"/api/v1/namespaces/{ns}/secrets",
            body={
                "metadata": {"name": "creds"},
                "stringData": {"accessKey": server.user, "secretKey": server.password},
            },
        )
        kube.request(
            "POST",
            f"/apis/kubetrain.dev/v1alpha1/namespaces/{ns}/datasetwatches",
            body={
                "apiVersion": "kubetrain.dev/v1alpha1",
                "kind": "DatasetWatch",
                "metadata": {"name": watch},
                "spec": {
                    "source": {
                        "endpoint": server.endpoint,
                        "bucket": bucket,
                        "credentialsSecretRef": {"name": "creds"},
                    },
                    "trigger": {"threshold": 1_000_000_000, "initialTraining": False},
                },
            },
        )
        log = open(log_dir / f"operator-{rate}.log", "wb")  # noqa: SIM115
        op = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "kubetrain-operator"),
                "-n",
                ns,
                "--standalone",
                "--health-port",
                "0",
                "--metrics-port",
                "0",
                "--webhook-host",
                "127.0.0.1",
                "--webhook-port",
                str(op_port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "KUBECONFIG": env["KUBECONFIG"]},
        )

        def status() -> dict[str, Any]:
            return dict(kube.get_watch(ns, watch).get("status") or {})

        deadline = time.time() + 60
        while status().get("notifications") != "Connected":
            if time.time() > deadline or op.poll() is not None:
                raise RuntimeError(f"operator did not get ready; see {log_dir}")
            time.sleep(0.2)
        time.sleep(0.5)

        total = int(rate * seconds)
        done: list[tuple[float, str]] = []
        lock = threading.Lock()
        samples: list[tuple[float, int]] = []
        polling = threading.Event()

        def poll() -> None:
            while not polling.is_set():
                try:
                    s = status()
                    samples.append((time.monotonic(), int(s.get("pendingChanges") or 0)))
                except Exception:
                    pass
                time.sleep(0.05)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        upload_client = minio_client(menv)

        def upload(i: int) -> None:
            key = f"{i % LABELS}/{i:07d}.png"
            data = f"bench {i}".encode()
            upload_client.put_object(bucket, key, io.BytesIO(data), len(data))
            with lock:
                done.append((time.monotonic(), key))

        start = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            for i in range(total):
                target = start + i / rate  # bounded, open-loop schedule
                delay = target - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(upload, i)
        upload_seconds = time.monotonic() - start
        settle = time.monotonic() + 30
        while (not samples or samples[-1][1] < total) and time.monotonic() < settle:
            time.sleep(0.1)
        polling.set()
        poller.join(2)

        done.sort()
        lat_op: list[float] = []
        j = 0
        for k, (t_done, _key) in enumerate(done, start=1):
            while j < len(samples) and (samples[j][1] < k or samples[j][0] < t_done):
                j += 1
            if j < len(samples):
                lat_op.append(samples[j][0] - t_done)
        lat_raw = [bare.arrivals[key] - t for t, key in done if key in bare.arrivals]
        return {
            "rate": rate,
            "uploads": total,
            "achieved_rate": total / upload_seconds,
            "final_changes": samples[-1][1] if samples else 0,
            "op_p50": pct(lat_op, 0.5),
            "op_p95": pct(lat_op, 0.95),
            "op_seen": len(lat_op),
            "raw_p50": pct(lat_raw, 0.5),
            "raw_p95": pct(lat_raw, 0.95),
            "raw_seen": len(lat_raw),
        }
    finally:
        if op is not None:
            op.terminate()
            try:
                op.wait(20)
            except subprocess.TimeoutExpired:
                op.kill()
        try:
            path = f"/apis/kubetrain.dev/v1alpha1/namespaces/{ns}/datasetwatches/{watch}"
            kube.request(
                "PATCH",
                path,
                body={"metadata": {"finalizers": None}},
                content_type="application/merge-patch+json",
            )
            kube.request("DELETE", path)
        except Exception:
            pass
        kube.request("DELETE", f"/api/v1/namespaces/{ns}")
        server.stop()
        bare.stop()
        import shutil

        shutil.rmtree(server.data.parent, ignore_errors=True)


# ----------------------------------------------------------------------------- resync
def ensure_bucket(env: dict[str, str], size: int, fresh: bool) -> str:
    """`kubetrain-bench-<size>` on the bench MinIO, uploaded once and kept (data dir reused)."""
    from minio.deleteobjects import DeleteObject

    minio = minio_client(env)
    bucket = f"kubetrain-bench-{size}"
    if minio.bucket_exists(bucket):
        count = sum(1 for _ in minio.list_objects(bucket, recursive=True))
        if count == size and not fresh:
            return bucket
        for err in minio.remove_objects(
            bucket,
            [DeleteObject(o.object_name) for o in minio.list_objects(bucket, recursive=True)],
        ):
            print(f"cleanup: {err}", file=sys.stderr)
    else:
        minio.make_bucket(bucket)
    print(
        f"  uploading {size} objects to {bucket} (snowball batches; kept for later runs) ...",
        flush=True,
    )
    from minio.commonconfig import SnowballObject

    t0 = time.monotonic()
    batch = 10_000
    for first in range(0, size, batch):
        objs = []
        for i in range(first, min(size, first + batch)):
            data = f"{i}".encode()  # unique content: unique ETags, as in real data
            objs.append(
                SnowballObject(f"{i % LABELS}/{i:07d}.png", data=io.BytesIO(data), length=len(data))
            )
        minio.upload_snowball_objects(bucket, objs)
        print(f"    {min(size, first + batch)}/{size} ({time.monotonic() - t0:.0f} s)", flush=True)
    count = sum(1 for _ in minio.list_objects(bucket, recursive=True))
    if count != size:
        raise RuntimeError(f"{bucket}: expected {size} objects after upload, found {count}")
    return bucket


def child_resync(mode: str, bucket: str, env_path: str) -> dict[str, Any]:
    """Runs in a fresh process: one measurement, JSON to stdout."""
    import gc

    import psutil
    from kubetrain_contract.s3 import S3Connection
    from kubetrain_operator.objectstore import ObjectStore
    from kubetrain_operator.spec import SourceSpec
    from kubetrain_operator.tally import Tally

    env = read_env_file(Path(env_path))
    source = SourceSpec(env["MINIO_ENDPOINT"], bucket, "", "*.png", "creds")
    store = ObjectStore(source, S3Connection.from_env(env))
    proc = psutil.Process()
    gc.collect()
    from kubetrain_operator import memory as _memory

    _memory.release()
    rss0 = proc.memory_info().rss
    t0 = time.perf_counter()
    n = 0
    result: dict[str, Any] = {}
    if mode == "bare":
        for obj in store.client.list_objects(bucket, recursive=True):
            n += 1 if obj.etag else 0
        result["seconds"] = time.perf_counter() - t0
        gc.collect()
        from kubetrain_operator import memory

        memory.release()  # same treatment as the tally run
        result["rss_steady_per_object"] = (proc.memory_info().rss - rss0) / max(n, 1)
    else:
        # The operator's session start: the trained baseline from its manifest (JSON, as in
        # the bucket), then the repair listing. The baseline equals the bucket here, so the
        # listing corrects nothing: the steady state.
        import kubetrain_contract as contract
        from kubetrain_operator import memory

        tally = Tally("", "*.png")
        manifest = contract.SnapshotManifest.from_json(Path(mode.split(":", 1)[1]).read_bytes())
        tally.set_baseline(manifest.objects)
        del manifest
        memory.release()  # as the operator does after loading a baseline
        gc.collect()
        result["baseline_load_seconds"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        session = tally.resync()
        for key, etag in store.iter_listing():
            session.feed(key, etag)
            n += 1
        changed = session.finish().changed
        memory.release()  # as the operator does after a large listing
        result.update(seconds=time.perf_counter() - t1, changed=changed)
        gc.collect()
        result["rss_steady_per_object"] = (proc.memory_info().rss - rss0) / max(n, 1)
        if sum(tally.changes().values()) != 0 or tally.live_objects() != n:
            raise RuntimeError("tally does not match the listing")
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result.update(
        objects=n,
        rss_start=rss0,
        peak_rss=peak_kb * 1024,
        peak_per_object=(peak_kb * 1024 - rss0) / max(n, 1),
    )
    return result


def run_child(mode: str, bucket: str, env_path: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, bucket, "--platform-env", env_path],
        check=True,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [str(REPO / "operator"), os.environ.get("PYTHONPATH", "")]
            ),
        },
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench_operator", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--platform-env",
        default=os.environ.get("KUBETRAIN_PLATFORM_ENV", str(REPO / ".kubetrain" / "platform.env")),
    )
    parser.add_argument(
        "--rates", default="100,200", help="upload rates (uploads/s) for the latency runs"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each latency run")
    parser.add_argument("--sizes", default="10000,100000", help="object counts for the resync runs")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-resync", action="store_true")
    parser.add_argument("--fresh", action="store_true", help="re-upload the resync buckets")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "BUCKET"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child_resync(args.child[0], args.child[1], args.platform_env)))
        return 0
    env_path = Path(args.platform_env)
    if not env_path.exists():
        print(
            f"bench_operator: platform env {env_path} not found; start it with `make platform-up`",
            file=sys.stderr,
        )
        return 2
    env = read_env_file(env_path)
    log_dir = REPO / ".kubetrain" / "bench"
    log_dir.mkdir(parents=True, exist_ok=True)

    if not args.skip_latency:
        print(
            "== upload-to-status latency (baseline: bare webhook receiver on the same MinIO, same uploads) =="
        )
        for rate in [int(r) for r in args.rates.split(",") if r]:
            r = latency_run(env, rate, args.seconds, log_dir)
            kept = (
                "kept up"
                if r["final_changes"] == r["uploads"]
                else f"BEHIND ({r['final_changes']}/{r['uploads']})"
            )
            print(
                f"rate {rate}/s (achieved {r['achieved_rate']:.0f}/s, {r['uploads']} uploads, {kept}):\n"
                f"  operator status  p50 {r['op_p50'] * 1000:7.0f} ms  p95 {r['op_p95'] * 1000:7.0f} ms  (n={r['op_seen']})\n"
                f"  bare receiver    p50 {r['raw_p50'] * 1000:7.0f} ms  p95 {r['raw_p95'] * 1000:7.0f} ms  (n={r['raw_seen']})\n"
                f"  ratio            p50 {ratio(r['op_p50'], r['raw_p50'])}  p95 {ratio(r['op_p95'], r['raw_p95'])}"
                f"   goal p95 < 2000 ms: {'met' if r['op_p95'] < 2 else 'NOT met'}",
                flush=True,
            )
    if not args.skip_resync:
        print("== resync (baseline: bare list_objects loop keeping nothing) ==")
        server = StandaloneMinio(
            Path(env["KUBETRAIN_BIN"]), log_dir / "minio-resync" / "data", *BENCH_CREDENTIALS
        ).start()
        child_env = log_dir / "minio-resync" / "bench.env"
        child_env.write_text("".join(f"{k}={v}\n" for k, v in server.env().items()))
        try:
            resync_runs(server.env(), child_env, args)
        finally:
            server.stop()
    return 0


def write_manifest(env: dict[str, str], bucket: str, path: Path) -> None:
    """The bucket's snapshot manifest, as the operator would have written it after a run."""
    import kubetrain_contract as contract

    minio = minio_client(env)
    objects = {
        o.object_name: contract.normalize_etag(o.etag or "")
        for o in minio.list_objects(bucket, recursive=True)
    }
    path.write_text(
        contract.SnapshotManifest(
            watch="bench/bench", bucket=bucket, prefix="", objects=objects
        ).to_json()
    )


def resync_runs(env: dict[str, str], env_path: Path, args: argparse.Namespace) -> None:
    for size in [int(s) for s in args.sizes.split(",") if s]:
        bucket = ensure_bucket(env, size, args.fresh)
        manifest = env_path.parent / f"manifest-{size}.json"
        write_manifest(env, bucket, manifest)
        bare1 = run_child("bare", bucket, str(env_path))
        tally = run_child(f"tally:{manifest}", bucket, str(env_path))
        bare2 = run_child("bare", bucket, str(env_path))
        bare = min(bare1, bare2, key=lambda r: float(r["seconds"]))  # less noise from load
        own = tally["rss_steady_per_object"] - bare["rss_steady_per_object"]
        print(
            f"{size} objects:\n"
            f"  tally resync     {tally['seconds']:6.2f} s ({size / tally['seconds']:8.0f} obj/s)"
            f" [after loading the {size}-key baseline manifest in {tally['baseline_load_seconds']:.2f} s;"
            f" {tally['changed']} keys applied]\n"
            f"  bare listing     {bare['seconds']:6.2f} s ({size / bare['seconds']:8.0f} obj/s)"
            f" [best of 2: {bare1['seconds']:.2f} s, {bare2['seconds']:.2f} s]\n"
            f"  ratio            {ratio(tally['seconds'], bare['seconds'])}\n"
            f"  memory           RSS growth (baseline + listing, after gc): tally {tally['rss_steady_per_object']:.0f}"
            f" B/object, bare listing {bare['rss_steady_per_object']:.0f} B/object"
            f" -> the tally's own cost {own:.0f} B/object\n"
            f"                   peak RSS growth: tally {tally['peak_per_object']:.0f} B/object (incl. the"
            f" transient JSON manifest), bare {bare['peak_per_object']:.0f} B/object\n"
            f"  goals            < 30 s: {'met' if tally['seconds'] < 30 else 'NOT met'};"
            f" < 200 B/object: {'met' if tally['rss_steady_per_object'] < 200 else 'NOT met'}"
            f" (total RSS growth), {'met' if own < 200 else 'NOT met'} (tally's own cost)",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
