"""The one training loop every task runs in, and the one timed training step every measurement takes.

A task supplies `TrainingStep`: its model, optimizers and one training step (`step(x, y)`, returning the detached
loss or losses without synchronizing), and `EpochEnd`: what it evaluates after each epoch. `fit` owns the
rest, for every task, single-process and data-parallel alike: the batches (from a data source), the training
clock, the budget, the schedules, the progress bar, the divergence check on non-finite losses, the per-epoch
curves and the timing windows (through `after_step`). `step_maker` builds the training step that the cost
probe, the timing windows and the data-parallel ranks time: the task's own step on a copy of the model.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from ..measure import throughput
from ..data import Source
from ..measure.modes import Amp, Mode, compile_seconds
from ..measure.phases import phase
from .base import Diverged, Group, Progress, RunContext
from .settings import TrainingSettings

AfterStep = Callable[["TrainClock", tuple[torch.optim.Optimizer, ...]], None]


@dataclass(kw_only=True)
class TrainingStep:
    """A task's training step over `model`: `step(x, y)` (y None for a task without labels) takes one step of
    `optimizers` in `amp`'s mode and returns the detached loss (or a row of losses), on the device.
    `loss_name` names it in the divergence message."""

    model: nn.Module
    optimizers: tuple[torch.optim.Optimizer, ...]
    step: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
    amp: Amp
    loss_name: str = "training loss"


@dataclass
class EpochEnd:
    """What a task does after each epoch of `fit`: `evaluate(losses, epoch)` returns that epoch's figures, one
    per name of `curves` (recorded as `curve_<name>`), and may raise Diverged; `describe(figures)` is the
    progress bar's postfix."""

    curves: tuple[str, ...]
    evaluate: Callable[[torch.Tensor, int], dict[str, float]]
    describe: Callable[[dict[str, float]], str] = lambda figures: ""


def fit(
    training: TrainingStep, source: Source, settings: TrainingSettings, context: RunContext, record: dict, end: EpochEnd,
    after_step: AfterStep = lambda clock, optimizers: None,
) -> dict[str, float]:
    """Train `training.model` on `source` for `settings.epochs` epochs (or its budget, see Budget), calling
    `end.evaluate` after each; returns the last epoch's figures.

    Each epoch draws the source's batches in an order from `context.seed`'s generator (this rank's shard of it
    in a data-parallel group), steps the schedules after every step and calls `after_step(clock,
    training.optimizers)` inside the training clock (what it times, it times in `clock.paused()`). `record` gets
    the per-epoch curves (`curve_<name>`, `curve_train_time_s`) as they grow, `train_time_s`, and the budget's
    figures; a run of one epoch also the training seconds and samples at its middle step (`loop_start_s`,
    `loop_start_samples`), where its loop figure starts. The per-step losses are averaged over the group's
    ranks; a non-finite one raises Diverged naming its step.
    """
    group = context.group
    generator = torch.Generator().manual_seed(context.seed)
    clock = TrainClock(context.device, group)
    budget = Budget(settings, clock, record.get("train_flops_per_step"))
    steps_per_epoch = source.steps_per_epoch(settings.batch_size, group.world_size)
    total = budget.planned_steps(steps_per_epoch)
    schedules = [make_schedule(optimizer, settings, total) for optimizer in training.optimizers]
    curves = {key: [] for key in (*end.curves, "train_time_s")}
    record.update({f"curve_{key}": values for key, values in curves.items()})
    record["train_time_s"] = 0.0
    figures: dict[str, float] = {}
    midway = throughput.loop_stretch(total, steps_per_epoch) if not settings.budgeted and settings.epochs == 1 else 0

    def stepped() -> None:
        if budget.taken == midway:  # a one-epoch run's loop figure is its second half's (schema.loop_throughput)
            samples = midway * settings.batch_size * group.world_size
            record.update(loop_start_s=clock.now(), loop_start_samples=samples)
        after_step(clock, training.optimizers)

    with contextlib.closing(context.progress(total, "train")) as progress:
        for epoch in budget.epochs():
            training.model.train()
            with phase("train"), clock:
                losses = run_epoch(
                    training.step, source.epoch(settings.batch_size, generator, group.rank, group.world_size),
                    steps_per_epoch, schedules, progress, budget, stepped,
                )
            record["train_time_s"] = clock.seconds
            losses = group.mean(losses)
            check_finite(losses, epoch, steps_per_epoch, training.loss_name)
            figures = evaluate_epoch(end, losses, epoch, curves, record["train_time_s"])
            progress.set_postfix_str(end.describe(figures))
    record.update(budget.figures(steps_per_epoch))
    return figures


def check_finite(losses: torch.Tensor, epoch: int, steps_per_epoch: int, loss_name: str) -> None:
    """Raises Diverged naming the first step of `epoch` whose loss (a row of losses: their sum) is not finite."""
    bad = first_non_finite(losses if losses.ndim == 1 else losses.sum(1))
    if bad is not None:
        step = epoch * steps_per_epoch + bad + 1
        raise Diverged(f"non-finite {loss_name} at step {step} (epoch {epoch + 1})", step)


def evaluate_epoch(
    end: EpochEnd, losses: torch.Tensor, epoch: int, curves: dict[str, list], train_time_s: float
) -> dict[str, float]:
    """`end.evaluate`'s figures for `epoch`, each of `end.curves` grown by its figure and the
    `train_time_s` curve by `train_time_s`."""
    with phase("evaluate"):
        figures = end.evaluate(losses, epoch)
    for key in end.curves:
        curves[key].append(figures[key])
    curves["train_time_s"].append(train_time_s)
    return figures


def step_maker(
    model: nn.Module, build: Callable[[nn.Module, Amp], TrainingStep], parts: Callable[[nn.Module], Iterable[nn.Module]],
    source: Source, batch_size: int, context: RunContext,
) -> Callable[..., Callable[[], torch.Tensor]]:
    """`make_step(mode=context.mode, trained=(), group=None, sync=True)`: the task's training step (`build(copy,
    amp)`) over a fresh copy of `model` as it stands (in `mode`, its `parts` compiled when the mode compiles),
    with fresh optimizers, or ones resumed from training's own (`trained`, see resume_optimizers), on the next
    batch of `source` as training draws them from `context.seed`.

    With a data-parallel `group`, the copy is wrapped for it (DistributedDataParallel) and draws this rank's
    shard of the batches; then without gradient all-reduce unless `sync`."""

    def make_step(
        mode: Mode = context.mode, trained: Sequence[torch.optim.Optimizer] = (), group: Group | None = None,
        sync: bool = True,
    ) -> Callable[[], torch.Tensor]:
        copied = trainee(model, mode, parts)
        if group is not None:
            copied = group.wrap(copied)
        step = build(copied, Amp(mode, context.device))
        resume_optimizers(step.optimizers, trained)
        shard = (group.rank, group.world_size) if group is not None else (0, 1)
        drawn = source.drawn(batch_size, context.seed, *shard)
        if sync:
            return lambda: step.step(*next(drawn))

        def unsynced() -> torch.Tensor:
            with copied.no_sync():
                return step.step(*next(drawn))

        return unsynced

    return make_step


class TrainClock:
    """The training time of a fit: the seconds spent inside `with clock:` blocks, the device (every rank of
    `group`) synchronized at both ends, less what torch.compile spent compiling meanwhile (recorded apart)."""

    def __init__(self, device: torch.device, group: Group):
        self.device, self.group, self.seconds = device, group, 0.0
        self._started: float | None = None

    def __enter__(self) -> "TrainClock":
        self.group.synchronize(self.device)
        self._compiled, self._started = compile_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc_info) -> None:
        self.seconds = self.now()
        self._started = None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """A block inside `with clock:` whose seconds do not count as training."""
        self.seconds, self._started = self.now(), None
        try:
            yield
        finally:
            self.__enter__()

    def now(self) -> float:
        """The training seconds so far, the block in progress included (the device synchronized first)."""
        if self._started is None:
            return self.seconds
        self.group.synchronize(self.device)
        elapsed = time.perf_counter() - self._started
        return self.seconds + max(0.0, elapsed - (compile_seconds() - self._compiled))


class Budget:
    """How long a fit trains: `settings.epochs` epochs; or, with `budget_s` or `budget_flops`, steps until the
    first step boundary at or past the budget (overshooting by less than one step), in as many epochs as that
    takes, the last one partial. `taken` counts the steps taken."""

    def __init__(self, settings: TrainingSettings, clock: TrainClock, flops_per_step: float | None = None):
        if settings.budget_flops is not None and not flops_per_step:
            raise ValueError("a FLOPs budget needs the FLOPs of one training step")
        self.settings, self.clock, self.flops_per_step, self.taken = settings, clock, flops_per_step, 0

    @property
    def limited(self) -> bool:
        return self.settings.budgeted

    def spent(self) -> bool:
        if self.settings.budget_flops is not None:
            return self.taken * self.flops_per_step >= self.settings.budget_flops
        if self.settings.budget_s is not None:
            return self.clock.now() >= self.settings.budget_s
        return False

    def epochs(self) -> Iterator[int]:
        """Epoch indices from 0, for as long as the budget lasts."""
        epoch = 0
        while (not self.spent()) if self.limited else (epoch < self.settings.epochs):
            yield epoch
            epoch += 1

    def planned_steps(self, steps_per_epoch: int) -> int:
        """TrainingStep the budget will buy (for schedules and progress bars): exact for epochs and FLOPs, the
        `epochs` setting's worth for a time budget."""
        if self.settings.budget_flops is not None:
            return max(1, math.ceil(self.settings.budget_flops / self.flops_per_step))
        return self.settings.epochs * steps_per_epoch

    def figures(self, steps_per_epoch: int) -> dict[str, float | int | None]:
        """What the record says of the budget: it, and the steps and epochs it bought."""
        return {
            "budget_s": self.settings.budget_s,
            "budget_flops": self.settings.budget_flops,
            "train_flops_per_step": self.flops_per_step,
            "steps_trained": self.taken,
            "epochs_trained": self.taken / steps_per_epoch,
        }


def trainee(model: nn.Module, mode: Mode, parts: Callable[[nn.Module], Iterable[nn.Module]]) -> nn.Module:
    """A fresh copy of `model` in training mode, for measuring, with the modules `parts(copy)` compiled when the
    mode compiles (the modules its task calls)."""
    copied = copy.deepcopy(model).train()
    mode.compile_modules(*parts(copied))
    return copied


def resume_optimizers(fresh: Sequence[torch.optim.Optimizer], trained: Sequence[torch.optim.Optimizer]) -> None:
    """Load into each `fresh` optimizer a deep copy of the state of the matching `trained` one (an optimizer over
    the same parameters of another copy of the model, in the same order): its moments, step counts and learning
    rates as training has left them. Nothing when `trained` is empty. (load_state_dict alone would share the
    state's tensors, so that the fresh optimizer's steps moved training's.)"""
    if not trained:
        return
    for optimizer, source in zip(fresh, trained, strict=True):
        optimizer.load_state_dict(copy.deepcopy(source.state_dict()))


def training_windows(
    make_step: Callable[..., Callable[[], object]], items_per_step: int, steps_per_epoch: int,
    training: TrainingSettings, context: RunContext, record: dict,
) -> throughput.TrainingWindows:
    """The windows a fit of `training`'s length times during training (throughput.TrainingWindows), pooled into
    `record`'s training throughput; none in a compiling mode, where a copy of the compiled model would call the
    original."""
    settings = context.measure if not context.mode.compile else dataclasses.replace(context.measure, window_repeats=0)
    planned = None if training.budgeted else training.epochs * steps_per_epoch
    return throughput.TrainingWindows(make_step, items_per_step, steps_per_epoch, context.device, settings, record, planned)



def make_schedule(
    optimizer: torch.optim.Optimizer, settings: TrainingSettings, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-step learning-rate schedule, or None for a constant rate."""
    if settings.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    return None


def run_epoch(
    step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    count: int,
    schedules: Iterable[torch.optim.lr_scheduler.LRScheduler | None] = (),
    progress: Progress = Progress(),
    budget: Budget | None = None,
    after_step: Callable[[], None] = lambda: None,
) -> torch.Tensor:
    """`step` on each of `count` batches, the schedules and the progress bar advanced and `after_step()` called
    after each, stopping early once `budget` is spent (at least one step is taken); returns a (steps taken, ...)
    tensor of what every step returned (its loss or losses), kept on the device."""
    schedules = [schedule for schedule in schedules if schedule is not None]
    losses, taken = None, 0
    for x, y in batches:
        if budget is not None and taken and budget.spent():
            break
        loss = step(x, y)
        if losses is None:
            losses = loss.new_empty((count, *loss.shape))
        losses[taken] = loss
        taken += 1
        if budget is not None:
            budget.taken += 1
        for schedule in schedules:
            schedule.step()
        progress.update()
        after_step()
    return losses[:taken]


def first_non_finite(values: torch.Tensor) -> int | None:
    """Index of the first NaN or infinite entry of a 1-d tensor, or None when all are finite."""
    bad = torch.nonzero(~torch.isfinite(values))
    return int(bad[0, 0]) if len(bad) else None
