"""The regression gate: a candidate run against a baseline run, figure by figure, without false alarms.

Records are matched by architecture and configuration (the rows of `aggregate.aggregate`). What the
baseline has and the candidate lacks fails the gate, never passes it silently: a configuration absent
from the candidate, or a figure the candidate's row does not carry, is "missing"; rows whose records
have different `record_version`s are "not comparable" and their figures are not judged. Quality is
compared with absolute tolerances, costs with relative ones, parameters and FLOPs exactly. A change in
throughput or latency is first divided by the machine's: by default the median candidate/baseline ratio
of that figure over every architecture compared on the dataset, which no single disturbed measurement can
move, so a slower or busier machine is not a regression; or, with a named `reference`, that one
architecture's ratio (its own speed then shown raw, verdict "reference", unjudged). A change beyond its
tolerance counts only when it is outside the measured spread (interquartile range) of both runs and,
where both have 5 or more repeats, significant by a Mann-Whitney U test. Otherwise it is "noise". A
figure whose tolerance is `false` is shown with its change but "unjudged": taken out of the gate on purpose.
"""

from __future__ import annotations


import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Collection

from tabulate import tabulate

from .. import tomlfile
from .. import stats
from ..errors import UserError
from ..results.aggregate import Row, aggregate
from ..results.records import versions_text
from ..tasks import TASKS, figures
from ..tasks.figures import Figure, Number

DEFAULT_TOLERANCES = Path(__file__).parent / "tolerances.toml"
MEDIAN = "median"  # the `reference` that stands for every architecture compared
FAILING = ("regressed", "missing", "not comparable")  # the verdicts that fail the gate
VERDICTS = ("regressed", "missing", "not comparable", "improved", "noise", "noise (not reproduced)", "ok",
            "accepted", "reference", "unjudged")  # in the order the summary counts them


@dataclass(frozen=True, kw_only=True)
class Tolerances:
    """Tolerances by figure key, per architecture over the defaults; `False` means shown but not judged."""

    reference: str
    alpha: float
    default: dict[str, float | bool]
    architectures: dict[str, dict[str, float | bool]] = field(default_factory=dict)

    def of(self, architecture: str, key: str) -> float | bool | None:
        return self.architectures.get(architecture, {}).get(key, self.default.get(key))


@dataclass(frozen=True, kw_only=True)
class Line:
    architecture: str
    figure: str
    baseline: str
    candidate: str
    change: str
    verdict: str


@dataclass(kw_only=True)
class Comparison:
    lines: list[Line]
    only_in_baseline: list[str]
    only_in_candidate: list[str]
    reference: str
    machine: dict[tuple[str, str], float] = field(default_factory=dict)  # (dataset, figure) -> speed factor

    @property
    def regressions(self) -> list[Line]:
        return [line for line in self.lines if line.verdict == "regressed"]

    @property
    def failures(self) -> list[Line]:
        """The lines that fail the gate: regressed, missing or not comparable."""
        return [line for line in self.lines if line.verdict in FAILING]


def load_tolerances(path: Path | None = None, architectures: Collection[str] | None = None) -> Tolerances:
    """The default tolerances, with those of `path` (a TOML file of the same shape) on top.

    Every mistake in `path` is a UserError naming the file and the key: an unknown key or figure, a value
    that is not a non-negative number or false, `reference` not a string, `alpha` outside (0, 1), and, when
    `architectures` (the names in the runs compared) is given, an `[architecture.NAME]` for a name in none of them.
    """
    table = tomlfile.read(DEFAULT_TOLERANCES, "tolerances file")
    quality = {f.key: f.tolerance for f in figures() if f.tolerance is not None}  # the task table's (bench.tasks)
    table["default"] = {**quality, **table["default"]}
    if path is not None:
        override = tomlfile.read(path, "tolerances file")
        unknown = set(override) - {"reference", "alpha", "default", "architecture"}
        if unknown:
            raise UserError(f"{path}: unknown key {sorted(unknown)[0]!r} (valid: reference, alpha, [default], [architecture.NAME])")
        _check_table(path, "default", override.get("default", {}))
        sections = override.get("architecture", {})
        if not isinstance(sections, dict):
            raise UserError(f"{path}: 'architecture' must be tables [architecture.NAME], got {_toml_kind(sections)}")
        for name, section in sections.items():
            _check_table(path, f"architecture.{name}", section)
            if architectures is not None and name not in architectures:
                raise UserError(
                    f"{path}: [architecture.{name}]: no architecture {name!r} in the runs compared "
                    f"(they hold: {', '.join(sorted(architectures)) or 'none'})"
                )
        table["default"] = {**table["default"], **override.get("default", {})}
        table["architecture"] = {**table.get("architecture", {}), **sections}
        table.update({k: override[k] for k in ("reference", "alpha") if k in override})
    else:
        _check_table(DEFAULT_TOLERANCES, "default", table["default"])
        for name, section in table.get("architecture", {}).items():
            _check_table(DEFAULT_TOLERANCES, f"architecture.{name}", section)
    source = path or DEFAULT_TOLERANCES
    reference, alpha = table["reference"], table["alpha"]
    if not isinstance(reference, str):
        raise UserError(
            f"{source}: reference must be a string, {MEDIAN!r} or an architecture's name, got {_toml_kind(reference)}"
        )
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise UserError(f"{source}: alpha must be a number between 0 and 1 (exclusive), got {alpha!r}")
    return Tolerances(
        reference=reference, alpha=float(alpha), default=table["default"], architectures=table.get("architecture", {})
    )


def check_accepted(accept: Collection[str], architectures: Collection[str]) -> None:
    """UserError for an `--accept` name that is in none of the runs compared."""
    for name in accept:
        if name not in architectures:
            raise UserError(
                f"--accept {name}: no architecture of that name in the runs compared "
                f"(they hold: {', '.join(sorted(architectures)) or 'none'})"
            )


def tolerance_keys() -> tuple[str, ...]:
    """The keys a tolerances table may hold: every judged figure's (bench.tasks.figures) and their floors'."""
    return tuple(dict.fromkeys([*(f.key for f in figures()), *(f.floor for f in figures() if f.floor)]))


def _check_table(path: Path, name: str, values: Any) -> None:
    """UserError unless `values` (the table [name] of `path`) maps known figures to non-negative numbers or false."""
    if not isinstance(values, dict):
        raise UserError(f"{path}: [{name}] must be a table of tolerances, got {_toml_kind(values)}")
    for key, value in values.items():
        if key not in tolerance_keys():
            raise UserError(f"{path}: [{name}]: unknown figure {key!r} (valid: {', '.join(tolerance_keys())})")
        if not (value is False or (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0)):
            raise UserError(
                f"{path}: [{name}] {key} = {value!r}: tolerances must be non-negative numbers, or false (shown, not judged)"
            )


def _toml_kind(value: Any) -> str:
    kinds = {dict: "a table", list: "an array", str: "a string", bool: "a boolean"}
    return kinds.get(type(value), f"{value!r}")


def compare(
    baseline: list[dict[str, Any]], candidate: list[dict[str, Any]], tolerances: Tolerances, accept: tuple[str, ...] = ()
) -> Comparison:
    """Every figure of every configuration of the baseline, judged against the candidate's.

    A configuration the candidate lacks is one "missing" line. Raises UserError when the runs have none in common.
    """
    unknown = sorted({r.get("task") for r in (*baseline, *candidate)} - set(TASKS))
    if unknown:
        raise UserError(f"records of task {unknown[0]!r}, which no entry of the task table describes (tasks: "
                        f"{', '.join(TASKS)}): give the plugin module that adds it with --arch-module")
    base_rows, cand_rows = _by_key(aggregate(baseline)), _by_key(aggregate(candidate))
    common = [key for key in base_rows if key in cand_rows]
    if not common:
        raise UserError("the two runs have no architecture and configuration in common")
    comparison = Comparison(
        lines=[],
        only_in_baseline=sorted({row.label for k, row in base_rows.items() if k not in cand_rows}),
        only_in_candidate=sorted({row.label for k, row in cand_rows.items() if k not in base_rows}),
        reference=tolerances.reference,
    )
    compared = sorted({key[2] for key in common})
    if tolerances.reference not in (MEDIAN, *compared):
        raise UserError(f"reference {tolerances.reference!r} is not in both runs (valid: {MEDIAN}, {', '.join(compared)})")
    comparable = [key for key in common if base_rows[key].comparable(cand_rows[key])]
    machine = _machine_factors(base_rows, cand_rows, comparable, tolerances.reference)
    comparison.machine = machine
    for key, base in base_rows.items():
        cand = cand_rows.get(key)
        if cand is None:
            comparison.lines.append(Line(
                architecture=base.label, figure="record", baseline=base.status(), candidate="absent", change="",
                verdict="missing",
            ))
            continue
        status = _version_line(base, cand) or _status_line(base, cand)
        if status:
            comparison.lines.append(replace(status, architecture=base.label))
            continue
        for figure in figures():
            line = _judge(figure, base, cand, machine.get((key[1], figure.key)), tolerances, accept)
            if line:
                comparison.lines.append(replace(line, architecture=base.label))
    return comparison


def reproduced(comparisons: list[Comparison]) -> Comparison:
    """The first comparison, its regressions kept only where every other (a rerun of the candidate) has them too.

    A disturbance of a shared machine rarely strikes the same figure twice; a real regression does. The
    others are shown as "noise (not reproduced)". What is "missing" or "not comparable" is no noise: it is
    kept as it is, and such a line of a later candidate that the first lacks is added, naming that candidate.
    """
    first = comparisons[0]
    everywhere = set.intersection(*({(l.architecture, l.figure) for l in c.regressions} for c in comparisons))
    lines = [
        replace(line, verdict="noise (not reproduced)")
        if line.verdict == "regressed" and (line.architecture, line.figure) not in everywhere
        else line
        for line in first.lines
    ]
    seen = {(line.architecture, line.figure, line.verdict) for line in lines}
    for number, other in enumerate(comparisons[1:], start=2):
        for line in other.lines:
            if line.verdict in FAILING[1:] and (line.architecture, line.figure, line.verdict) not in seen:
                seen.add((line.architecture, line.figure, line.verdict))
                lines.append(replace(line, candidate=f"{line.candidate} (candidate {number})"))
    return replace(first, lines=lines)


def render(comparison: Comparison) -> str:
    """The comparison as a markdown table, the architectures on one side only, and a one-line summary."""
    rows = [[l.architecture, l.figure, l.baseline, l.candidate, l.change, l.verdict] for l in comparison.lines]
    headers = ["architecture", "figure", "baseline", "candidate", "change", "verdict"]
    parts = [tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)]
    if comparison.only_in_candidate:
        parts.append(f"Only in the candidate (not compared): {', '.join(comparison.only_in_candidate)}")
    verdicts = [*VERDICTS, *sorted({l.verdict for l in comparison.lines} - set(VERDICTS))]
    counts = {v: sum(1 for l in comparison.lines if l.verdict == v) for v in verdicts}
    summary = ", ".join(f"{n} {verdict}" for verdict, n in counts.items() if n)
    factors = ", ".join(f"{figure} x{factor:.3g} on {dataset}" for (dataset, figure), factor in comparison.machine.items())
    source = (
        "the median candidate/baseline ratio over the architectures compared"
        if comparison.reference == MEDIAN
        else f"{comparison.reference}'s candidate/baseline ratio"
    )
    if factors:
        parts.append(f"Speed changes are divided by the machine's, {source}: {factors}.")
    if counts["unjudged"]:
        parts.append("unjudged: figures whose tolerance is false, shown but taken out of the gate.")
    parts.append(f"{summary}.")
    return "\n\n".join(parts)


def _judge(
    figure: Figure, base: Row, cand: Row, machine: float | None, tolerances: Tolerances, accept: tuple[str, ...]
) -> Line | None:
    b_center, c_center = base.mean(figure.key), cand.mean(figure.key)
    if b_center is None:
        return None
    name = base.architecture
    shown = Number(figure.scale) if figure.kind == "quality" else Number()
    if c_center is None:
        return Line(
            architecture=name, figure=figure.key, baseline=shown(b_center), candidate="absent", change="",
            verdict="missing",
        )
    texts = {"baseline": shown(b_center), "candidate": shown(c_center)}
    unjudged = tolerances.of(name, figure.key) is False
    if figure.kind == "structure":
        verdict = "unjudged" if unjudged else "ok" if b_center == c_center else "accepted" if name in accept else "regressed"
        change = "same" if verdict == "ok" else f"{c_center - b_center:+,.0f}"
        return Line(architecture=name, figure=figure.key, **texts, change=change, verdict=verdict)
    label, tolerance = figure.key, tolerances.of(name, figure.key)
    if figure.kind == "quality":
        b_values, c_values = base.values(figure.key), cand.values(figure.key)
        change = (c_center - b_center) * figure.scale
        change_text = f"{change:+.2f}{figure.unit}"
    else:
        b_values, c_values = _samples(base, figure), _samples(cand, figure)
        b_center, c_center = _center(b_values, b_center), _center(c_values, c_center)
        texts = {"baseline": shown(b_center), "candidate": shown(c_center)}
        if figure.speed and name == tolerances.reference:
            change = c_center / b_center - 1 if b_center else 0.0
            return Line(
                architecture=name, figure=f"{figure.key} (raw)", **texts, change=f"{change * 100:+.1f}%",
                verdict="reference",
            )
        if figure.speed and machine:
            c_values, c_center = [v / machine for v in c_values], c_center / machine
            label = f"{figure.key} ÷ {'machine' if tolerances.reference == MEDIAN else tolerances.reference}"
        change = c_center / b_center - 1 if b_center else 0.0
        change_text = f"{change * 100:+.1f}%"
    if unjudged:
        return Line(architecture=name, figure=label, **texts, change=change_text, verdict="unjudged")
    floor = tolerances.of(name, figure.floor) if figure.floor else None
    floor = None if floor is False else floor
    if tolerance is None or abs(change) <= tolerance or (floor is not None and abs(c_center - b_center) < floor):
        return Line(architecture=name, figure=label, **texts, change=change_text, verdict="ok")
    worse = change < 0 if figure.higher_is_better else change > 0
    verdict = "regressed" if worse else "improved"
    if not _significant(b_values, c_values, tolerances.alpha):
        verdict = "noise"
    return Line(architecture=name, figure=label, **texts, change=change_text, verdict=verdict)


def _significant(base: list[float], cand: list[float], alpha: float) -> bool:
    """Whether two samples of one figure differ beyond their noise.

    True without repeats to judge by. Otherwise each median must lie outside the other sample's
    interquartile range (its measured spread, robust to one hiccup among the repeats), and with 5 or
    more repeats on each side a two-sided Mann-Whitney U test must reject equality at `alpha`.
    """
    if len(base) < 2 or len(cand) < 2:
        return True
    b_mid, c_mid = statistics.median(base), statistics.median(cand)
    outside = not _within(c_mid, base) and not _within(b_mid, cand)
    if outside and len(base) >= 5 and len(cand) >= 5:
        return stats.mann_whitney_p(base, cand) < alpha
    return outside


def _within(value: float, sample: list[float]) -> bool:
    low, high = stats.quartiles(sample)
    return low <= value <= high


def _samples(row: Row, figure: Figure) -> list[float]:
    """Every repeat of every ok record of `row` for `figure`, or the per-record figures when none were kept."""
    pooled = [v for r in row.ok for v in (r.get(figure.repeats) or [])] if figure.repeats else []
    return pooled or row.values(figure.key)


def _center(values: list[float], fallback: float | None) -> float | None:
    return statistics.median(values) if values else fallback


def _version_line(base: Row, cand: Row) -> Line | None:
    """A "not comparable" line when the two rows' records are of different record versions."""
    if base.comparable(cand):
        return None
    return Line(
        architecture=base.architecture, figure="record_version", baseline=versions_text(base.record_versions),
        candidate=versions_text(cand.record_versions), change="", verdict="not comparable",
    )


def _status_line(base: Row, cand: Row) -> Line | None:
    if base.ok and not cand.ok:
        return Line(
            architecture=base.architecture, figure="status", baseline="ok", candidate=cand.status(), change="",
            verdict="regressed",
        )
    if not base.ok and cand.ok:
        return Line(
            architecture=base.architecture, figure="status", baseline=base.status(), candidate="ok", change="",
            verdict="improved",
        )
    if not base.ok and not cand.ok:
        return Line(
            architecture=base.architecture, figure="status", baseline=base.status(), candidate=cand.status(), change="",
            verdict="ok",
        )
    return None


def _by_key(rows: list[Row]) -> dict[tuple, Row]:
    return {(row.task, row.dataset, row.architecture, row.config_id): row for row in rows}


def _machine_factors(
    base_rows: dict[tuple, Row], cand_rows: dict[tuple, Row], common: list[tuple], reference: str
) -> dict[tuple[str, str], float]:
    """How much faster (or, for latency, slower) the candidate's machine ran each speed figure, per dataset.

    With `reference` MEDIAN: the median over the dataset's architectures of candidate/baseline, each side the
    median of its repeats. With an architecture's name: that architecture's ratio alone.
    """
    ratios: dict[tuple[str, str], list[float]] = {}
    for key in common:
        base, cand = base_rows[key], cand_rows[key]
        if not (base.ok and cand.ok) or (reference != MEDIAN and key[2] != reference):
            continue
        for figure in (f for f in figures() if f.speed):
            b, c = _center(_samples(base, figure), None), _center(_samples(cand, figure), None)
            if b and c:
                ratios.setdefault((key[1], figure.key), []).append(c / b)
    return {key: statistics.median(values) for key, values in ratios.items()}
