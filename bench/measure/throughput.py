"""Training-step and inference throughput, batch-1 latency and training's peak memory, measured the same way for
every architecture; the timing windows spread over a training run; and a streamed loader's own throughput.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np
import torch

from ..stats import iqr
from .memory import peak_memory
from .phases import phase
from .timing import MeasureSettings, block_size, percentiles_ms, summarize_rates, time_each_call, time_repeats


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
    rates = summarize_rates(time_repeats(step, device, settings, label="train_throughput"), items_per_step)
    del step
    with phase("memory"), peak_memory(device) as memory:
        step = make_step()
        step()
        step()
        del step
    return {
        **_throughput_figures(rates["repeats"], [rates["median"]], [rates["median"]]),
        "peak_memory_mb": memory.mb,
        "peak_memory_method": memory.method,
    }


WINDOW_WARMUP_S = 0.05
# A window's copy whose step takes this long needs no warm-up step: its first ran at 0.96-1.01 of its third for
# resnet18, googlenet and vgg11-bn (0.1-0.2 s steps, bf16 on a 2-core CPU), and 1.03-1.14 for the small CNNs' 6-15 ms.
COLD_STEP_S = 0.1


def loop_stretch(planned_steps: int | None, steps_per_epoch: int) -> int:
    """The step from which a training loop's own speed is taken, leaving out its warm-up: the first epoch's end, or
    the middle of a run planned to train one epoch or less (`planned_steps`; None: not known in advance)."""
    if planned_steps is None or planned_steps > steps_per_epoch:
        return steps_per_epoch
    return planned_steps // 2


class TrainingWindows:
    """Training-step throughput timed in windows spread evenly over a training run (why, and what was measured:
    docs/measurement.md, "Windows during training" and "Pooling").

    `training_costs` times its window before training. Then the fit calls `after_step(clock, optimizers)` after
    every training step; every `every` steps (the steps that `settings.window_every` seconds hold at the speed of
    that first window) it pauses the training clock and times a window of `settings.window_repeats` repeats on
    `make_step(trained=optimizers)`: a copy of the model as training has left it, with optimizers resumed from
    a copy of training's own, training's random stream left as it was, after a warm-up of one step and
    WINDOW_WARMUP_S, or `warmup_time` where that is shorter, and none where a step takes COLD_STEP_S or more.
    Where the run's length is known (`planned_steps`), the windows come more often if that is what it takes for
    `settings.min_windows` of them to fall in the loop's stretch (`loop_stretch`), each in the middle of an
    equal share of those steps.

    `record`'s `train_throughput` pools the windows in the loop's stretch as training pools its steps (samples
    over seconds: the harmonic mean of their medians); without a window there, the windows during training;
    without any, the window before training. `train_throughput_windows` lists every window's median (the one
    before training first), `train_throughput_window_steps` the training steps done before each, and
    `train_throughput_repeats` and its IQR keep every repeat.
    """

    def __init__(
        self, make_step: Callable[..., Callable[[], object]], items_per_step: int, steps_per_epoch: int,
        device: torch.device, settings: MeasureSettings, record: dict, planned_steps: int | None = None,
    ):
        self.make_step, self.items_per_step, self.device, self.settings = make_step, items_per_step, device, settings
        self.record, self.taken = record, 0
        self.seconds_per_step = seconds_per_step = items_per_step / record["train_throughput"]
        self.every = max(1, round(settings.window_every / seconds_per_step))
        self.first = self.every  # the step of the first window; then one every `every` steps
        self.stretch = loop_stretch(planned_steps, steps_per_epoch)
        if planned_steps and settings.min_windows:
            spread = max(1, (planned_steps - self.stretch) // settings.min_windows)
            if spread < self.every:  # each window in the middle of an equal share of the steps it stands for
                self.every, self.first = spread, self.stretch + (spread + 1) // 2
        record["train_throughput_window_steps"] = [0] * len(record["train_throughput_windows"])
        cold = seconds_per_step >= COLD_STEP_S
        warmup_time = 0.0 if cold else min(settings.warmup_time, WINDOW_WARMUP_S)
        self._window = replace(settings, repeats=settings.window_repeats, warmup_time=warmup_time, max_time=0.0)
        self._warmup_calls = 0 if cold else 1

    def after_step(self, clock, optimizers: Sequence[torch.optim.Optimizer] = ()) -> None:
        """Count one training step; when a window is due, time it inside `clock.paused()` (the fit's TrainClock),
        on a copy resumed from training's `optimizers`."""
        self.taken += 1
        due = self.taken >= self.first and (self.taken - self.first) % self.every == 0
        if self.settings.window_repeats and due:
            with clock.paused():
                self._time_window(optimizers)

    def _time_window(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        cuda = [self.device] if self.device.type == "cuda" else []
        # the timed steps' dropout must not move training's random stream
        with phase("windows"), torch.random.fork_rng(devices=cuda):
            step = self.make_step(trained=optimizers)
            seconds = time_repeats(
                step, self.device, self._window, warmup_calls=self._warmup_calls, per_call=self.seconds_per_step
            )
        record = self.record
        steps = [*record["train_throughput_window_steps"], self.taken]
        windows = [*record["train_throughput_windows"], statistics.median([self.items_per_step / s for s in seconds])]
        repeats = [*record["train_throughput_repeats"], *(self.items_per_step / s for s in seconds)]
        pooled = [w for w, step in zip(windows, steps) if step >= self.stretch] or windows[1:]
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
        seconds = time_repeats(forward_batch, device, settings, label=f"{prefix}_throughput")
        rates = summarize_rates(seconds, items_per_batch)
        calls = time_each_call(forward_one, device, settings)
    latency = percentiles_ms(calls)
    size = block_size(len(calls), settings.repeats)
    blocks = [calls[i : i + size] for i in range(0, len(calls), size)]
    return {
        f"{prefix}_throughput": rates["median"],
        f"{prefix}_throughput_iqr": rates["iqr"],
        f"{prefix}_throughput_repeats": rates["repeats"],
        "latency_p50_ms": latency["p50"],
        "latency_p95_ms": latency["p95"],
        "latency_p50_ms_repeats": [percentiles_ms(block)["p50"] for block in blocks if block],
    }


def loader_throughput(source, batch_size: int, seconds: float, seed: int) -> dict[str, float]:
    """Samples/s a streamed training source (bench.data.stream.StreamSource) delivers on its own (its workers and transforms, the copy to the device
    and the normalization; no model), timed over at least `seconds` once the batches its workers had queued in
    advance are used up; the IQR is that of five consecutive stretches."""
    queued = max(1, source.workers * source.prefetch_factor)
    arrivals: list[float] = []
    sizes: list[int] = []
    generator = torch.Generator().manual_seed(seed + 1)
    while len(arrivals) < queued + 5 or arrivals[-1] - arrivals[queued] < seconds:
        for x, _ in source.epoch(batch_size, generator):
            if source.device.type == "cuda":
                torch.cuda.synchronize(source.device)
            arrivals.append(time.perf_counter())
            sizes.append(len(x))
            if len(arrivals) >= queued + 5 and arrivals[-1] - arrivals[queued] >= seconds:
                break
    steady, counts = np.array(arrivals[queued:]), np.array(sizes[queued + 1 :])
    rate = counts.sum() / (steady[-1] - steady[0])
    stretches = np.array_split(np.arange(len(counts)), 5)
    rates = [counts[s].sum() / (steady[s[-1] + 1] - steady[s[0]]) for s in stretches if len(s)]
    q1, q3 = np.percentile(rates, [25, 75])
    return {"loader_throughput": float(rate), "loader_throughput_iqr": float(q3 - q1)}
