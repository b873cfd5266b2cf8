"""Run every benchmark (`tools/harness/bench/bench_*.py`) against a private local platform.

Benchmarks print each figure next to a baseline measured in the same run, as a ratio.
This runner only orchestrates: it starts a platform on free ports in a temporary state
dir (so it never disturbs a running demo), exports KUBETRAIN_PLATFORM_ENV, runs each
benchmark as its own process (so one crash does not hide the others), and keeps a copy
of the output under .kubetrain/bench/.

Usage: python tools/harness/bench/run.py [NAME ...] [-- ARGS passed to each benchmark]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in args:
        i = args.index("--")
        args, extra = args[:i], args[i + 1 :]
    if args and args[0] in ("-h", "--help"):
        print(__doc__)
        names = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
        print("available:", ", ".join(names))
        return 0
    benches = sorted(HERE.glob("bench_*.py"))
    if args:
        benches = [b for b in benches if b.stem.removeprefix("bench_") in args]
        if not benches:
            print(f"bench: no benchmark named {args}", file=sys.stderr)
            return 2
    sys.path.insert(0, str(REPO / "tools" / "harness"))
    from kubetrain_platform.platform import Platform

    out_dir = REPO / ".kubetrain" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    failures = 0
    with tempfile.TemporaryDirectory(prefix="kubetrain-bench-") as tmp:
        # Control plane only: bench_platform starts nodes of its own (one node per machine).
        plat = Platform(Path(tmp) / "platform", ports="free", node=False)
        try:
            plat.up()
            env = {**os.environ, "KUBETRAIN_PLATFORM_ENV": str(plat.env_path)}
            for bench in benches:
                log = out_dir / f"{stamp}-{bench.stem}.txt"
                print(f"\n=== {bench.stem} (output also in {log}) ===", flush=True)
                with log.open("w") as fh:
                    proc = subprocess.Popen(
                        [sys.executable, str(bench), *extra],
                        env=env,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        text=True,
                        cwd=REPO,
                    )
                    assert proc.stdout is not None
                    for line in proc.stdout:
                        sys.stdout.write(line)
                        fh.write(line)
                    rc = proc.wait()
                if rc != 0:
                    failures += 1
                    print(f"=== {bench.stem} FAILED (exit {rc}) ===", flush=True)
        finally:
            plat.down()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
