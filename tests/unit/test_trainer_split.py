"""The split depends only on the key: stable, about 80/10/10, independent of other keys."""

from __future__ import annotations

import subprocess
import sys

from kubetrain_trainer.split import bucket_of, split_keys, split_of

KEYS = [f"digits/{i % 10}/img-{i:06d}.png" for i in range(20000)]


def test_split_is_a_function_of_the_key_only() -> None:
    full = split_keys(KEYS)
    subset = KEYS[::7]
    part = split_keys(subset)
    for name, keys in part.items():
        assert set(keys) <= set(full[name])
    assert all(split_of(k) == split_of(k) for k in KEYS[:100])


def test_split_is_stable_across_processes() -> None:
    # Python's hash() is salted per process; the split must not be.
    code = (
        "from kubetrain_trainer.split import split_of\n"
        "print(''.join(split_of(f'digits/{i % 10}/img-{i:06d}.png')[0] for i in range(300)))"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PYTHONPATH": ":".join(sys.path)},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    here = "".join(split_of(f"digits/{i % 10}/img-{i:06d}.png")[0] for i in range(300))
    assert outs == {here}


def test_proportions_are_80_10_10() -> None:
    groups = split_keys(KEYS)
    n = len(KEYS)
    assert abs(len(groups["train"]) / n - 0.8) < 0.015
    assert abs(len(groups["val"]) / n - 0.1) < 0.01
    assert abs(len(groups["test"]) / n - 0.1) < 0.01
    assert sum(len(g) for g in groups.values()) == n


def test_groups_are_sorted_and_buckets_in_range() -> None:
    groups = split_keys(reversed(KEYS[:500]))
    for keys in groups.values():
        assert keys == sorted(keys)
    assert all(0 <= bucket_of(k) < 10000 for k in KEYS[:1000])


def test_known_assignments_do_not_drift() -> None:
    # Changing the hash or boundaries would silently move images between splits
    # across versions; these were computed once with SHA-256 and must never change.
    sample = {k: split_of(k) for k in ("a", "digits/0/img-000000.png", "digits/7/x.png")}
    import hashlib

    for key, got in sample.items():
        b = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 10000
        want = "train" if b < 8000 else "val" if b < 9000 else "test"
        assert got == want
