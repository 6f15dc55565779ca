"""Verdicts through the paired A/B gate (bench.gate.ab): a step of a history confirmed or dismissed by measuring the
two commits around it side by side on this machine, and the first bad commit of a range found by bisection with a
paired A/B at every probe.

A bisection asks at each probe whether a commit is slower than GOOD (always GOOD: a fixed reference, so that no
probe's verdict leans on another's), after first checking that BAD is. A probe whose figure stays inconclusive has
already bought rounds up to the budget (bench.gate.ab.run); the bisection then stops and says between which two
commits the first bad one lies. It takes at most ceil(log2 N) + 1 probes for N commits after GOOD.

Confirmations are kept in the history, one JSON line each (`CONFIRMATIONS`), and shown beside their step.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from ..errors import UserError
from ..gate import ab
from ..results.store import write_whole
from .commits import between

CONFIRMATIONS = "confirmations.jsonl"


@dataclass(frozen=True, kw_only=True)
class Probe:
    """One paired A/B of `commit` against `base`, for one architecture's figure: its ratio (candidate / base) with
    the 95% interval, the verdict, and what it cost."""

    base: str
    commit: str
    ratio: float | None
    low: float | None
    high: float | None
    verdict: str
    rounds: int
    seconds: float

    def describe(self) -> str:
        if self.ratio is None:
            return self.verdict
        return f"{self.ratio:.3f} [{self.low:.3f}, {self.high:.3f}] {self.verdict}"


@dataclass(frozen=True, kw_only=True)
class Target:
    """What a verdict is about, and how it is measured: the repository, the architecture and figure, how each side
    is measured, the tolerance and the rounds."""

    repo: Path
    architecture: str
    figure: str
    measure: ab.Measurer
    tolerance: float
    plan: ab.Rounds
    echo: Callable[[str], None] = lambda line: None


def probe(target: Target, base: str, commit: str) -> Probe:
    """`commit` against `base` by the paired A/B, its rounds ending once the target's figure is settled; a
    UserError when the architecture or figure is not measured."""
    plan = replace(target.plan, judged=(target.architecture, target.figure))
    with ab.checkouts(target.repo, base, commit) as sides:
        result = ab.run(sides, target.measure, target.tolerance, plan, echo=target.echo)
    lines = [line for line in result.lines if line.architecture == target.architecture]
    if lines and lines[0].verdict in ("failed", "base failed"):
        raise UserError(f"{target.architecture} could not be measured at {commit[:10]} or {base[:10]}: {lines[0].figure}")
    line = next((line for line in lines if line.figure == target.figure), None)
    if line is None:
        measured = sorted({line.figure for line in lines})
        raise UserError(
            f"the paired A/B measures no {target.figure} of {target.architecture}"
            + (f" (it measures: {', '.join(measured)})" if measured else " (no such architecture in the suite)")
        )
    return Probe(base=base, commit=sides[1].commit, ratio=line.ratio, low=line.low, high=line.high,
                 verdict=line.verdict, rounds=result.rounds, seconds=result.seconds)


@dataclass(frozen=True, kw_only=True)
class Bisection:
    """Where a bisection ended: the first bad commit (None when it could not tell), the range it narrowed the
    search to (the last commit known good, the first known bad), every probe in order, and why it stopped."""

    first_bad: str | None
    good: str
    bad: str
    probes: tuple[Probe, ...]
    reason: str
    seconds: float


def bisect(target: Target, good: str, bad: str) -> Bisection:
    """The first commit after `good` on `bad`'s first-parent line that is slower than `good` (the module's
    docstring says how)."""
    started = time.monotonic()
    commits = between(target.repo, good, bad)
    probes = [probe(target, good, commits[-1])]
    target.echo(f"probe 1: {commits[-1][:10]} (BAD) {probes[-1].describe()}")
    low, high = -1, len(commits) - 1  # commits[low] is known good (-1: GOOD itself), commits[high] known bad

    def ended(first_bad: str | None, reason: str) -> Bisection:
        return Bisection(
            first_bad=first_bad, good=good if low < 0 else commits[low], bad=commits[high], probes=tuple(probes),
            reason=reason, seconds=time.monotonic() - started,
        )

    if probes[0].verdict != "regressed":
        return ended(None, f"BAD is not slower than GOOD beyond the tolerance ({probes[0].verdict}): nothing to bisect")
    while high - low > 1:
        middle = (low + high) // 2
        probes.append(probe(target, good, commits[middle]))
        target.echo(f"probe {len(probes)}: {commits[middle][:10]} {probes[-1].describe()}")
        verdict = probes[-1].verdict
        if verdict == "regressed":
            high = middle
        elif verdict in ("ok", "improved"):
            low = middle
        else:
            since = good if low < 0 else commits[low]
            return ended(None, f"{commits[middle][:10]} stayed {verdict} within the budget (raise --budget or "
                               f"--tolerance); the first bad commit lies after {since[:10]} up to {commits[high][:10]}")
    return ended(commits[high], "found")


def probes_needed(commits: int) -> int:
    """The most probes a bisection of `commits` commits after GOOD takes."""
    return math.ceil(math.log2(commits)) + 1 if commits > 1 else 1


def confirm(target: Target, name: str, before: str, after: str, regression: bool, root: Path, machine: str) -> dict:
    """The two commits around a step measured side by side: `confirmed` when the A/B agrees with the step's
    direction (`regression`), `dismissed` when it finds the figure within the tolerance, `unresolved` when its
    rounds could not tell; filed into the history at `root` and returned."""
    measured = probe(target, before, after)
    agrees = measured.verdict == ("regressed" if regression else "improved")
    state = "confirmed" if agrees else "unresolved" if measured.verdict == "inconclusive" else "dismissed"
    entry = {
        "step": name, "state": state, "machine": machine, "figure": target.figure, "tolerance": target.tolerance,
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **asdict(measured),
    }
    path = root / CONFIRMATIONS
    kept = path.read_text() if path.is_file() else ""
    write_whole(path, kept + json.dumps(entry) + "\n")
    return entry


def confirmations(root: Path) -> dict[str, dict]:
    """The latest confirmation of each step filed in the history at `root`, by step name."""
    path = root / CONFIRMATIONS
    if not path.is_file():
        return {}
    latest = {}
    for line in path.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            latest[entry["step"]] = entry
    return latest
