"""The series of a history: one per (machine, architecture, configuration, mode, record version, figure), its
points in the order of a branch's first-parent line, one point per commit.

A point is every record of its commit in that series pooled: the median of a cost over them, with the standard
error of a median window as its spread (relative); the mean of a quality figure over seeds, with the standard
error of that mean (absolute; none from a single seed). Records of other machines or other record versions are
other series: shown side by side, never mixed.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..tasks import figures
from ..tasks.figures import Figure
from . import store
from .commits import Line


@dataclass(frozen=True, kw_only=True)
class Key:
    machine: str
    architecture: str
    config_id: str
    mode: str
    record_version: int | None
    figure: str

    def name(self) -> str:
        """How output names the series: architecture, mode unless fp32, figure, configuration, record version."""
        mode = "" if self.mode == "fp32" else f" ({self.mode})"
        return f"{self.architecture}{mode} {self.figure} [{self.config_id}, v{self.record_version}]"


@dataclass(frozen=True, kw_only=True)
class Point:
    commit: str
    position: int | None  # on the line; None when the commit is off it
    value: float
    spread: float | None  # relative for costs, absolute for quality
    records: int
    runs: tuple[str, ...]


@dataclass(kw_only=True)
class Series:
    key: Key
    figure: Figure
    points: list[Point] = field(default_factory=list)  # on the line, oldest first
    off_line: list[Point] = field(default_factory=list)

    @property
    def relative(self) -> bool:
        """Whether its steps are ratios (costs, taken on logs) rather than differences (quality)."""
        return self.figure.kind == "cost"

    def scaled(self) -> list[float]:
        """The points' values on the scale steps are found on: logs for costs."""
        return [math.log(p.value) if self.relative else p.value for p in self.points]


def load(root: Path, line: Line) -> list[Series]:
    """Every series of the history at `root`, its points ordered by `line`, sorted by machine and name."""
    judged = {figure.key: figure for figure in figures() if figure.kind in ("quality", "cost")}
    grouped: dict[Key, dict[str, list[tuple[float, float | None, str]]]] = defaultdict(lambda: defaultdict(list))
    with store.index(root) as db:
        rows = db.execute(
            "SELECT r.machine, r.architecture, r.config_id, r.mode, r.record_version, f.figure, r.commit_id, r.run_id,"
            " f.value, f.spread FROM records r JOIN figures f USING (record_id) WHERE r.status = 'ok'"
        ).fetchall()
    for machine, architecture, config_id, mode, version, figure, commit, run_id, value, spread in rows:
        if figure not in judged or (judged[figure].kind == "cost" and not value > 0):
            continue
        key = Key(machine=machine, architecture=architecture, config_id=config_id, mode=mode, record_version=version,
                  figure=figure)
        grouped[key][commit].append((value, spread, run_id))
    found = []
    for key, by_commit in grouped.items():
        series = Series(key=key, figure=judged[key.figure])
        for commit, measured in by_commit.items():
            point = _point(commit, line.position(commit), measured, series.relative)
            (series.off_line if point.position is None else series.points).append(point)
        series.points.sort(key=lambda p: p.position)
        found.append(series)
    return sorted(found, key=lambda s: (s.key.machine, s.key.name()))


def _point(commit: str, position: int | None, measured: list[tuple[float, float | None, str]], relative: bool) -> Point:
    values = [value for value, _, _ in measured]
    runs = tuple(sorted({run for _, _, run in measured}))
    if relative:
        known = [spread for _, spread, _ in measured if spread is not None]
        spread = math.sqrt(statistics.fmean(s * s for s in known) / len(known)) if known else None
        value = statistics.median(values)
    else:
        value = statistics.fmean(values)
        spread = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None
    return Point(commit=commit, position=position, value=value, spread=spread, records=len(values), runs=runs)
