"""The promotion gate: minimum accuracy, tolerance vs the champion, first model."""

from __future__ import annotations

from kubetrain_trainer.gate import decide


def test_first_model_needs_only_the_minimum() -> None:
    assert decide(0.95, None, min_accuracy=0.9, tolerance=0.0).promote
    refused = decide(0.85, None, min_accuracy=0.9, tolerance=0.0)
    assert not refused.promote and "below the minimum" in refused.reason


def test_tolerance_against_the_champion() -> None:
    assert decide(0.975, 0.98, min_accuracy=0.9, tolerance=0.005).promote  # exactly at floor
    refused = decide(0.97, 0.98, min_accuracy=0.9, tolerance=0.005)
    assert not refused.promote and "worse than the champion" in refused.reason
    assert decide(0.99, 0.98, min_accuracy=0.9, tolerance=0.0).promote


def test_minimum_applies_even_when_better_than_champion() -> None:
    d = decide(0.6, 0.5, min_accuracy=0.9, tolerance=0.1)
    assert not d.promote and "minimum" in d.reason


def test_nan_accuracy_is_refused() -> None:
    assert not decide(float("nan"), None, min_accuracy=0.0, tolerance=0.0).promote
