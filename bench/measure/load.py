"""What else the machine did while a block ran: the load average and other processes' CPU time."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def machine_load() -> Iterator[dict[str, float | None]]:
    """What else the machine did while the block ran: yields a dict filled on exit with `load_1min` (the
    1-minute load average at the start), `other_cpu_s` (CPU seconds that other processes took: the machine's
    busy time from /proc/stat less this process's own CPU time and its children's, such as DataLoader workers)
    and `other_cpu_share` (that over the CPU seconds the machine had). On a data-parallel rank the other ranks
    count as other processes. None where /proc/stat is missing (not Linux)."""
    load = {"load_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None, "other_cpu_s": None,
            "other_cpu_share": None}
    busy, own, started = _busy_cpu_s(), _own_cpu_s(), time.perf_counter()
    try:
        yield load
    finally:
        busy_after, wall = _busy_cpu_s(), time.perf_counter() - started
        if busy is not None and busy_after is not None and wall > 0:
            other = max(0.0, busy_after - busy - (_own_cpu_s() - own))
            share = other / (wall * (os.cpu_count() or 1))  # /proc/stat counts clock ticks: a hair over 1 is rounding
            load.update(other_cpu_s=other, other_cpu_share=min(1.0, share))


def _busy_cpu_s() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (every state of /proc/stat's cpu line but idle and iowait)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    """CPU seconds of this process and of its children: those that ended (reaped) and those still running."""
    times = os.times()
    return time.process_time() + times.children_user + times.children_system + _running_children_cpu_s()


def _running_children_cpu_s() -> float:
    """CPU seconds of this process's running children so far, from /proc (0 where there is none)."""
    me, total = os.getpid(), 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (name)": state, ppid, ...
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")
