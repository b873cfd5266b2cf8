"""CPU limit -> TensorFlow thread pools."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubetrain_trainer.resources import cgroup_cpu_limit, parse_cpu_quantity, plan_threads


@pytest.mark.parametrize(("text", "cores"), [("2", 2.0), ("0.5", 0.5), ("1500m", 1.5)])
def test_parse_quantities(text: str, cores: float) -> None:
    assert parse_cpu_quantity(text) == cores


@pytest.mark.parametrize("text", ["", "abc", "-1", "0", "nanm"])
def test_bad_quantities(text: str) -> None:
    with pytest.raises(ValueError):
        parse_cpu_quantity(text)


def test_cgroup_v2_cpu_max(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_plan_uses_env_then_cgroup(tmp_path: Path) -> None:
    p = plan_threads("1", tmp_path)
    assert (p.intra_op, p.inter_op, p.source) == (1, 1, "env")
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    p = plan_threads("", tmp_path)
    assert (p.intra_op, p.source) == (1, "cgroup")
    # Never more threads than visible CPUs, never fewer than one.
    assert plan_threads("500m", tmp_path).intra_op == 1
    assert plan_threads("4096", tmp_path).intra_op >= 1
