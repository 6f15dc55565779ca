"""What every task loop shares: its settings, the run context, optimizers and schedules, divergence."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import torch
from torch import nn

from ..measure import MeasureSettings, synchronize
from ..modes import Mode, compute_dtypes

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

    Data-parallel runs pass a subclass whose methods are collectives over every rank (bench.parallel.rank.DDPGroup).
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
