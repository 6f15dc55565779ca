"""Where a pair's time goes: the seconds of each phase (building, counting FLOPs, warming up, timing windows,
training, evaluating, FID, latency, ...), every second charged to exactly one phase.

`recording()` starts a clock for the block it wraps (one architecture in one mode at one seed); code anywhere
beneath marks its phases with `with phase("flops"):`, which does nothing while no clock runs. A phase inside
another is charged to the inner one only, so the phases add up to the block's wall time, the rest of it under
`other`. A phase opened with `absorb=True` keeps what runs inside it (the FID reference classifier's own
training and evaluation count as `fid_reference`). Seconds are host time: on CUDA, work queued in one phase
and waited for in another is charged to the second.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import bench

PHASES = (
    "startup", "build", "flops", "warmup", "windows", "memory", "loader", "train", "evaluate", "fid_reference", "fid_features",
    "fid_calibration", "latency", "peak", "other",
)  # the order a report lists them in; `startup` is the child process's, before its clock starts


class PhaseClock:
    """Seconds per phase since it was made, the innermost open phase charged; the outermost is `other`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._open: list[tuple[str, bool]] = [("other", False)]
        self._since = time.perf_counter()

    @contextlib.contextmanager
    def phase(self, name: str, absorb: bool = False) -> Iterator[None]:
        if self._open[-1][1]:
            yield
            return
        self._charge()
        self._open.append((name, absorb))
        try:
            yield
        finally:
            self._charge()
            self._open.pop()

    def totals(self) -> dict[str, float]:
        """The seconds of each phase so far, the open ones included, in PHASES' order."""
        self._charge()
        return {name: self.seconds[name] for name in sorted(self.seconds, key=_order)}

    def _charge(self) -> None:
        now = time.perf_counter()
        name = self._open[-1][0]
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._since
        self._since = now


_clock: PhaseClock | None = None


@contextlib.contextmanager
def recording() -> Iterator[PhaseClock]:
    """A fresh clock for the block, which `phase` charges until the block ends."""
    global _clock
    outer, _clock = _clock, PhaseClock()
    try:
        yield _clock
    finally:
        _clock = outer


def phase(name: str, absorb: bool = False) -> contextlib.AbstractContextManager[None]:
    """Charge the block's seconds to phase `name` of the running clock (nothing when none runs); with `absorb`,
    the phases opened inside it are charged to it too."""
    return _clock.phase(name, absorb) if _clock is not None else contextlib.nullcontext()


def summed(totals: dict[str, float], more: dict[str, float]) -> dict[str, float]:
    """`totals` and `more` summed phase by phase, in PHASES' order."""
    both = dict(totals)
    for name, seconds in more.items():
        both[name] = both.get(name, 0.0) + seconds
    return {name: both[name] for name in sorted(both, key=_order)}


@dataclass(kw_only=True)
class SuiteProfile:
    """Where an `archbench run` went: its pairs' phases summed (`add` each record as it is written) and the
    parent's own time around them: from the process's start to the first pair (`before_pairs_s`), handing
    each record back, writing it, and after the last (the report and plots). Pairs that ran at once
    (`--devices`) overlap: their sums exceed the wall time."""

    before_pairs_s: float | None = None
    phase_s: dict[str, float] = field(default_factory=dict)
    pair_wall_s: float = 0.0
    pairs: int = 0

    def add(self, record: dict) -> None:
        self.phase_s = summed(self.phase_s, record.get("phase_s") or {})
        self.pair_wall_s += record.get("pair_wall_s") or 0.0
        self.pairs += 1

    def render(self, total_s: float | None) -> str:
        """A table of seconds and shares, the phases first, then the parent's time; `total_s` is the process's
        age now (None: unknown, no shares and no after-pairs row)."""
        rows = [(f"  {name}", seconds) for name, seconds in self.phase_s.items()]
        rows.append(("  hand-back", max(0.0, self.pair_wall_s - sum(self.phase_s.values()))))
        if self.before_pairs_s is not None:
            rows.insert(0, ("before the first pair (imports, data)", self.before_pairs_s))
            if total_s is not None:
                after = total_s - self.before_pairs_s - self.pair_wall_s
                rows.append(("between and after the pairs (records, report, plots)", max(0.0, after)))
        total = total_s if total_s is not None else sum(seconds for _, seconds in rows)
        width = max(len(name) for name, _ in rows)
        lines = [f"where the time went ({self.pairs} pairs; phases summed over them):"]
        lines += [f"{name:<{width}}  {seconds:8.1f} s  {seconds / total:6.1%}" for name, seconds in rows]
        lines.append(f"{'total':<{width}}  {total:8.1f} s")
        return "\n".join(lines)


INTERPRETER_START_S = 5.0  # the most an interpreter can be said to take before it imports `bench`


def process_age_s() -> float:
    """Seconds since this process started, never negative: the seconds since it first imported `bench` (its
    own monotonic clock), plus the interpreter's start before that import as /proc counts it (the start time
    against the boot clock) only where /proc agrees, that is no less than the in-process figure and at most
    INTERPRETER_START_S more. Otherwise (no /proc, unreadable, or a start time that a virtual machine's clocks
    put far off) the in-process figure alone, short by what ran before the import. A forked child counts from
    its fork."""
    inside = max(0.0, time.monotonic() - bench.IMPORTED_AT)
    started, now = _proc_start_s(), _boot_clock_s()
    if started is not None and now is not None and inside <= now - started <= inside + INTERPRETER_START_S:
        return now - started
    return inside


def _proc_start_s() -> float | None:
    """The process's start in seconds since boot, from /proc/self/stat; None where it cannot be read."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of proc(5), counted after the name
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _boot_clock_s() -> float | None:
    """CLOCK_BOOTTIME now, the clock /proc's start times count on; None where there is none."""
    try:
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    except (OSError, AttributeError):
        return None


def _order(name: str) -> tuple[int, str]:
    return (PHASES.index(name), name) if name in PHASES else (len(PHASES), name)
