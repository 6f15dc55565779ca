"""Cost figures measured the same way for every architecture: parameters, FLOPs, throughput, latency, memory.

Timing follows pytest-benchmark and timm's benchmark script: warm up, synchronize the device before every
clock read (CUDA events on GPU), repeat, and keep every repeat so that readers get the median and spread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import math
import os
import resource
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .results.stats import iqr, quantile


@dataclass(frozen=True)
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

    def problems(self) -> list[str]:
        found = [] if self.repeats >= 5 else [f"repeats must be at least 5, got {self.repeats}"]
        times = ("warmup_time", "min_repeat_time", "max_spread", "max_time", "latency_time")
        found += [f"{name} must not be negative" for name in times if getattr(self, name) < 0]
        if self.window_repeats < 0:
            found.append(f"window_repeats must not be negative, got {self.window_repeats}")
        if self.window_every <= 0:
            found.append(f"window_every must be positive, got {self.window_every:g}")
        if self.latency_min_calls < 1:
            found.append(f"latency_min_calls must be at least 1, got {self.latency_min_calls}")
        return found


def parameter_counts(module: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def flops(call: Callable[[], object]) -> int:
    """Theoretical FLOPs of one `call()`, counted by torch.utils.flop_counter (a multiply-add is 2 FLOPs)."""
    with FlopCounterMode(display=False) as counter:
        call()
    return int(counter.get_total_flops())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


_before_window: Callable[[], None] = lambda: None


def take_turns(hook: Callable[[], None] | None) -> None:
    """Call `hook` before every timed window from now on (None: no more): before each warm-up and each further
    repeat of `time_repeats`, and before each of `repeats` blocks of `time_each_call`. `archbench ab` uses it
    to let two processes take turns, so that the two sides' windows alternate a fraction of a second apart."""
    global _before_window
    _before_window = hook or (lambda: None)


Timer = Callable[[Callable[[], object], int], float]  # seconds that `calls` calls of a function take, back to back


def time_repeats(
    call: Callable[[], object], device: torch.device, settings: MeasureSettings, timer: Timer | None = None
) -> list[float]:
    """Seconds per `call()` in each repeat, after a warm-up: `settings.repeats` repeats, then more for as long as
    their spread (IQR / median) exceeds `max_spread` and they have taken less than `max_time` seconds.

    Each repeat runs `call` as many times as it takes to fill `min_repeat_time` (calibrated during the
    warm-up), so fast calls are not lost in clock resolution; slow ones run once per repeat. The stopping rule
    is that of torch.utils.benchmark's `adaptive_autorange`; that function itself does not fit: `archbench ab`
    must be able to give turns between repeats and pair them one by one, and CUDA repeats are timed by events.
    `timer(call, calls)` times each block (default: this process's, the device synchronized); a data-parallel
    rank passes one whose figure every rank shares (the slowest rank's), so that all take the same decisions.
    """
    timer = timer or (lambda call, calls: _timed(call, device, calls))
    _before_window()
    per_call = _warm_up(call, timer, settings.warmup_time)
    calls = max(1, math.ceil(settings.min_repeat_time / per_call))
    seconds: list[float] = []
    while len(seconds) < settings.repeats or _unsettled(seconds, calls, settings):
        if seconds:
            _before_window()
        seconds.append(timer(call, calls) / calls)
    return seconds


def _unsettled(seconds: list[float], calls: int, settings: MeasureSettings) -> bool:
    """Whether `time_repeats` goes on: the repeats so far spread more than `max_spread` and took under `max_time`."""
    return sum(seconds) * calls < settings.max_time and iqr(seconds) > settings.max_spread * statistics.median(seconds)


def time_each_call(call: Callable[[], object], device: torch.device, settings: MeasureSettings) -> list[float]:
    """Seconds of each single `call()`, for latency percentiles: enough calls to fill `latency_time`."""
    _before_window()
    per_call = _warm_up(call, lambda call, calls: _timed(call, device, calls), settings.warmup_time)
    count = max(settings.latency_min_calls, math.ceil(settings.latency_time / per_call))
    block = _block_size(count, settings.repeats)
    seconds = []
    for index in range(count):
        if index and index % block == 0:
            _before_window()
        seconds.append(_timed(call, device, 1))
    return seconds


def summarize_rates(seconds_per_call: list[float], items_per_call: int) -> dict[str, float | list[float]]:
    """Median, interquartile range and every repeat of `items_per_call / seconds` (items per second)."""
    rates = [items_per_call / s for s in seconds_per_call]
    return {"median": statistics.median(rates), "iqr": iqr(rates), "repeats": rates}


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {"p50": quantile(ms, 0.5), "p95": quantile(ms, 0.95)}


def training_costs(
    make_step: Callable[[], Callable[[], object]], items_per_step: int, device: torch.device, settings: MeasureSettings
) -> dict[str, object]:
    """Training-step throughput and peak memory.

    `make_step()` must return a step function over a fresh copy of the model and a fresh optimizer, so
    that measuring never touches the model being benchmarked. Throughput is timed on one copy; peak
    memory is then taken over the first two steps of another, once the runtime is warm, so that the
    figure covers the copy, its gradients, optimizer state and activations, whatever ran before.
    """
    step = make_step()
    rates = summarize_rates(time_repeats(step, device, settings), items_per_step)
    del step
    with peak_memory(device) as memory:
        step = make_step()
        step()
        step()
        del step
    return {
        **_throughput_figures(rates["repeats"], [rates["median"]], [rates["median"]]),
        "peak_memory_mb": memory.mb,
        "peak_memory_method": memory.method,
    }


class TrainingWindows:
    """Training-step throughput timed in windows spread evenly over a training run.

    `training_costs` times its window before training. Then the fit calls `after_step(clock, optimizers)` after
    every training step; every `every` steps (the steps that `settings.window_every` seconds hold at the speed of
    that first window) it pauses the training clock and times a window of `settings.window_repeats` repeats on
    `make_step(trained=optimizers)`: a copy of the model as training has left it, with optimizers resumed from
    a copy of training's own, training's random stream left as it was. Fresh optimizers made the windows of
    vae-mlp 6% slower than its loop (Adam; 40 interleaved pairs), resumed ones 1.5%: a window times the steps
    training takes next, not an optimizer's first ones.

    `record`'s `train_throughput` pools the windows from the first epoch's end on, the stretch of the run whose
    speed the loop's own figure gives (it leaves out its first epoch): each window's median, pooled as training
    pools its steps, samples over seconds. The windows stand for equal numbers of steps, so that is their
    harmonic mean, and it follows the loop's clock wherever the machine's speed moved meanwhile. A shared CPU's
    speed moves by 10-40% over seconds to minutes, and often between two levels (gan-dcgan in a standard run:
    2,300 samples/s for two minutes, then 3,300 for one): a window after every epoch sampled too few moments of
    that, and their median took the level most of them saw. Without a window from the first epoch's end on,
    the windows during training are pooled; without any, the window before training gives the figure.
    `train_throughput_windows` lists every window's median (the one before training first) and
    `train_throughput_window_steps` the training steps done before each; `train_throughput_repeats` and its IQR
    keep every repeat.
    """

    def __init__(
        self, make_step: Callable[..., Callable[[], object]], items_per_step: int, steps_per_epoch: int,
        device: torch.device, settings: MeasureSettings, record: dict,
    ):
        self.make_step, self.items_per_step, self.device, self.settings = make_step, items_per_step, device, settings
        self.steps_per_epoch, self.record, self.steps = steps_per_epoch, record, 0
        seconds_per_step = items_per_step / record["train_throughput"]
        self.every = max(1, round(settings.window_every / seconds_per_step))
        record["train_throughput_window_steps"] = [0] * len(record["train_throughput_windows"])
        # exactly `window_repeats` repeats after a warm-up of two steps: the runtime is warm by now
        self._window = replace(settings, repeats=settings.window_repeats, warmup_time=0.0, max_time=0.0)

    def after_step(self, clock, optimizers: Sequence[torch.optim.Optimizer] = ()) -> None:
        """Count one training step; when a window is due, time it inside `clock.paused()` (the fit's TrainClock),
        on a copy resumed from training's `optimizers`."""
        self.steps += 1
        if self.settings.window_repeats and self.steps % self.every == 0:
            with clock.paused():
                self._time_window(optimizers)

    def _time_window(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):  # the timed steps' dropout must not move training's random stream
            seconds = time_repeats(self.make_step(trained=optimizers), self.device, self._window)
        record = self.record
        steps = [*record["train_throughput_window_steps"], self.steps]
        windows = [*record["train_throughput_windows"], statistics.median([self.items_per_step / s for s in seconds])]
        repeats = [*record["train_throughput_repeats"], *(self.items_per_step / s for s in seconds)]
        pooled = [w for w, step in zip(windows, steps) if step >= self.steps_per_epoch] or windows[1:]
        record.update(_throughput_figures(repeats, windows, pooled), train_throughput_window_steps=steps)


def _throughput_figures(repeats: list[float], windows: list[float], pooled: list[float]) -> dict[str, object]:
    """Training throughput: the harmonic mean of the `pooled` window medians, the IQR of every repeat, and the
    lists of repeats and windows."""
    return {
        "train_throughput": len(pooled) / sum(1 / w for w in pooled),
        "train_throughput_iqr": iqr(repeats),
        "train_throughput_repeats": repeats,
        "train_throughput_windows": windows,
    }


def inference_costs(
    forward_batch: Callable[[], object], forward_one: Callable[[], object], items_per_batch: int,
    device: torch.device, settings: MeasureSettings, prefix: str = "infer",
) -> dict[str, object]:
    """Throughput of `forward_batch()` and latency percentiles of `forward_one()` (a batch of one).

    Besides p50 and p95 over all calls, `latency_p50_ms_repeats` holds the p50 of each block of consecutive
    calls that `time_each_call` timed in one window, the spread the regression gate needs. The caller puts the
    model in eval mode; both run under torch.inference_mode.
    """
    with torch.inference_mode():
        rates = summarize_rates(time_repeats(forward_batch, device, settings), items_per_batch)
        calls = time_each_call(forward_one, device, settings)
    latency = percentiles_ms(calls)
    size = _block_size(len(calls), settings.repeats)
    blocks = [calls[i : i + size] for i in range(0, len(calls), size)]
    return {
        f"{prefix}_throughput": rates["median"],
        f"{prefix}_throughput_iqr": rates["iqr"],
        f"{prefix}_throughput_repeats": rates["repeats"],
        "latency_p50_ms": latency["p50"],
        "latency_p95_ms": latency["p95"],
        "latency_p50_ms_repeats": [percentiles_ms(block)["p50"] for block in blocks if block],
    }


@dataclass
class PeakMemory:
    """Peak memory of a measured block: `bytes` above what was in use when it began, and how it was taken."""

    bytes: int | None = None
    method: str = ""

    @property
    def mb(self) -> float | None:
        return None if self.bytes is None else self.bytes / 2**20


@contextmanager
def peak_memory(device: torch.device) -> Iterator[PeakMemory]:
    """Peak memory the block needed beyond what was already in use when it began.

    CUDA: `torch.cuda.max_memory_allocated` minus the allocation at the start (tensors only).
    CPU and MPS: the process's peak resident set size (VmHWM) minus its resident size at the start,
    after returning freed heap to the system and resetting the high-water mark through
    /proc/self/clear_refs. Where that reset is impossible (not Linux), the process's lifetime peak
    (ru_maxrss), labelled as such.
    """
    result = PeakMemory()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        yield result
        synchronize(device)
        result.bytes = torch.cuda.max_memory_allocated(device) - before
        result.method = "cuda max_memory_allocated above start"
        return
    gc.collect()
    _malloc_trim()
    if _reset_peak_rss():
        before = _status_kib("VmRSS") * 1024
        yield result
        synchronize(device)
        result.bytes = _status_kib("VmHWM") * 1024 - before
        result.method = "process peak RSS above start (VmHWM)"
    else:
        yield result
        result.bytes, result.method = _lifetime_peak_rss(), "process lifetime peak RSS (ru_maxrss)"


def _block_size(calls: int, repeats: int) -> int:
    """How many consecutive single calls `time_each_call` times in one window."""
    return max(1, math.ceil(calls / repeats))


def _warm_up(call: Callable[[], object], timer: Timer, warmup_time: float) -> float:
    """Run `call` at least twice and until the calls have taken `warmup_time` seconds by `timer`; return the
    last call's seconds."""
    calls, elapsed = 0, 0.0
    while calls < 2 or elapsed < warmup_time:
        seconds = timer(call, 1)
        calls, elapsed = calls + 1, elapsed + seconds
    return max(seconds, 1e-9)


def _timed(call: Callable[[], object], device: torch.device, calls: int) -> float:
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


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); False where that is impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        _status_kib("VmHWM")
        return True
    except OSError:
        return False


def _lifetime_peak_rss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


# glibc's allocator adapts its thresholds to the history of the process: a process that has freed large
# blocks keeps later ones on its heap, a fresh one maps and unmaps them (and faults their pages in) at every
# training step. Measured on vae-mlp (quick suite, one process per run): 2008-2272 samples/s fresh, 3376-3498
# after such a history or with these fixed thresholds. Fixing them makes a figure independent of what ran
# before it in the same process. The trim threshold must exceed what a step frees at the top of the heap:
# at 64 MiB, the copy a timing window trains (allocated last, so on top) gave 23,000 pages back after every
# fp32 cnn-wide step and faulted them in again in the next, and its windows ran 12% below the loop (20
# interleaved pairs); at 1 GiB no step faults and they agree within 2%. peak_memory trims explicitly.
MALLOC_MMAP_THRESHOLD = 32 << 20  # glibc's largest: blocks below this come from the heap
MALLOC_TRIM_THRESHOLD = 1 << 30  # free heap kept before it is returned to the system


def steady_allocator() -> str | None:
    """Fix glibc's malloc thresholds for this process (see above); returns what was set, or None elsewhere."""
    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(name)
        if libc.mallopt(-3, MALLOC_MMAP_THRESHOLD) != 1 or libc.mallopt(-1, MALLOC_TRIM_THRESHOLD) != 1:  # M_MMAP_, M_TRIM_THRESHOLD
            return None
    except (OSError, AttributeError):
        return None
    return f"glibc mmap threshold {MALLOC_MMAP_THRESHOLD >> 20} MiB, trim threshold {MALLOC_TRIM_THRESHOLD >> 20} MiB"


@contextmanager
def machine_load() -> Iterator[dict[str, float | None]]:
    """What else the machine did while the block ran: yields a dict filled on exit with `load_1min` (the
    1-minute load average at the start), `other_cpu_s` (CPU seconds that other processes took: the machine's
    busy time from /proc/stat less this process's own CPU time) and `other_cpu_share` (that over the CPU
    seconds the machine had). On a data-parallel rank the other ranks count as other processes. None where
    /proc/stat is missing (not Linux)."""
    load = {"load_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None, "other_cpu_s": None,
            "other_cpu_share": None}
    busy, own, started = _busy_cpu_s(), time.process_time(), time.perf_counter()
    try:
        yield load
    finally:
        busy_after, wall = _busy_cpu_s(), time.perf_counter() - started
        if busy is not None and busy_after is not None and wall > 0:
            other = max(0.0, busy_after - busy - (time.process_time() - own))
            load.update(other_cpu_s=other, other_cpu_share=other / (wall * (os.cpu_count() or 1)))


def _busy_cpu_s() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (every state of /proc/stat's cpu line but idle and iowait)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _malloc_trim() -> None:
    """Hand freed heap back to the OS (glibc), so an earlier model's peak does not hide this one's."""
    name = ctypes.util.find_library("c")
    if name:
        try:
            ctypes.CDLL(name).malloc_trim(0)
        except (OSError, AttributeError):
            pass
