"""Platform start-to-ready (fresh vs warm), pod create -> Running on the node, and RSS.

Baselines, measured in the same run:
- start-to-ready from an empty state dir (PKI generation, etcd bootstrap, MLflow schema
  migrations, node set-up); the figure of interest is the warm restart of the same state dir,
  which is what `make platform-up` does on a used machine (target: under 30 s);
- pod create -> Running of a pod whose image is the 0.3 MB `pause` (the sandbox's own image,
  already on the node): the floor of what kubelet, containerd and runc cost; next to it the
  operator image (85 MB) on its first pull from the local registry, and a second pod once it
  is present.
Uses its own state dir and free ports. A node runs alone on a machine: stop the demo first.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tools" / "harness"))

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
            images = warm_plat.images(("operator",))
            pods = [
                ("pod -> Running, pause (baseline)", warm_plat.record.pause_image),
                ("pod -> Running, operator 1st pull", images["operator"]),
                ("pod -> Running, operator present", images["operator"]),
            ]
            starts = [
                (label, _pod_start(warm_plat, f"bench-{i}", ref))
                for i, (label, ref) in enumerate(pods)
            ]
            time.sleep(5)  # let start-up transients settle before reading RSS
            rows = warm_plat.status()
        finally:
            Platform(state, log=quiet).down()
    print(f"{'measure':<34}{'value':>10}{'baseline':>12}{'ratio':>8}")
    print(f"{'start-to-ready, fresh state dir':<34}{fresh:>9.1f}s{'(baseline)':>12}{1.0:>8.2f}")
    print(f"{'start-to-ready, warm restart':<34}{warm:>9.1f}s{fresh:>11.1f}s{warm / fresh:>8.2f}")
    base = starts[0][1]
    for label, secs in starts:
        print(f"{label:<34}{secs:>9.2f}s{base:>11.2f}s{secs / base:>8.2f}")
    total = sum(r.rss_bytes for r in rows)
    for r in rows:
        print(f"  rss {r.name:<28}{r.rss_bytes / 2**20:>8.0f} MiB")
    print(f"{'rss, whole platform':<34}{total / 2**20:>6.0f} MiB")
    return 0


def _pod_start(plat: Platform, name: str, image: str) -> float:
    """Seconds from `kubectl create` of a pod until the API says Running."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": image, "command": ["/pause"]}]
            if "pause" in image
            else [{"name": "c", "image": image, "command": ["sleep", "60"]}],
        },
    }
    t0 = time.monotonic()
    plat.kubectl(["create", "-f", "-"], stdin=json.dumps(pod))
    while time.monotonic() - t0 < 120:
        got = json.loads(plat.kubectl(["get", "pod", name, "-o", "json"]))
        if got["status"].get("phase") == "Running":
            return time.monotonic() - t0
        time.sleep(0.05)
    raise RuntimeError(f"pod {name} ({image}) not Running after 120 s")


if __name__ == "__main__":
    sys.exit(main())
