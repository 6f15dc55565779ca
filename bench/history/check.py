"""`archbench history check`: the steps of every series, each with its commit range, size and interval, judged by
the tolerances `archbench compare` uses, and the verdict the gate needs: whether any series' newest segment is worse
than the one before it beyond its tolerance.

A change is judged as compare judges one: a cost by its relative change (after / before - 1), a quality figure by
its difference in the figure's shown units (accuracy points); beyond the tolerance on the worse side it is
`regressed` (a step is significant by construction: bench.history.steps), on the better side `improved`, else
`within tolerance`; a tolerance of false leaves it `unjudged`. A confirmation by the paired A/B
(bench.history.verdicts) is shown beside the step it names.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from ..gate.compare import Tolerances
from . import steps
from .series import Series


@dataclass(frozen=True, kw_only=True)
class Step:
    """A step of `series` between its points `change.at - 1` and `change.at`."""

    series: Series
    change: steps.Change
    verdict: str

    @property
    def before_commit(self) -> str:
        """The last commit measured before the step."""
        return self.series.points[self.change.at - 1].commit

    @property
    def after_commit(self) -> str:
        """The first commit measured after it: the step happened in (before_commit, after_commit]."""
        return self.series.points[self.change.at].commit

    @property
    def newest(self) -> bool:
        """Whether the step leads into the series' newest segment."""
        return self.change.end == len(self.series.points)

    @property
    def name(self) -> str:
        """How `history confirm` is told which step: ARCH:MODE:FIGURE@BEFORE..AFTER (10 hex digits each)."""
        key = self.series.key
        return f"{key.architecture}:{key.mode}:{key.figure}@{self.before_commit[:10]}..{self.after_commit[:10]}"

    def medians(self) -> tuple[float, float]:
        """The medians of the points before and after the step, within its two segments."""
        values = [p.value for p in self.series.points]
        change = self.change
        return statistics.median(values[change.start:change.at]), statistics.median(values[change.at:change.end])

    def estimate(self) -> tuple[float, float, float]:
        """The change with its 95% interval: a ratio after / before for costs, a difference for quality."""
        c = self.change
        if self.series.relative:
            return math.exp(c.difference), math.exp(c.low), math.exp(c.high)
        return c.difference, c.low, c.high

    def describe(self) -> str:
        """The change as a line shows it: "0.931 [0.912, 0.950]" or "-1.20 pts [-1.6, -0.8]"."""
        value, low, high = self.estimate()
        if self.series.relative:
            return f"{value:.3f} [{low:.3f}, {high:.3f}]"
        figure = self.series.figure
        scale, unit = figure.scale, figure.unit
        return f"{value * scale:+.2f}{unit} [{low * scale:+.2f}, {high * scale:+.2f}]"


def steps_of(series: Series, tolerances: Tolerances) -> list[Step]:
    """The steps found in `series`, oldest first, each judged."""
    if len(series.points) < 2 * steps.MIN_RUN:
        return []
    changes = steps.find(series.scaled(), [p.spread for p in series.points])
    return [Step(series=series, change=c, verdict=judge(series, c, tolerances)) for c in changes]


def judge(series: Series, change: steps.Change, tolerances: Tolerances) -> str:
    """`regressed`, `improved`, `within tolerance` or `unjudged`, as the module's docstring says."""
    figure, name = series.figure, series.key.architecture
    tolerance = tolerances.of(name, figure.key)
    if tolerance is False or tolerance is None:
        return "unjudged"
    if series.relative:
        shift = math.exp(change.difference) - 1
    else:
        shift = change.difference * figure.scale
    floor = tolerances.of(name, figure.floor) if figure.floor else None
    if abs(shift) <= tolerance:
        return "within tolerance"
    if floor not in (None, False) and series.relative:
        before = statistics.median(p.value for p in series.points[change.start:change.at])
        if abs(before * shift) < floor:
            return "within tolerance"
    worse = shift < 0 if figure.higher_is_better else shift > 0
    return "regressed" if worse else "improved"


def failing(found: list[Step], series: list[Series]) -> list[Step]:
    """The steps that fail `history check`: `regressed`, into the newest segment of a series that is current (it
    reaches the newest commit its machine has measured; a series that stopped there, such as one of an older
    record version, only shows its steps)."""
    newest: dict[str, int] = {}
    for s in series:
        if s.points:
            newest[s.key.machine] = max(newest.get(s.key.machine, -1), s.points[-1].position)
    return [
        step for step in found
        if step.newest and step.verdict == "regressed" and step.series.points[-1].position == newest[step.series.key.machine]
    ]
