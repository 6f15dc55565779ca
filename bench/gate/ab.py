"""The paired speed gate: two revisions measured on this machine, alternating, in fresh processes.

`archbench ab BASE [CANDIDATE]` checks each revision out into a temporary git worktree (CANDIDATE defaults to
the working tree as it is, uncommitted changes included) and measures the selected architectures' cost
figures with each side's own code: `python -m bench.probe` run inside that side's checkout (its `bench/`, its
`architectures/`, its suites; plugin modules given as relative paths are that side's files). Measurements
alternate in rounds, A B, B A, A B, ..., each side in a fresh process, so that what drifts on the machine
(load, clocks, thermal state) touches both sides alike; within a round the two processes take turns window by
window where both sides' probes can (probe version 2). Every figure is judged on the per-round paired ratios
candidate / base: their median, and a distribution-free 95% interval for their center (Wilcoxon signed-rank,
on log ratios). A figure is `regressed` only when the whole interval lies beyond the tolerance, `improved`
symmetrically, `ok` when it reaches past the tolerance on neither side or only on the better one, and
`inconclusive` when it reaches past it on the worse side only in part, which buys more rounds within the time
budget: what a gate asks is whether the candidate is worse. Parameters and FLOPs must be equal (`changed` otherwise).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tabulate import tabulate

from ..results.aggregate import finite
from ..tasks import COMMON_FIGURES
from ..stats import ratio_interval
from .checkouts import Side, checkouts  # noqa: F401  (re-exported: the gate's sides come from here)
from .probes import Measurer, Request, probe_measurer  # noqa: F401  (re-exported: so does the way it measures them)

TOLERANCE = 0.05  # throughput and latency
# A CPU's peak memory is the process's resident set (bench.measure.memory.peak_memory): 0.85 to 1.20 from one fresh
# process to the next for unchanged code on this kind of VM, so it gets a tolerance of its own.
MEMORY_TOLERANCE = 0.20
MIN_ROUNDS = 6  # the fewest paired ratios for which the signed-rank interval at 95% is finite
# (figure, higher is better) judged on paired ratios: the task table's cost figures; EXACT figures must be equal.
TIMED = tuple((figure.key, figure.higher_is_better) for figure in COMMON_FIGURES if figure.kind == "cost")
EXACT = tuple(figure.key for figure in COMMON_FIGURES if figure.kind == "structure")
MEMORY = ("peak_memory_mb",)
FAILING = ("regressed", "changed", "failed")


@dataclass(kw_only=True)
class Line:
    architecture: str
    figure: str
    base: float | None
    candidate: float | None
    ratio: float | None = None
    low: float | None = None
    high: float | None = None
    verdict: str = "ok"
    pairs: int = 0
    unpaired: int = 0  # rounds whose windows could not be paired one by one: judged on the ratio of their medians
    higher_is_better: bool = True

    @property
    def worst(self) -> float | None:
        """How much worse the candidate may be, at most, by the interval's worse end: 0.03 for 3% (a throughput's
        low end at 0.97, a latency's high end at 1.03); None without an interval, inf where it is open."""
        if self.low is None or self.high is None:
            return None
        if self.higher_is_better:
            return 1 / self.low - 1 if self.low > 0 else math.inf
        return self.high - 1

    @property
    def floor(self) -> float | None:
        """The half-width of the interval on its better side, as a fraction: what its rounds cannot tell from no
        change. A slowdown is judged `regressed` only beyond the tolerance plus this."""
        if self.ratio is None or self.low is None or self.high is None:
            return None
        if self.higher_is_better:
            return self.high / self.ratio - 1 if math.isfinite(self.high) else math.inf
        return self.ratio / self.low - 1 if self.low > 0 else math.inf


@dataclass(kw_only=True)
class Result:
    lines: list[Line]
    rounds: int
    seconds: float
    order: list[str] = field(default_factory=list)  # the sides' labels in the order they were measured
    harness: dict[str, str] = field(default_factory=dict)  # side label -> the bench module that measured it
    measured: tuple[list[dict], list[dict]] = ([], [])  # each side's figures by architecture, round by round

    @property
    def failing(self) -> list[Line]:
        return [line for line in self.lines if line.verdict in FAILING]


def order_of_round(index: int) -> tuple[int, int]:
    """Which side goes first in round `index`: base, candidate; then candidate, base; and so on (A B B A A B ...)."""
    return (0, 1) if index % 2 == 0 else (1, 0)


@dataclass(frozen=True, kw_only=True)
class Rounds:
    """How many rounds to measure: at least `min_rounds`, at most `max_rounds`, none that would end past
    `budget_s`; with `until_budget` (calibration) every round the budget allows, settled or not; with `judged`
    (a bisection's probe), until that one figure is settled, whatever the others."""

    budget_s: float
    min_rounds: int = MIN_ROUNDS
    max_rounds: int = 40
    until_budget: bool = False
    judged: tuple[str, str] | None = None  # (architecture, figure) whose verdict alone ends the rounds; None: every one


def run(
    sides: tuple[Side, Side],
    measure: Measurer,
    tolerance: float,
    plan: Rounds,
    echo: Callable[[str], None] = lambda line: None,
    memory_tolerance: float = MEMORY_TOLERANCE,
) -> Result:
    """Alternating rounds (A B, B A, ...) until no timed figure is inconclusive, as far as `plan` allows."""
    started = time.monotonic()
    samples: tuple[list[dict], list[dict]] = ([], [])
    order: list[str] = []
    rounds = 0
    while True:
        first, second = order_of_round(rounds)
        measured = measure(sides[first], sides[second])
        for index, figures in zip((first, second), measured):
            samples[index].append(figures)
            order.append(sides[index].label)
        rounds += 1
        elapsed = time.monotonic() - started
        echo(f"round {rounds}: {elapsed:.0f} s")
        lines = judge(samples[0], samples[1], tolerance, memory_tolerance)
        if rounds < plan.min_rounds:
            continue
        settled = not any(
            line.verdict == "inconclusive" for line in lines
            if plan.judged is None or (line.architecture, line.figure) == plan.judged
        )
        if (
            rounds >= plan.max_rounds
            or (settled and not plan.until_budget)
            or elapsed * (rounds + 1) / rounds > plan.budget_s
        ):
            harness = {side.label: _harness(samples[i]) for i, side in enumerate(sides)}
            return Result(lines=lines, rounds=rounds, seconds=elapsed, order=order, harness=harness, measured=samples)


def _harness(rounds: list[dict]) -> str:
    files = {item.get("bench_file", "?") for measured in rounds for item in measured.values()}
    return ", ".join(sorted(str(Path(f).parent) for f in files))


def round_ratio(base: dict, candidate: dict, key: str) -> float | None:
    """Figure `key` of one round, candidate / base: the median of the ratios of their windows side by side where
    they pair (`paired_windows`), otherwise the ratio of the medians."""
    b, c = base.get(key), candidate.get(key)
    if not (_positive(b) and _positive(c)):
        return None
    pairs = paired_windows(base, candidate, key)
    if pairs:
        return statistics.median(y / x for x, y in pairs)
    return c / b


def paired_windows(base: dict, candidate: dict, key: str) -> list[tuple[float, float]] | None:
    """The two probes' windows of figure `key` side by side (base, candidate), or None where they do not pair:
    where the probes did not take turns, or their lists differ in length, or (where both say when each window
    started, `<key>_conditions`) the windows of a pair were not next to each other in time. Windows are never
    paired by position alone where their times say otherwise."""
    windows = base.get(f"{key}_repeats") or [], candidate.get(f"{key}_repeats") or []
    if not (base.get("turns") and candidate.get("turns") and windows[0] and len(windows[0]) == len(windows[1])):
        return None
    times = [[w.get("started") for w in side.get(f"{key}_conditions") or []] for side in (base, candidate)]
    if all(len(t) == len(windows[0]) and None not in t for t in times) and not _adjacent(*times):
        return None
    pairs = [(x, y) for x, y in zip(*windows) if _positive(x) and _positive(y)]
    return pairs or None


def _unpaired(base: dict, candidate: dict, key: str) -> bool:
    """Whether a round taken in turns has windows of `key` on both sides that `paired_windows` could not pair."""
    windows = base.get(f"{key}_repeats") and candidate.get(f"{key}_repeats")
    return bool(base.get("turns") and candidate.get("turns") and windows) and paired_windows(base, candidate, key) is None


def _adjacent(first: list[float], second: list[float]) -> bool:
    """Whether, in the time order of both lists' windows, window i of `first` and window i of `second` are next
    to each other for every i (the turns' order: first, second, first, second, ...)."""
    order = sorted([(t, 0, i) for i, t in enumerate(first)] + [(t, 1, i) for i, t in enumerate(second)])
    position = {(side, i): place for place, (_, side, i) in enumerate(order)}
    return all(abs(position[(0, i)] - position[(1, i)]) == 1 for i in range(len(first)))


def _positive(value: object) -> bool:
    return finite(value) and value > 0


def verdict(low: float, high: float, tolerance: float, higher_is_better: bool) -> str:
    """`regressed` when the whole ratio interval is worse than the tolerance, `improved` when it is better,
    `inconclusive` when only part of it is worse, `ok` otherwise: within the tolerance, or reaching past it on
    the better side only (more rounds would only tell ok from improved, which no gate needs)."""
    if higher_is_better:  # as a cost: >1 is worse
        low, high = (1 / high if high > 0 else math.inf), (1 / low if low > 0 else math.inf)
    if low > 1 + tolerance:
        return "regressed"
    if high < 1 - tolerance:
        return "improved"
    if high <= 1 + tolerance:
        return "ok"
    return "inconclusive"


def judge(
    base_rounds: list[dict], candidate_rounds: list[dict], tolerance: float, memory_tolerance: float = MEMORY_TOLERANCE
) -> list[Line]:
    """Every architecture's figures over the rounds so far (rounds where both sides measured it); peak memory
    against `memory_tolerance`, every other timed figure against `tolerance`."""
    lines = []
    names = list(dict.fromkeys(name for measured in base_rounds for name in measured))
    for name in names:
        pairs = [(b[name], c.get(name)) for b, c in zip(base_rounds, candidate_rounds) if name in b]
        ok = [(b, c) for b, c in pairs if c is not None and b["status"] == "ok" and c["status"] == "ok"]
        if not ok:
            broken = next((c for _, c in pairs if c is None or c["status"] != "ok"), None)
            base_broken = next((b for b, _ in pairs if b["status"] != "ok"), None)
            if base_broken is not None:
                lines.append(Line(architecture=name, figure="status", base=None, candidate=None, verdict="base failed"))
            else:
                error = "absent" if broken is None else broken.get("error")
                lines.append(Line(
                    architecture=name, figure=f"status: {error}", base=None, candidate=None, verdict="failed"
                ))
            continue
        for key in EXACT:
            b, c = ok[-1][0].get(key), ok[-1][1].get(key)
            if b is not None:
                lines.append(Line(
                    architecture=name, figure=key, base=b, candidate=c, verdict="ok" if b == c else "changed",
                    pairs=len(ok),
                ))
        for key, higher_is_better in TIMED:
            rounds = [(b, c, round_ratio(b, c, key)) for b, c in ok]
            unpaired = sum(1 for b, c, ratio in rounds if ratio is not None and _unpaired(b, c, key))
            rounds = [(b[key], c[key], ratio) for b, c, ratio in rounds if ratio is not None]
            if not rounds:
                continue
            median, low, high = ratio_interval([ratio for _, _, ratio in rounds])
            lines.append(Line(
                architecture=name, figure=key, base=statistics.median(b for b, _, _ in rounds),
                candidate=statistics.median(c for _, c, _ in rounds), ratio=median, low=low, high=high,
                verdict=verdict(low, high, memory_tolerance if key in MEMORY else tolerance, higher_is_better),
                pairs=len(rounds), unpaired=unpaired, higher_is_better=higher_is_better,
            ))
    return lines


# --- output ---------------------------------------------------------------------------------------------


def table(result: Result) -> str:
    rows = []
    for line in result.lines:
        if line.ratio is None:
            ratio = "" if line.base is None else ("same" if line.verdict == "ok" else f"{line.base:,.0f} -> {line.candidate:,.0f}")
        else:
            high = "inf" if math.isinf(line.high) else f"{line.high:.3f}"
            ratio = f"{line.ratio:.3f} [{line.low:.3f}, {high}]"
            ratio += f" ({line.unpaired} unpaired)" if line.unpaired else ""
        base = "" if line.base is None else f"{line.base:.4g}"
        candidate = "" if line.candidate is None else f"{line.candidate:.4g}"
        worst = "" if line.worst is None else "any" if math.isinf(line.worst) else f"{max(0.0, line.worst):.1%}"
        rows.append([line.architecture, line.figure, base, candidate, ratio, worst, line.verdict])
    headers = ["architecture", "figure", "base", "candidate", "ratio [95% CI]", "worse by at most", "verdict"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def resolution(result: Result) -> tuple[float | None, float | None]:
    """(worst, floor) over the timed figures but peak memory: how much worse, at most, any figure of the candidate
    is (the intervals' worse ends), and the widest floor (Line.floor): a slowdown beyond the tolerance plus it
    is `regressed`."""
    lines = [line for line in result.lines if line.worst is not None and line.figure not in MEMORY]
    if not lines:
        return None, None
    return max(line.worst for line in lines), max(line.floor for line in lines)


def noise_floor(result: Result) -> dict[str, float]:
    """Per timed figure, the widest distance of an interval's end from 1 over the architectures: the smallest
    tolerance at which every figure of this (A/A) comparison would have been judged `ok`."""
    floor: dict[str, float] = {}
    for line in result.lines:
        if line.low is not None and line.high is not None:
            width = max(1 - line.low, line.high - 1)
            floor[line.figure] = max(floor.get(line.figure, 0.0), width)
    return floor
