"""The project's statistics, each written once: intervals for means and differences, distribution-free
intervals and tests, quantiles and spread. aggregate (and through its rows the report), compare, ab and
measure take them from here.

- Over seeds (report, aggregate): `mean_interval`, a mean's Student t interval (`t_quantile`), and `difference`,
  two configurations compared per seed where they share seeds (a paired t interval on the differences: the
  seed's data order and initialisation cancel), otherwise by Welch's unpaired interval; both give an `Interval`.
  Small samples (3 to 10 seeds) are the rule here, so intervals come from Student's t, not the normal.
- Paired speed ratios (ab): `signed_rank_interval`, the Wilcoxon signed-rank (Hodges-Lehmann) interval over the
  Walsh averages, and `ratio_interval`, that interval taken on log ratios.
- Repeats of one figure (measure, compare): `quantile` (linear interpolation), `quartiles`, `iqr`, and
  `mann_whitney_p`, the two-sided Mann-Whitney U test.

The confidence level is 95% (`CONFIDENCE`; the t table holds 95% only). Only the standard library is
imported at module level (no torch, no project module: reading results stays light); scipy is imported inside
`mann_whitney_p`.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace

CONFIDENCE = 0.95
# Two-sided 95% quantiles of Student's t, t(0.975, df), for df = 1..30.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)
_Z975 = 1.959964


def t_quantile(df: float) -> float:
    """t(0.975, df): from the table for whole df up to 30 (interpolated in 1/df between them), and beyond by the
    Cornish-Fisher expansion around the normal quantile (within 0.001 there)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    if df <= 30:
        low = math.floor(df)
        if low == df or low == 30:
            return _T975[int(low) - 1]
        share = (1 / low - 1 / df) / (1 / low - 1 / (low + 1))
        return _T975[low - 1] + share * (_T975[low] - _T975[low - 1])
    z = _Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True, kw_only=True)
class Interval:
    """An estimate and its 95% confidence interval; `n` values went in; `paired` says how a difference was taken."""

    estimate: float
    low: float
    high: float
    n: int
    paired: bool = False

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    @property
    def significant(self) -> bool:
        """Whether the interval excludes zero (for a difference: the two differ at the 5% level)."""
        return self.low > 0 or self.high < 0


def mean_interval(values: list[float]) -> Interval | None:
    """The mean of `values` with its Student t interval; None with fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    mean = statistics.fmean(values)
    half = t_quantile(n - 1) * statistics.stdev(values) / math.sqrt(n)
    return Interval(estimate=mean, low=mean - half, high=mean + half, n=n)


def difference(a: dict[int, float], b: dict[int, float]) -> Interval | None:
    """mean(a) - mean(b) with its 95% interval, from values keyed by seed: paired over the seeds both have when
    there are at least two, else Welch's unpaired interval; None when either side has too few values."""
    common = sorted(set(a) & set(b))
    if len(common) >= 2:
        found = mean_interval([a[seed] - b[seed] for seed in common])
        return replace(found, paired=True)
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = list(a.values()), list(b.values())
    sa, sb = statistics.variance(va) / len(va), statistics.variance(vb) / len(vb)
    estimate = statistics.fmean(va) - statistics.fmean(vb)
    if sa + sb == 0:
        return Interval(estimate=estimate, low=estimate, high=estimate, n=len(va) + len(vb))
    df = (sa + sb) ** 2 / (sa**2 / (len(va) - 1) + sb**2 / (len(vb) - 1))
    half = t_quantile(max(1.0, df)) * math.sqrt(sa + sb)
    return Interval(estimate=estimate, low=estimate - half, high=estimate + half, n=len(va) + len(vb))


def signed_rank_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The exact distribution-free interval for the center of symmetric `values`: the Walsh averages
    (x_i + x_j) / 2 between the k-th smallest and the k-th largest, k from the signed-rank statistic's null
    distribution (Hodges-Lehmann). (-inf, inf) when there are too few values for that confidence (fewer than
    6 at 95%)."""
    n = len(values)
    if n == 0:
        return -math.inf, math.inf
    walsh = sorted((values[i] + values[j]) / 2 for i in range(n) for j in range(i, n))
    counts = [1]  # counts[t]: sign patterns whose positive ranks sum to t
    for rank in range(1, n + 1):
        grown = counts + [0] * rank
        for total, count in enumerate(counts):
            grown[total + rank] += count
        counts = grown
    tail, cumulative, k = (1 - confidence) / 2, 0, 0
    for count in counts:
        if (cumulative + count) / 2**n > tail:
            break
        cumulative += count
        k += 1
    if k == 0:
        return -math.inf, math.inf
    return walsh[k - 1], walsh[len(walsh) - k]


def ratio_interval(ratios: list[float]) -> tuple[float, float, float]:
    """(median, low, high) of positive `ratios` (per-round candidate / base): their median, and the exponentiated
    `signed_rank_interval` of their logs, with 0.0 and inf for an open end (fewer than 6 ratios)."""
    low, high = signed_rank_interval([math.log(ratio) for ratio in ratios])
    return (
        statistics.median(ratios), math.exp(low) if low > -math.inf else 0.0, math.exp(high) if high < math.inf else math.inf
    )


def quantile(sorted_values: list[float], q: float) -> float:
    """The `q` quantile (0 <= q <= 1) of already sorted values by linear interpolation between the two nearest
    (numpy's default, "inclusive"): q = 0 is the smallest value, q = 1 the largest; one value is every quantile
    of itself. Raises IndexError on an empty list."""
    position = (len(sorted_values) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def quartiles(values: list[float]) -> tuple[float, float]:
    """(first, third) quartile of `values`, in any order, by `quantile`: the ends of their interquartile range."""
    ordered = sorted(values)
    return quantile(ordered, 0.25), quantile(ordered, 0.75)


def iqr(values: list[float]) -> float:
    """The interquartile range of `values` (third quartile - first, by `quantile`): a spread one outlier cannot
    move; 0.0 for a single value."""
    low, high = quartiles(values)
    return high - low


def mann_whitney_p(a: list[float], b: list[float]) -> float:
    """The two-sided p-value of the Mann-Whitney U test that `a` and `b` come from one distribution: scipy's
    `mannwhitneyu` with its defaults (exact for small samples without ties, else the normal approximation with
    continuity correction). scipy is imported here, on first use, so that importing this module stays light."""
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)
