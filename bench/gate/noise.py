"""What the paired gate can resolve on this machine, and where its noise comes from.

`floor_after` and `rounds_for` are the arithmetic of resolution: the 95% interval of the per-round ratios narrows
about as 1/sqrt(rounds), so the spread of an A/A calibration's round ratios says how many rounds (and seconds) a
floor needs. `window_noise` takes the windows of every round apart: each pair of windows side by side, the ratio of
their rates, and what each ran under (bench.measure.conditions): which condition the spread follows, and how
much of it another clock (the process's CPU time) or a discarding rule would take out.
"""

from __future__ import annotations

import functools
import math
import random
import statistics
from dataclasses import dataclass

from .. import stats
from . import ab

Z95 = 1.96
# The signed-rank (Hodges-Lehmann) interval is wider than the normal one of normal data by 1/sqrt(3/pi) for many
# rounds; for few, wider still, so up to SIMULATED rounds its width is found by simulation.
HODGES_LEHMANN = math.sqrt(math.pi / 3)
SIMULATED = 40
FLOORS = (0.01, 0.02, 0.03, 0.05)


def robust_spread(values: list[float]) -> float | None:
    """The standard deviation that the median absolute deviation stands for under normal noise (1.4826 MAD);
    None for fewer than 3 values."""
    if len(values) < 3:
        return None
    center = statistics.median(values)
    return 1.4826 * statistics.median(abs(v - center) for v in values)


@functools.cache
def half_width(rounds: int) -> float:
    """The median half-width of the signed-rank 95% interval (bench.stats) of `rounds` standard normal values: by
    simulation (seeded) up to SIMULATED rounds, beyond by the normal approximation."""
    if rounds > SIMULATED:
        return Z95 * HODGES_LEHMANN / math.sqrt(rounds)
    generator = random.Random(rounds)
    widths = []
    for _ in range(300):
        low, high = stats.signed_rank_interval([generator.gauss(0, 1) for _ in range(rounds)])
        widths.append((high - low) / 2)
    return statistics.median(widths)


def floor_after(spread: float, rounds: int) -> float:
    """The half-width (a fraction) of the 95% interval that `rounds` rounds of log-ratio spread `spread` give."""
    return math.expm1(spread * half_width(rounds))


def rounds_for(spread: float, floor: float) -> int:
    """The fewest rounds (at least ab.MIN_ROUNDS) whose 95% interval of the median ratio has a half-width of
    `floor` (0.02: 2%) when the per-round log ratios spread by `spread` (a standard deviation)."""
    if spread <= 0:
        return ab.MIN_ROUNDS
    if floor_after(spread, SIMULATED) > floor:
        return max(SIMULATED + 1, math.ceil((Z95 * HODGES_LEHMANN * spread / math.log1p(floor)) ** 2))
    low, high = ab.MIN_ROUNDS, SIMULATED  # the half-width shrinks with the rounds: the first that reaches `floor`
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if floor_after(spread, middle) <= floor else (middle + 1, high)
    return low


def round_log_ratios(result: ab.Result, architecture: str, figure: str) -> list[float]:
    """The log of each round's candidate / base ratio of one figure (ab.round_ratio), in round order."""
    logs = []
    for base, candidate in zip(*result.measured):
        b, c = base.get(architecture), candidate.get(architecture)
        if b and c and b.get("status") == c.get("status") == "ok":
            ratio = ab.round_ratio(b, c, figure)
            if ratio:
                logs.append(math.log(ratio))
    return logs


@dataclass(frozen=True, kw_only=True)
class Budget:
    """What one timed figure of a calibration says: its per-round spread (the widest over the architectures), and
    per floor the rounds and seconds (at the calibration's seconds per round) that resolve it."""

    figure: str
    spread: float
    rounds: dict[float, int]
    seconds: dict[float, float]


def budgets(result: ab.Result, floors: tuple[float, ...] = FLOORS) -> list[Budget]:
    """Per timed figure but peak memory (its own tolerance, its own noise), what `result`'s rounds (an A/A
    calibration) say each floor costs."""
    per_round = result.seconds / result.rounds if result.rounds else 0.0
    spreads: dict[str, float] = {}
    for line in result.lines:
        if line.ratio is None or line.figure in ab.MEMORY:
            continue
        spread = robust_spread(round_log_ratios(result, line.architecture, line.figure))
        if spread is not None:
            spreads[line.figure] = max(spreads.get(line.figure, 0.0), spread)
    found = []
    for figure, spread in spreads.items():
        rounds = {floor: rounds_for(spread, floor) for floor in floors}
        found.append(Budget(figure=figure, spread=spread, rounds=rounds,
                            seconds={floor: n * per_round for floor, n in rounds.items()}))
    return found


@dataclass(frozen=True, kw_only=True)
class WindowPair:
    """One pair of windows side by side: the log of their ratio (candidate / base, as the figure reads), and what
    each ran under (bench.measure.conditions.Conditions as dicts)."""

    round: int
    figure: str
    log_ratio: float
    base: dict
    candidate: dict

    def cpu_clock(self, higher_is_better: bool) -> float:
        """The log ratio had each window been timed by its process's CPU time instead of the wall clock."""
        busy = math.log((self.candidate["cpu_s"] / self.candidate["wall_s"]) / (self.base["cpu_s"] / self.base["wall_s"]))
        return self.log_ratio - busy if higher_is_better else self.log_ratio + busy


def window_pairs(result: ab.Result) -> list[WindowPair]:
    """Every pair of windows of every timed figure that ab paired, over all rounds and architectures, where both
    windows say what they ran under."""
    found = []
    for index, (base, candidate) in enumerate(zip(*result.measured)):
        for name, b in base.items():
            c = candidate.get(name)
            if not c or b.get("status") != "ok" or c.get("status") != "ok":
                continue
            for figure, _ in ab.TIMED:
                pairs = ab.paired_windows(b, c, figure)
                conditions = b.get(f"{figure}_conditions"), c.get(f"{figure}_conditions")
                if not pairs or not all(conditions) or not len(conditions[0]) == len(conditions[1]) == len(pairs):
                    continue
                found += [
                    WindowPair(round=index, figure=figure, log_ratio=math.log(y / x), base=cb, candidate=cc)
                    for (x, y), cb, cc in zip(pairs, *conditions)
                ]
    return found


def _clean(window: dict, key: str, limit: float) -> bool:
    value = window.get(key)
    return value is not None and value <= limit


def window_noise(pairs: list[WindowPair], higher_is_better: dict[str, bool]) -> list[tuple[str, int, float | None]]:
    """Rows (what, pairs, spread of their log ratios) that say where the windows' noise comes from: every pair by
    the wall clock; by each process's CPU time instead; and the pairs left by each discarding rule (neither
    window preempted by the scheduler, none with time stolen by the host, none beside another process's CPU)."""
    rules = (
        ("every pair, wall clock", lambda p: True, False),
        ("every pair, each process's CPU time as its clock", lambda p: True, True),
        ("neither window had an involuntary context switch", lambda p: p.base["switches"] == 0 == p.candidate["switches"], False),
        ("neither window had steal time", lambda p: _clean(p.base, "steal_s", 0) and _clean(p.candidate, "steal_s", 0), False),
        ("no other process took CPU during either window (ticks of 10 ms)",
         lambda p: _clean(p.base, "others_cpu_s", 0.01) and _clean(p.candidate, "others_cpu_s", 0.01), False),
    )
    rows = []
    for what, keep, by_cpu in rules:
        kept = [p for p in pairs if keep(p)]
        logs = [p.cpu_clock(higher_is_better[p.figure]) if by_cpu else p.log_ratio for p in kept]
        rows.append((what, len(kept), robust_spread(logs)))
    return rows


def rank_correlation(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rank correlation of two equally long lists (scipy's); None when either is constant or shorter
    than 3."""
    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    from scipy.stats import spearmanr

    return float(spearmanr(xs, ys).statistic)


def followed_by(pairs: list[WindowPair]) -> list[tuple[str, float | None]]:
    """How strongly the size of a pair's log ratio follows the difference between its windows in each condition
    (Spearman's rank correlation of |log ratio| with |difference|)."""
    size = [abs(p.log_ratio) for p in pairs]

    def difference(key: str) -> list[float]:
        return [abs((p.candidate.get(key) or 0) - (p.base.get(key) or 0)) for p in pairs]

    busy = [abs(p.candidate["cpu_s"] / p.candidate["wall_s"] - p.base["cpu_s"] / p.base["wall_s"]) for p in pairs]
    return [
        ("involuntary context switches", rank_correlation(difference("switches"), size)),
        ("steal time", rank_correlation(difference("steal_s"), size)),
        ("other processes' CPU time", rank_correlation(difference("others_cpu_s"), size)),
        ("CPU time / wall time (threads kept busy)", rank_correlation(busy, size)),
    ]
