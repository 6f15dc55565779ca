"""Steps in a series: where its level changes, by how much, and how sure that is.

A series is points in commit order, each a value with its own measured spread (the standard error of a record's
median window, or of a mean over seeds), on a scale where a step is a difference: logs for costs, the figure itself
for quality. Each point's weight is 1 / its variance, that variance being its own spread plus the run-to-run noise
the series shows beyond it (`noise`), so that a point measured in few or scattered windows counts for less.

The detection is a weighted binary segmentation with a backward pass (`find`): the split of a segment whose two
sides' weighted means differ by the most standard errors (scaled up where the residuals scatter more than the
weights say: `_Sums`) is a step when that z reaches `THRESHOLD`, then each side is split again; afterwards every step is placed again between its neighbours and dropped where its z falls
short, until none moves. The threshold and the minimum run were chosen on simulated histories of this machine's
measured noise (tests/benchmarks/bench_history_detection.py; the figures are in docs/history.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

THRESHOLD = 3.5  # |z| of a split's weighted difference of means (docs/history.md: why 3.5)
MIN_RUN = 2  # points on each side of a step: a single point is an outlier until the next commit agrees
Z95 = 1.959964


@dataclass(frozen=True, kw_only=True)
class Change:
    """A step between points `at - 1` and `at`: the segments [start, at) and [at, end) on either side, the
    difference of their weighted means (after - before) with its 95% interval, and its z."""

    at: int
    start: int
    end: int
    difference: float
    low: float
    high: float
    z: float


def noise(values: Sequence[float], spreads: Sequence[float | None]) -> np.ndarray:
    """Each point's standard deviation: its own spread (the median of the known ones where it has none), plus, in
    quadrature, the noise from run to run beyond it, from the median absolute difference of neighbouring points
    (which a step moves once, not throughout). Never zero: a series that repeats itself exactly (a seeded
    quality figure) gets 1e-9, so that any change in it is a step."""
    y = np.asarray(values, dtype=float)
    own = np.array([np.nan if s is None else s for s in spreads], dtype=float)
    known = own[np.isfinite(own)]
    typical = float(np.median(known)) if known.size else 0.0
    own = np.where(np.isfinite(own), own, typical)
    total = 1.4826 * float(np.median(np.abs(np.diff(y)))) / math.sqrt(2) if y.size >= 3 else 0.0
    beyond = max(total**2 - typical**2, 0.0)
    return np.maximum(np.sqrt(own**2 + beyond), 1e-9)


def find(
    values: Sequence[float], spreads: Sequence[float | None], threshold: float = THRESHOLD, min_run: int = MIN_RUN
) -> list[Change]:
    """The steps of a series, oldest first (see the module's docstring)."""
    y = np.asarray(values, dtype=float)
    weights = 1 / noise(y, spreads) ** 2
    sums = _Sums(y, weights)
    cuts: list[int] = []
    pending = [(0, len(y))]
    while pending:
        start, end = pending.pop()
        at, z = sums.best_split(start, end, min_run)
        if at is not None and abs(z) >= threshold:
            cuts.append(at)
            pending += [(start, at), (at, end)]
    cuts = _settle(sorted(cuts), sums, threshold, min_run, len(y))
    bounds = [0, *cuts, len(y)]
    return [sums.change(bounds[i - 1], at, bounds[i + 1]) for i, at in enumerate(cuts, start=1)]


def _settle(found: list[int], sums: _Sums, threshold: float, min_run: int, n: int) -> list[int]:
    """Each cut of `found` placed again at the best split between its neighbours (cuts that meet, or come closer
    than `min_run`, become one), and the weakest one below `threshold` dropped, until nothing changes."""
    cuts = found
    for _ in range(4 * len(found) + 4):
        bounds = [0, *cuts, n]
        moved = []
        for i in range(1, len(bounds) - 1):
            at, _ = sums.best_split(bounds[i - 1], bounds[i + 1], min_run)
            at = bounds[i] if at is None else at
            if at - (moved[-1] if moved else 0) >= min_run and n - at >= min_run:
                moved.append(at)
        zs = [abs(sums.z(b, at, e)) for b, at, e in zip([0, *moved], moved, [*moved[1:], n])]
        weakest = min(range(len(zs)), key=zs.__getitem__, default=None)
        if weakest is not None and zs[weakest] < threshold:
            moved.pop(weakest)
        if moved == cuts:
            break
        cuts = moved
    return cuts


class _Sums:
    """Cumulative weights, weighted values and weighted squares, so that any segment's weighted mean and residuals
    take a few subtractions.

    A split's z is the difference of its sides' weighted means over its standard error, that error scaled up by
    the dispersion of the two sides' residuals where they scatter more than their weights say (never down: a
    series that repeats itself exactly keeps its measured spreads), so that noise the weights underestimate does
    not pass for a step."""

    def __init__(self, y: np.ndarray, weights: np.ndarray):
        self.w = np.concatenate([[0.0], np.cumsum(weights)])
        self.wy = np.concatenate([[0.0], np.cumsum(weights * y)])
        self.wyy = np.concatenate([[0.0], np.cumsum(weights * y * y)])

    def z(self, start: int, at: int, end: int) -> float:
        difference, error = self._difference(start, at, end)
        return float(difference / error)

    def best_split(self, start: int, end: int, min_run: int) -> tuple[int | None, float]:
        """The split of [start, end) with the largest |z|, and that z; (None, 0) where no split leaves `min_run`
        points on each side."""
        candidates = np.arange(start + min_run, end - min_run + 1)
        if candidates.size == 0:
            return None, 0.0
        difference, error = self._difference(start, candidates, end)
        z = difference / error
        best = int(np.argmax(np.abs(z)))
        return int(candidates[best]), float(z[best])

    def change(self, start: int, at: int, end: int) -> Change:
        difference, error = self._difference(start, at, end)
        return Change(
            at=at, start=start, end=end, difference=float(difference), low=float(difference - Z95 * error),
            high=float(difference + Z95 * error), z=float(difference / error),
        )

    def _difference(self, start, at, end):
        """(after - before, its standard error) of the split of [start, end) at `at` (an index or an array)."""
        w_before, w_after = self.w[at] - self.w[start], self.w[end] - self.w[at]
        sum_before, sum_after = self.wy[at] - self.wy[start], self.wy[end] - self.wy[at]
        residuals = (self.wyy[end] - self.wyy[start]) - sum_before**2 / w_before - sum_after**2 / w_after
        dispersion = np.maximum(1.0, np.maximum(residuals, 0.0) / max(end - start - 2, 1))
        error = np.sqrt((1 / w_before + 1 / w_after) * dispersion)
        return sum_after / w_after - sum_before / w_before, error
