"""The conditions one timed window ran under: its wall time, this process's CPU time over it, the involuntary context
switches it suffered, the time the host stole from the machine's CPUs and the CPU time other processes took.

`Window.start()` and `.stop()` read the process's counters (resource, time) and /proc/stat: a few tens of
microseconds, well inside a window of 50 ms or more. Where /proc/stat is missing (not Linux), the machine-wide
figures are None.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, kw_only=True)
class Counters:
    """The counters a window is read between (seconds, except `switches`)."""

    wall: float
    cpu: float
    switches: int
    steal: float | None
    busy: float | None  # the machine's busy CPU seconds since boot, every process's


@dataclass(frozen=True, kw_only=True)
class Conditions:
    """What one window ran under: `started` (time.monotonic, comparable between the processes of one machine),
    `wall_s`, `cpu_s` (this process, all its threads), `switches` (involuntary context switches: the scheduler took
    a CPU from one of its threads), `steal_s` (the host ran something else on the machine's CPUs), `others_cpu_s`
    (CPU seconds of every other process)."""

    started: float
    wall_s: float
    cpu_s: float
    switches: int
    steal_s: float | None
    others_cpu_s: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def read() -> Counters:
    switches = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
    steal = busy = None
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        steal = fields[7] / _TICKS if len(fields) > 7 else None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        busy = (sum(fields[:7]) - idle) / _TICKS  # user to softirq; steal is the host's, not a process's
    except (OSError, ValueError, IndexError):
        pass
    return Counters(wall=time.perf_counter(), cpu=time.process_time(), switches=switches, steal=steal, busy=busy)


def between(before: Counters, after: Counters, started: float) -> Conditions:
    """The conditions of the window read `before` and `after`, begun at `started` (time.monotonic)."""
    cpu = after.cpu - before.cpu
    others = None
    if before.busy is not None and after.busy is not None:
        others = max(0.0, after.busy - before.busy - cpu)  # /proc/stat counts ticks: small windows read coarse
    steal = after.steal - before.steal if before.steal is not None and after.steal is not None else None
    return Conditions(
        started=started, wall_s=after.wall - before.wall, cpu_s=cpu, switches=after.switches - before.switches,
        steal_s=steal, others_cpu_s=others,
    )
