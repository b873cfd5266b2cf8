"""The promotion gate: a pure decision over accuracies, so it is easy to test and explain.

A challenger becomes `champion` only if
  1. its test accuracy is at least `min_accuracy`, and
  2. when a champion exists, its accuracy is no worse than the champion's accuracy *on
     the same test split* minus `tolerance`.
The first model (no champion) only needs the minimum. Both numbers come from the same
images, so the comparison is fair even as the dataset changes; a tolerance > 0 lets a
model trained on newer data replace one that is marginally better on the old mix.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Accuracies are ratios of counts; compare with a hair of slack so 0.98 - 0.005 (which is
#: 0.9750000000000001 in binary floating point) still admits exactly 0.975.
_EPS = 1e-9


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str


def decide(
    accuracy: float,
    champion_accuracy: float | None,
    *,
    min_accuracy: float,
    tolerance: float,
) -> GateDecision:
    """Apply the gate; the reason states the numbers that decided it."""
    if accuracy != accuracy:  # NaN: no test images at all
        return GateDecision(False, "refused: no test accuracy (empty test split)")
    if accuracy < min_accuracy - _EPS:
        return GateDecision(
            False, f"refused: accuracy {accuracy:.4f} below the minimum {min_accuracy:.4f}"
        )
    if champion_accuracy is None:
        return GateDecision(
            True, f"promoted: first model, accuracy {accuracy:.4f} >= minimum {min_accuracy:.4f}"
        )
    floor = champion_accuracy - tolerance
    if accuracy < floor - _EPS:
        return GateDecision(
            False,
            f"refused: accuracy {accuracy:.4f} is worse than the champion's "
            f"{champion_accuracy:.4f} by more than the tolerance {tolerance:.4f}",
        )
    return GateDecision(
        True,
        f"promoted: accuracy {accuracy:.4f} vs champion {champion_accuracy:.4f} "
        f"(tolerance {tolerance:.4f}, minimum {min_accuracy:.4f})",
    )
