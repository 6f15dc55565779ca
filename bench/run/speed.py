"""`archbench speed`: the cost figures alone, over architectures x image sizes x batch sizes x modes; no training.

Each point (architecture, image size, batch size, mode) runs as a run's pair does (runner.run_pair, in a
fresh process by default) and measures what its task's `run(..., train=False)` measures: training-step
(zero_grad, forward, backward, optimizer step) and inference (inference_mode forward) throughput with their spread,
batch-1 latency, peak training memory, parameters and FLOPs, and utilization, against the best matmul peak that
the sweep's points timed so far, each in its own process after its figures (bench.measure.utilization).
Inputs are random (as timm's benchmark.py's), seeded, of the point's shape. Its records are a run's records
with `kind` "speed" and `image_size`, so report and compare read them.

The largest batch that fits: a point that runs out of memory (CUDA's OutOfMemoryError; on a CPU, a training
step whose peak memory is over `max_memory_mb`) is a failed record marked `out_of_memory`. The sweep then steps
down from its batch size as timm's `decay_batch_step` does (64, 48, 32, 24, 16, ...) while the batch is above
the largest one measured so far, records the first that fits (`stepped_down_from` says from where), and tries
no larger batch of that architecture, size and mode.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generator

import torch

import architectures

from .. import configs
from ..configs import RunConfig
from ..data.datasets import ImageData
from ..errors import UserError
from ..measure.modes import Mode
from . import runner
from .session import Session


@dataclass(frozen=True, kw_only=True)
class Sweep:
    """The points of a speed sweep besides architectures and modes (those are the configuration's)."""

    batch_sizes: tuple[int, ...] = (1, 8, 32)
    image_sizes: tuple[int, ...] = (224,)
    channels: int = 3
    classes: int = 1000
    max_memory_mb: float | None = None


def decay_batch_step(batch_size: int, num_intra_steps: int = 2) -> int:
    """The next smaller batch size to try, stepping between powers of two in `num_intra_steps` steps (timm's
    `decay_batch_step`): 64, 48, 32, 24, 16, 12, 8, 6, 4, 3, 2, 1, then 0."""
    if batch_size <= 1:
        return 0
    base = 2 ** int(math.log2(batch_size - 1))
    step = max(base // num_intra_steps, 1)
    return base + ((batch_size - base - 1) // step) * step


def random_data(channels: int, size: int, classes: int, samples: int, seed: int = 0) -> ImageData:
    """`samples` random images (uniform in [0, 1]) of channels x size x size with random labels, as both splits."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(samples, channels, size, size, generator=generator)
    y = torch.randint(0, classes, (samples,), generator=generator)
    return ImageData(
        name=f"random {channels}x{size}x{size}", train_x=x, train_y=y, test_x=x, test_y=y, num_classes=classes
    )


def run_sweep(
    config: RunConfig, sweep: Sweep, strategy: runner.Strategy, echo: Callable[[str], None], command: str,
    arch_modules: tuple[str, ...] = (),
) -> Path:
    """Measure every point of `sweep` x the configuration's classifiers and modes in one run session
    (bench.run.session); return the run folder."""
    session = Session(config, strategy, echo, command, arch_modules, write_line=summary)
    others = [name for name in session.names if architectures.get_spec(name).task != "classify"]
    if others:
        raise UserError(f"archbench speed measures classifiers; {others[0]} is a {architectures.get_spec(others[0]).task}")
    strategy.prepare(session.names)
    run_dir = session.open({"speed": dataclasses.asdict(sweep)})
    names, modes = session.names, session.modes
    points = len(names) * len(modes) * len(sweep.image_sizes) * len(sweep.batch_sizes)
    echo(f"run {run_dir.name}: speed of {len(names)} architecture(s) x {len(modes)} mode(s) x image sizes "
         f"{', '.join(map(str, sweep.image_sizes))} x batch sizes {', '.join(map(str, sweep.batch_sizes))} "
         f"({points} points) on {strategy.describe(session.device)}")
    with session.running(None, resumable=False):  # step-downs add runs: a sweep is not resumed
        for size in sweep.image_sizes:
            samples = 2 * max(sweep.batch_sizes)  # two batches: a step draws a fresh one as training would
            data = strategy.place(random_data(sweep.channels, size, sweep.classes, samples), session.device)
            for name in names:
                for mode in modes.values():
                    jobs = _points(session, sweep, data, mode, name, size)
                    job = next(jobs)
                    while job is not None:
                        record = strategy.execute_timed(job)
                        session.write(record)
                        job = jobs.send(record)  # the next point depends on how this one went
    return run_dir


def _points(
    session: Session, sweep: Sweep, data: ImageData, mode: Mode, name: str, size: int,
) -> Generator[runner.Job | None, dict[str, Any], None]:
    """The jobs of one architecture, size and mode, batch sizes ascending, stepping down after one out of memory;
    each job's record is sent back before the next is chosen, and None follows the last."""
    largest_fit = 0
    queue = sorted(set(sweep.batch_sizes))
    stepped_from = None
    while queue:
        batch = queue.pop(0)
        job = session.job(
            name, mode, 0, data, config=configs.overridden(session.config, batch_size=batch), measure_only=True,
            max_memory_mb=sweep.max_memory_mb, extra={"kind": "speed", "image_size": size, "stepped_down_from": stepped_from},
        )
        record = yield job
        if record.get("out_of_memory"):
            below = decay_batch_step(batch)
            if queue:
                session.echo(f"  {name}: batch {batch} is out of memory; not trying {', '.join(map(str, queue))}")
            queue, stepped_from = ([below], stepped_from or batch) if below > largest_fit else ([], None)
        elif record["status"] == "ok":
            largest_fit, stepped_from = batch, None
    yield None


def summary(record: dict[str, Any]) -> str:
    """One line per point as it ends."""
    head = f"  {record['architecture']:<24} {record.get('mode', 'fp32'):<18} {record['image_size']:>4} px  batch {record['batch_size']:<5}"
    if record["status"] != "ok":
        error = record["error"] if len(record["error"]) <= 100 else record["error"][:99] + "…"  # the record has it all
        return f"{head} {'out of memory' if record.get('out_of_memory') else record['status']}: {error}"
    return (f"{head} train {record['train_throughput']:.4g}/s  infer {record['infer_throughput']:.4g}/s  "
            f"p50 {record['latency_p50_ms']:.3g} ms  {record['peak_memory_mb']:.0f} MB")
