"""Timing: warm up, synchronize the device before every clock read (CUDA events on GPU), repeat, and keep every
repeat so that readers get the median and spread (pytest-benchmark's and timm's benchmark script's way).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from ..stats import iqr, quantile
from . import conditions
from .phases import phase


@dataclass(frozen=True, kw_only=True)
class MeasureSettings:
    """How long and how often to measure; the suite's `[measure]` table."""

    repeats: int = 5
    warmup_time: float = 0.3
    min_repeat_time: float = 0.2
    max_spread: float = 0.02  # beyond `repeats`, more repeats while their IQR / median exceeds this ...
    max_time: float = 2.0  # ... and until the repeats have taken this many seconds (0: exactly `repeats`)
    latency_time: float = 1.0
    latency_min_calls: int = 20
    window_every: float = 5.0  # during training, a window every this many seconds of it (counted in steps) ...
    window_repeats: int = 2  # ... of this many repeats on the model as it stands (0: no windows during training)
    min_windows: int = 0  # at least this many where the loop's figure is taken, evenly spaced (a run of known length)

    def problems(self) -> list[str]:
        found = [] if self.repeats >= 5 else [f"repeats must be at least 5, got {self.repeats}"]
        times = ("warmup_time", "min_repeat_time", "max_spread", "max_time", "latency_time")
        found += [f"{name} must not be negative" for name in times if getattr(self, name) < 0]
        if self.window_repeats < 0:
            found.append(f"window_repeats must not be negative, got {self.window_repeats}")
        if self.window_every <= 0:
            found.append(f"window_every must be positive, got {self.window_every:g}")
        if self.min_windows < 0:
            found.append(f"min_windows must not be negative, got {self.min_windows}")
        if self.latency_min_calls < 1:
            found.append(f"latency_min_calls must be at least 1, got {self.latency_min_calls}")
        return found


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


_before_window: Callable[[], None] = lambda: None
_observer: Callable[[str, conditions.Conditions], None] | None = None


def take_turns(hook: Callable[[], None] | None) -> None:
    """Call `hook` before every timed window from now on (None: no more): before each warm-up and each further
    repeat of `time_repeats`, and before each of `repeats` blocks of `time_each_call`. `archbench ab` uses it
    to let two processes take turns, so that the two sides' windows alternate a fraction of a second apart."""
    global _before_window
    _before_window = hook or (lambda: None)


def observe_windows(observer: Callable[[str, conditions.Conditions], None] | None) -> None:
    """Call `observer(label, conditions)` after every repeat `time_repeats` times from now on (None: no more),
    with the label its caller gave and what the repeat ran under (bench.measure.conditions): `archbench ab`'s
    probe records them beside the figures."""
    global _observer
    _observer = observer


Timer = Callable[[Callable[[], object], int], float]  # seconds that `calls` calls of a function take, back to back


def time_repeats(
    call: Callable[[], object], device: torch.device, settings: MeasureSettings, timer: Timer | None = None,
    warmup_calls: int = 2, per_call: float | None = None, label: str = "",
) -> list[float]:
    """Seconds per `call()` in each repeat, after a warm-up: `settings.repeats` repeats, then more for as long as
    their spread (IQR / median) exceeds `max_spread` and they have taken less than `max_time` seconds.

    Each repeat runs `call` as many times as it takes to fill `min_repeat_time` (calibrated during the
    warm-up), so fast calls are not lost in clock resolution; slow ones run once per repeat. The stopping rule
    is that of torch.utils.benchmark's `adaptive_autorange`; that function itself does not fit: `archbench ab`
    must be able to give turns between repeats and pair them one by one, and CUDA repeats are timed by events.
    `timer(call, calls)` times each block (default: this process's, the device synchronized); a data-parallel
    rank passes one whose figure every rank shares (the slowest rank's), so that all take the same decisions.
    The warm-up runs at least `warmup_calls` calls; with none and no `warmup_time`, there is no warm-up, and
    `per_call` (seconds, known from earlier timing) calibrates the repeats instead. `label` names the figure
    for an observer of the windows (`observe_windows`).
    """
    timer = timer or (lambda call, calls: timed(call, device, calls))
    _before_window()
    per_call = _warm_up(call, timer, settings.warmup_time, warmup_calls) or per_call
    calls = max(1, math.ceil(settings.min_repeat_time / per_call)) if per_call else 1
    seconds: list[float] = []
    with phase("windows"):
        while len(seconds) < settings.repeats or _unsettled(seconds, calls, settings):
            if seconds:
                _before_window()
            with _observed(label):
                elapsed = timer(call, calls)
            seconds.append(elapsed / calls)
    return seconds


@contextmanager
def _observed(label: str) -> Iterator[None]:
    """Hands the conditions of the block it wraps (one window) to the observer, where there is one."""
    if _observer is None:
        yield
        return
    started, before = time.monotonic(), conditions.read()
    yield
    _observer(label, conditions.between(before, conditions.read(), started))


def _unsettled(seconds: list[float], calls: int, settings: MeasureSettings) -> bool:
    """Whether `time_repeats` goes on: the repeats so far spread more than `max_spread` and took under `max_time`."""
    return sum(seconds) * calls < settings.max_time and iqr(seconds) > settings.max_spread * statistics.median(seconds)


def time_each_call(call: Callable[[], object], device: torch.device, settings: MeasureSettings) -> list[float]:
    """Seconds of each single `call()`, for latency percentiles: enough calls to fill `latency_time`, rounded up
    to fill exactly `settings.repeats` windows of consecutive calls (block_size), each observed as
    `latency_p50_ms`: two processes taking turns take the same number of them."""
    _before_window()
    per_call = _warm_up(call, lambda call, calls: timed(call, device, calls), settings.warmup_time)
    count = max(settings.latency_min_calls, math.ceil(settings.latency_time / per_call))
    block = block_size(count, settings.repeats)
    count = block * settings.repeats
    seconds: list[float] = []
    with phase("latency"):
        for start in range(0, count, block):
            if start:
                _before_window()
            with _observed("latency_p50_ms"):
                seconds.extend(timed(call, device, 1) for _ in range(min(block, count - start)))
    return seconds


def summarize_rates(seconds_per_call: list[float], items_per_call: int) -> dict[str, float | list[float]]:
    """Median, interquartile range and every repeat of `items_per_call / seconds` (items per second)."""
    rates = [items_per_call / s for s in seconds_per_call]
    return {"median": statistics.median(rates), "iqr": iqr(rates), "repeats": rates}


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {"p50": quantile(ms, 0.5), "p95": quantile(ms, 0.95)}


def block_size(calls: int, repeats: int) -> int:
    """How many consecutive single calls `time_each_call` times in one window."""
    return max(1, math.ceil(calls / repeats))


def _warm_up(call: Callable[[], object], timer: Timer, warmup_time: float, min_calls: int = 2) -> float | None:
    """Run `call` at least `min_calls` times and until the calls have taken `warmup_time` seconds by `timer`;
    return the last call's seconds (None when there was no call to make)."""
    calls, elapsed, seconds = 0, 0.0, None
    with phase("warmup"):
        while calls < min_calls or elapsed < warmup_time:
            seconds = timer(call, 1)
            calls, elapsed = calls + 1, elapsed + seconds
    return None if seconds is None else max(seconds, 1e-9)


def timed(call: Callable[[], object], device: torch.device, calls: int) -> float:
    """Seconds that `calls` calls of `call` take back to back on `device` (CUDA events on CUDA, else the clock read
    with the device synchronized)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            call()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000
    synchronize(device)
    started = time.perf_counter()
    for _ in range(calls):
        call()
    synchronize(device)
    return time.perf_counter() - started
