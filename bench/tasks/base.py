"""What every task loop shares: its settings, the run context, optimizers and schedules, divergence."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from .. import measure
from ..measure import MeasureSettings, synchronize
from ..modes import Mode, compile_seconds, compute_dtypes

if TYPE_CHECKING:
    from .reference import FidSettings

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainingSettings:
    """Training budget and optimizer of one task, read from the suite's table for that task.

    The budget is `epochs`, or instead (then `epochs` is ignored) seconds of training (`budget_s`) or training
    FLOPs (`budget_flops`, counted on one training step of the eager model) per architecture: equal compute
    rather than equal passes over the data."""

    epochs: int = 10
    budget_s: float | None = None
    budget_flops: float | None = None
    batch_size: int = 100
    optimizer: str = "sgd"
    lr: float = 0.001
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    schedule: str = "constant"

    def problems(self) -> list[str]:
        """Human-readable reasons these settings are impossible; empty when they are fine."""
        found = []
        if self.epochs < 1:
            found.append(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            found.append(f"batch_size must be at least 1, got {self.batch_size}")
        for name in ("budget_s", "budget_flops"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                found.append(f"{name} must be positive, got {getattr(self, name):g}")
        if self.budget_s is not None and self.budget_flops is not None:
            found.append("give budget_s or budget_flops, not both")
        if self.budget_s is not None and self.schedule == "cosine":
            found.append("a cosine schedule needs the number of steps in advance: use epochs or budget_flops with it, not budget_s")
        if self.lr <= 0:
            found.append(f"lr must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1:
            found.append(f"momentum must be in [0, 1), got {self.momentum}")
        if not all(0 <= beta < 1 for beta in self.betas):
            found.append(f"betas must both be in [0, 1), got {list(self.betas)}")
        if self.weight_decay < 0:
            found.append(f"weight_decay must not be negative, got {self.weight_decay}")
        if self.optimizer not in OPTIMIZERS:
            found.append(f"unknown optimizer {self.optimizer!r} (valid: {', '.join(OPTIMIZERS)})")
        if self.schedule not in SCHEDULES:
            found.append(f"unknown schedule {self.schedule!r} (valid: {', '.join(SCHEDULES)})")
        return found

    def model_overrides(self) -> dict[str, object]:
        """Keyword arguments the harness passes to the builder of every architecture of this task; none here."""
        return {}


class Diverged(RuntimeError):
    """Training produced a non-finite loss (or another sign of collapse) at `step`."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class Progress:
    """The interface of a progress bar (tqdm's subset the tasks use); this one shows nothing."""

    def update(self, n: int = 1) -> None: ...

    def set_postfix_str(self, text: str) -> None: ...

    def close(self) -> None: ...


class Group:
    """The processes that train one model together. This one is a single process: rank 0 of 1.

    Data-parallel runs pass a subclass whose methods are collectives over every rank (bench.ddp.DDPGroup).
    """

    rank = 0
    world_size = 1

    def synchronize(self, device: torch.device) -> None:
        """Return once the device's queued work is done (in a group: on every rank); call before a clock read."""
        synchronize(device)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """`values` averaged element-wise over the ranks."""
        return values


@dataclass
class RunContext:
    """Everything a task loop needs besides the model, the data and its settings.

    `fid` is the suite's `[fid]` table (the reference classifier of generators); None stands for its defaults.
    `mode` is the precision, memory format and compilation every forward pass and step runs in (resolved).
    """

    device: torch.device
    seed: int
    measure: MeasureSettings
    run_dir: Path
    progress: Callable[[int, str], Progress] = lambda total, description: Progress()
    group: Group = field(default_factory=Group)
    fid: FidSettings | None = None
    mode: Mode = field(default_factory=Mode)


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
    takes, the last one partial. `steps` counts the steps taken."""

    def __init__(self, settings: TrainingSettings, clock: TrainClock, flops_per_step: float | None = None):
        if settings.budget_flops is not None and not flops_per_step:
            raise ValueError("a FLOPs budget needs the FLOPs of one training step")
        self.settings, self.clock, self.flops_per_step, self.steps = settings, clock, flops_per_step, 0

    @property
    def limited(self) -> bool:
        return self.settings.budget_s is not None or self.settings.budget_flops is not None

    def spent(self) -> bool:
        if self.settings.budget_flops is not None:
            return self.steps * self.flops_per_step >= self.settings.budget_flops
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
        """Steps the budget will buy (for schedules and progress bars): exact for epochs and FLOPs, the
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
            "steps_trained": self.steps,
            "epochs_trained": self.steps / steps_per_epoch,
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
    make_step: Callable[..., Callable[[], object]], items_per_step: int, steps_per_epoch: int, context: RunContext,
    record: dict,
) -> measure.TrainingWindows:
    """The windows a fit times during training (measure.TrainingWindows), pooled into `record`'s training
    throughput; none in a compiling mode, where a copy of the compiled model would call the original."""
    settings = context.measure if not context.mode.compile else dataclasses.replace(context.measure, window_repeats=0)
    return measure.TrainingWindows(make_step, items_per_step, steps_per_epoch, context.device, settings, record)


def compute_dtype(model: nn.Module, call: Callable[[], object], context: RunContext) -> str:
    """The dtypes `model`'s convolutions and linear layers run in during `call()` under the context's mode,
    comma-separated (e.g. `bfloat16`); what autocast actually did, not what was asked."""
    model.eval()
    with compute_dtypes(model) as seen, torch.inference_mode(), context.mode.autocast(context.device):
        call()
    return ",".join(sorted(seen))


def make_optimizer(params: Iterable[torch.nn.Parameter], settings: TrainingSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
        )
    cls = torch.optim.Adam if settings.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=settings.lr, betas=tuple(settings.betas), weight_decay=settings.weight_decay)


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
    steps: int,
    schedules: Iterable[torch.optim.lr_scheduler.LRScheduler | None] = (),
    progress: Progress = Progress(),
    budget: Budget | None = None,
    after_step: Callable[[], None] = lambda: None,
) -> torch.Tensor:
    """`step` on each of `steps` batches, the schedules and the progress bar advanced and `after_step()` called
    after each, stopping early once `budget` is spent (at least one step is taken); returns a (steps taken, ...)
    tensor of what every step returned (its loss or losses), kept on the device."""
    schedules = [schedule for schedule in schedules if schedule is not None]
    losses, taken = None, 0
    for x, y in batches:
        if budget is not None and taken and budget.spent():
            break
        loss = step(x, y)
        if losses is None:
            losses = loss.new_empty((steps, *loss.shape))
        losses[taken] = loss
        taken += 1
        if budget is not None:
            budget.steps += 1
        for schedule in schedules:
            schedule.step()
        progress.update()
        after_step()
    return losses[:taken]


def first_non_finite(values: torch.Tensor) -> int | None:
    """Index of the first NaN or infinite entry of a 1-d tensor, or None when all are finite."""
    bad = torch.nonzero(~torch.isfinite(values))
    return int(bad[0, 0]) if len(bad) else None
