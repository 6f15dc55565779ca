"""Records -> rows: each configuration aggregated over its seeds, and the Pareto front of each table.

Read by report (tables and pages), plots (figures) and compare (the regression gate); it renders
nothing itself. Records of one configuration (same
architecture and `config_id`: task, data, device and settings) from any number of seeds or runs become
one `Row` with mean, standard deviation, 95% confidence interval and the number of seeds. Differences between
rows are taken per seed where they share seeds (bench.stats); the Pareto front marks rows that no other row
beats significantly on both quality and speed.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from .. import stats
from .records import comparable, named, point, versions
from ..tasks import TASKS, tables

COST_KEY, COST_LABEL = "train_throughput", "training throughput (samples/s)"
# A record was measured under load when other processes took more than this share of the machine's CPU meanwhile.
LOADED_SHARE = 0.10
# The timed windows' training throughput should agree with the training loop's own clock within this.
CLOCK_AGREEMENT = 0.10


SPEED = "speed"  # the table of `archbench speed`'s records, whatever their task: cost figures only


@dataclass(kw_only=True)
class Row:
    """One configuration of one architecture, aggregated over its records."""

    task: str
    dataset: str
    architecture: str
    records: list[dict[str, Any]] = field(default_factory=list)
    pareto: bool = False
    stepped_down_from: int | None = None  # set by `fold_step_downs`

    @property
    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("status") == "ok"]

    @property
    def seeds(self) -> int:
        return len(self.ok)

    @property
    def out_of_memory(self) -> bool:
        """Whether every record of the row failed out of memory (a speed sweep's step-down attempt)."""
        return bool(self.records) and all(r.get("status") != "ok" and r.get("out_of_memory") for r in self.records)

    @property
    def mode(self) -> str:
        """The mode (bench.measure.modes) the row's records ran in; records from before modes ran in fp32."""
        return (self.records[0].get("mode") if self.records else None) or "fp32"

    @property
    def point(self) -> tuple[int, int] | None:
        """(image size, batch size) of a speed sweep's row (bench.results.records.point), None for a run's."""
        return point(self.records[0]) if self.records else None

    @property
    def label(self) -> str:
        """The architecture, with its mode unless that is fp32 and its point if a speed sweep's: how a row is named
        outside a table."""
        return named(self.architecture, self.mode, self.point)

    @property
    def config_id(self) -> Any:
        return self.records[0].get("config_id") if self.records else None

    @property
    def record_versions(self) -> tuple[int, ...]:
        """The record versions among the row's records, ascending (one, unless runs of two versions were pooled)."""
        return versions(self.records)

    def comparable(self, other: Row) -> bool:
        """Whether the two rows' figures may be compared (bench.results.records.comparable decides)."""
        return comparable(self.records, other.records)

    def mean(self, key: str) -> float | None:
        values = self.values(key)
        return statistics.fmean(values) if values else None

    def std(self, key: str) -> float | None:
        """Sample standard deviation over seeds; None with fewer than two."""
        values = self.values(key)
        return statistics.stdev(values) if len(values) >= 2 else None

    def interval(self, key: str) -> stats.Interval | None:
        """The mean over seeds with its 95% Student t interval; None with fewer than two seeds."""
        return stats.mean_interval(self.values(key))

    def by_seed(self, key: str) -> dict[int, float]:
        """`key` per seed (the mean where several records share a seed)."""
        found: dict[int, list[float]] = {}
        for record in self.ok:
            if finite(record.get(key)):
                found.setdefault(record.get("seed"), []).append(record[key])
        return {seed: statistics.fmean(values) for seed, values in found.items()}

    def difference(self, other: Row, key: str) -> stats.Interval | None:
        """mean(self) - mean(other) of `key` with its 95% interval, paired by seed where they share two or more."""
        return stats.difference(self.by_seed(key), other.by_seed(key))

    def status(self) -> str:
        if self.seeds == len(self.records):
            return "ok"
        failures = [r for r in self.records if r.get("status") != "ok"]
        first = failures[0]
        what = f"{first.get('status')}: {_first_line(first.get('error'))}"
        return what if not self.ok else f"{self.seeds}/{len(self.records)} ok; {what}"

    def values(self, key: str) -> list[float]:
        return [r[key] for r in self.ok if finite(r.get(key))]


def aggregate(records: list[dict[str, Any]]) -> list[Row]:
    """Records grouped by (task, dataset, architecture, config_id), in the order first seen; Pareto fronts marked."""
    rows: dict[tuple, Row] = {}
    for record in records:
        key = (record.get("task"), record.get("dataset"), record.get("architecture"), record.get("config_id"))
        if key not in rows:
            rows[key] = Row(task=str(key[0]), dataset=str(key[1]), architecture=str(key[2]))
        rows[key].records.append(record)
    result = list(rows.values())
    known = tables()
    for (name, _), group in task_groups(result).items():
        if name in known:
            mark_pareto(group, known[name].quality, known[name].higher_is_better)
    return result


def fold_step_downs(rows: list[Row]) -> tuple[list[Row], list[Row]]:
    """A speed table's rows with each step-down as one row, and the rows folded into them, both in order.

    Per architecture, mode, dataset and image size, the rows whose records all ran out of memory fold into the
    row of the largest batch that fits below them, or where none fits, into the smallest batch's, which stays
    failed; that row's `stepped_down_from` is the largest batch that ran out of memory, the one first asked for.
    Rows of a run's records (no speed point) are kept as they are."""
    subjects: dict[tuple, list[Row]] = {}
    for row in rows:
        if row.point:
            subjects.setdefault((row.task, row.dataset, row.architecture, row.mode, row.point[0]), []).append(row)
    folded: list[Row] = []
    for group in subjects.values():
        failed = [row for row in group if row.out_of_memory]
        if not failed:
            continue
        smallest = min(failed, key=_batch)
        into = max((row for row in group if row.ok and _batch(row) < _batch(smallest)), key=_batch, default=smallest)
        into.stepped_down_from = max(_batch(row) for row in failed)
        folded += [row for row in failed if row is not into]
    ids = {id(row) for row in folded}
    return [row for row in rows if id(row) not in ids], [row for row in rows if id(row) in ids]


def _batch(row: Row) -> int:
    return row.point[1]


def reference_rows(rows: list[Row]) -> dict[str, Row]:
    """Per architecture, the row of the first mode it appears in among `rows` (a suite's first mode, since
    runs record the modes in the suite's order): what other modes of it are compared with."""
    first: dict[str, Row] = {}
    for row in rows:
        first.setdefault(subject(row), row)
    return first


def subject(row: Row) -> str:
    """What a row measures, modes aside: its architecture, at its point for a speed sweep's row."""
    return named(row.architecture, None, row.point)


def mark_pareto(rows: list[Row], quality: str, higher_is_better: bool, cost: str = COST_KEY) -> None:
    """Set `row.pareto` for rows that no other row beats on both quality and `cost` (higher cost key = cheaper).

    Where both rows have two or more seeds, beating means significantly better (the 95% interval of the
    difference excludes zero), so rows within each other's noise tie and share the front; otherwise the means
    decide (better or equal on both, better on one). Rows of different record versions are not comparable and
    never beat each other: each version has its own front."""
    usable = [row for row in rows if finite(row.mean(quality)) and finite(row.mean(cost))]
    for row in usable:
        row.pareto = not any(beats(other, row, quality, higher_is_better, cost) for other in usable if other is not row)


def beats(a: Row, b: Row, quality: str, higher_is_better: bool, cost: str = COST_KEY) -> bool:
    """Whether row `a` is better than row `b` on both quality and cost (see `mark_pareto`)."""
    if not a.comparable(b):
        return False
    signs = {quality: 1 if higher_is_better else -1, cost: 1}
    if a.seeds >= 2 and b.seeds >= 2:
        found = {key: a.difference(b, key) for key in signs}
        if all(found.values()):
            return all(found[key].significant and sign * found[key].estimate > 0 for key, sign in signs.items())
    deltas = [sign * (a.mean(key) - b.mean(key)) for key, sign in signs.items()]
    return all(d >= 0 for d in deltas) and any(d > 0 for d in deltas)


def task_groups(rows: list[Row]) -> dict[tuple[str, str], list[Row]]:
    """Rows by (table, dataset): `table_of` each."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((table_of(row), row.dataset), []).append(row)
    return groups


def table_of(row: Row) -> str:
    """The name of the table a row belongs in: `speed` for a speed sweep's, else its task's (generators share one),
    else, for a task no entry describes, the task itself."""
    if row.point:
        return SPEED
    return TASKS[row.task].table.name if row.task in TASKS else row.task


def finite(value: Any) -> bool:
    """Whether `value` is a real, finite number (not a bool, None, NaN or infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _first_line(text: Any, limit: int = 60) -> str:
    line = str(text or "").splitlines()[0] if text else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"
