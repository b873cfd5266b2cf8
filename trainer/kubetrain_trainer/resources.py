"""Size TensorFlow's thread pools to the container's CPU limit, not the node's cores.

TensorFlow sizes its pools from the cores it can see, and in a pod that is the whole
node: on a 64-core node a 2-CPU pod would run 64 intra-op threads and spend its CFS
quota on contention. The limit comes from, in order: `KUBETRAIN_CPU_LIMIT` (the
Downward API's `limits.cpu`, an integer with the default divisor, or a quantity like
`1500m`), the cgroup v2 `cpu.max` / v1 `cpu.cfs_quota_us` quota, then the CPU affinity
mask. The pools must be set before TensorFlow runs its first op, so `configure_threads`
is called first thing in training.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path


def parse_cpu_quantity(text: str) -> float:
    """Parse a Kubernetes CPU quantity ("2", "0.5", "1500m") into cores."""
    t = text.strip()
    if not t:
        raise ValueError("empty CPU quantity")
    try:
        value = float(t[:-1]) / 1000.0 if t.endswith("m") else float(t)
    except ValueError:
        raise ValueError(f"not a CPU quantity: {text!r} (expected e.g. 2, 0.5 or 1500m)") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"CPU quantity must be positive, got {text!r}")
    return value


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this cgroup in cores, or None when unlimited/unknown."""
    v2 = root / "cpu.max"
    try:
        quota, period = v2.read_text().split()[:2]
        if quota == "max":
            return None
        return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota_us > 0 and period_us > 0:
            return quota_us / period_us
    except (OSError, ValueError):
        pass
    return None


def visible_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ThreadPlan:
    cpu_limit: float
    """Cores this container may use."""
    source: str
    """Where the limit came from: env, cgroup or affinity."""
    intra_op: int
    inter_op: int


def plan_threads(cpu_limit_setting: str, cgroup_root: Path = Path("/sys/fs/cgroup")) -> ThreadPlan:
    """Decide intra/inter-op threads: intra = ceil(limit), inter = 1 below 4 cores, else 2.

    A convolution step is one big op, so intra-op parallelism is what matters; a
    second inter-op thread only pays off when there are cores to spare.
    """
    visible = visible_cpus()
    if cpu_limit_setting:
        limit, source = parse_cpu_quantity(cpu_limit_setting), "env"
    else:
        cg = cgroup_cpu_limit(cgroup_root)
        limit, source = (cg, "cgroup") if cg is not None else (float(visible), "affinity")
    cores = max(1, min(math.ceil(limit - 1e-9), visible))
    inter = 1 if cores < 4 else 2
    return ThreadPlan(cpu_limit=limit, source=source, intra_op=cores, inter_op=inter)


def configure_threads(plan: ThreadPlan) -> None:
    """Apply the plan to TensorFlow (must run before its first op)."""
    import tensorflow as tf

    threading = tf.config.threading
    if (
        threading.get_intra_op_parallelism_threads() == plan.intra_op
        and threading.get_inter_op_parallelism_threads() == plan.inter_op
    ):
        return
    try:
        threading.set_intra_op_parallelism_threads(plan.intra_op)
        threading.set_inter_op_parallelism_threads(plan.inter_op)
    except RuntimeError as exc:
        # TensorFlow already ran an op in this process (a second run in one process,
        # e.g. a benchmark); its pools can no longer change.
        from kubetrain_trainer.logs import warn

        warn("TensorFlow thread pools already fixed", error=str(exc))
