"""Runs in the bench and its load-generator children: the percentile rule every summary uses."""

from __future__ import annotations

from collections.abc import Sequence

MAX_ERROR_SAMPLES = 5  # error texts kept per summary, enough to see what went wrong


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks; 0.0 for no data."""
    if not sorted_values:
        return 0.0
    position = (len(sorted_values) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)
