"""How a task's figures are judged and shown: `Figure` (what the gates judge), `Number` and `Column` (how a figure
is written in a table) and `Table` (the report table a task's records appear in, ranked by its quality figure).

Plain data: this module imports nothing, so that the task table, reading results and the gates stay light.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Figure:
    """A judged figure: `quality` (absolute `tolerance` in `unit` after `scale`), `cost` (relative, timed: the A/B
    gate pairs it), `structure` (exact).

    `repeats` names the record key holding every repeat (the spread); `speed` figures are divided by the
    reference architecture's from the same run; `floor` names the tolerance of an absolute change below which a
    cost change is "ok". A quality figure's `tolerance` is compare's default for it (a tolerances file may
    override it, as bench/gate/tolerances.toml does the costs')."""

    key: str
    kind: str
    higher_is_better: bool = True
    scale: float = 1.0
    unit: str = ""
    repeats: str | None = None
    speed: bool = False
    floor: str | None = None
    tolerance: float | None = None


@dataclass(frozen=True)
class Number:
    """How a figure is shown: scaled, then to fixed `decimals` or to `significant` figures; std alike."""

    scale: float = 1.0
    decimals: int | None = None
    significant: int = 3

    def __call__(self, mean: Any, std: Any = None) -> str:
        if not _finite(mean):
            return ""
        value = mean * self.scale
        decimals = self.decimals
        if decimals is None:
            magnitude = math.floor(math.log10(abs(value))) if value else 0
            decimals = max(0, self.significant - 1 - magnitude)
        text = f"{value:.{decimals}f}"
        if _finite(std):
            text += f" ± {std * self.scale:.{decimals}f}"
        return text


@dataclass(frozen=True)
class Column:
    """A table's column: the record key it shows, its header and how its figures are written."""

    key: str
    header: str
    number: Number


@dataclass(frozen=True, kw_only=True)
class Table:
    """The report table a task's records appear in (tasks may share one: the generators'): its `name` and `title`,
    the quality `figure` it ranks rows by (Pareto fronts, plots, the summary lines under it) with how that figure
    is named (`quality_name`) and labelled on an axis (`quality_label`), its `columns`, whether a task column tells
    its tasks apart, the per-epoch curve plotted (`curve`), the record key of its parameter count and of its sample
    images."""

    name: str
    title: str
    figure: Figure
    quality_name: str
    quality_label: str
    columns: tuple[Column, ...]
    show_task: bool = False
    curve: str | None = None
    curve_label: str = ""
    params_key: str = "params"
    samples_key: str | None = None

    @property
    def quality(self) -> str:
        """The record key of the quality figure."""
        return self.figure.key

    @property
    def higher_is_better(self) -> bool:
        return self.figure.higher_is_better

    @property
    def quality_scale(self) -> float:
        return self.figure.scale


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


SIG3, PERCENT, MILLIONS = Number(), Number(100, decimals=1), Number(1e-6, decimals=2)

# The cost columns any table may show (a task's, a plugin task's, the speed sweep's), headed the same in each.
FLOPS = Column("flops_per_sample", "FLOPs/sample (M)", Number(1e-6))
TRAIN = Column("train_throughput", "train (samples/s)", SIG3)
TRAIN_UTILIZATION = Column("train_utilization", "train % peak", PERCENT)
INFER = Column("infer_throughput", "infer (samples/s)", SIG3)
LATENCY_P50 = Column("latency_p50_ms", "latency p50 (ms)", SIG3)
PEAK_MEMORY = Column("peak_memory_mb", "train peak mem (MB)", SIG3)
TRAIN_TIME = Column("train_time_s", "train time (s)", SIG3)
