"""Platform start-to-ready: fresh state dir vs warm restart, and the running platform's RSS.

Baseline: a start from an empty state dir (PKI generation, etcd bootstrap, MLflow schema
migrations) measured in the same run; the figure of interest is the warm restart of the same
state dir, which is what `make platform-up` does on a used machine (target: under 30 s).
Uses its own state dir and free ports, so a running demo is not disturbed.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

from kubetrain_platform.platform import Platform  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    with tempfile.TemporaryDirectory(prefix="kubetrain-bench-platform-") as tmp:
        state = Path(tmp) / "state"
        quiet = lambda _m: None  # noqa: E731
        plat = Platform(state, ports="free", log=quiet)
        try:
            t0 = time.monotonic()
            plat.up()
            fresh = time.monotonic() - t0
            plat.down()
            warm_plat = Platform(state, log=quiet)
            t0 = time.monotonic()
            warm_plat.up()
            warm = time.monotonic() - t0
            time.sleep(5)  # let start-up transients settle before reading RSS
            rows = warm_plat.status()
        finally:
            Platform(state, log=quiet).down()
    print(f"{'measure':<34}{'value':>10}{'baseline':>12}{'ratio':>8}")
    print(f"{'start-to-ready, fresh state dir':<34}{fresh:>9.1f}s{'(baseline)':>12}{1.0:>8.2f}")
    print(f"{'start-to-ready, warm restart':<34}{warm:>9.1f}s{fresh:>11.1f}s{warm / fresh:>8.2f}")
    total = sum(r.rss_bytes for r in rows)
    for r in rows:
        print(f"  rss {r.name:<28}{r.rss_bytes / 2**20:>8.0f} MiB")
    print(f"{'rss, whole platform':<34}{total / 2**20:>6.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
