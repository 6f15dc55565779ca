"""What every task shares besides its loop (bench.tasks.loop): the run context, the process group, the
optimizer, the compute dtype and divergence."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from ..measure.timing import MeasureSettings, synchronize
from ..measure.modes import Amp, Mode, compute_dtypes
from .settings import FidSettings, TrainingSettings


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

    Data-parallel runs pass a subclass whose methods are collectives over every rank (bench.run.parallel.rank.DDPGroup).
    """

    rank = 0
    world_size = 1

    def synchronize(self, device: torch.device) -> None:
        """Return once the device's queued work is done (in a group: on every rank); call before a clock read."""
        synchronize(device)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """`values` averaged element-wise over the ranks."""
        return values

    def wrap(self, model: nn.Module) -> nn.Module:
        """`model` as the group trains it (in a data-parallel group, wrapped to all-reduce its gradients)."""
        return model


@dataclass(kw_only=True)
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
    """The settings' optimizer over `params`, in PyTorch's fused implementation wherever it has one for their
    device and dtype (CPU and CUDA for SGD, Adam and AdamW): one kernel per step, where PyTorch's default on a CPU
    is a Python loop of several operations per parameter tensor. That loop cost the quick suite's models 4-31%
    of a training step (tests/benchmarks/optimizer_step.py). The update is the same up to float rounding."""
    params = list(params)
    if settings.optimizer == "sgd":
        cls, options = torch.optim.SGD, dict(lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    else:
        cls = torch.optim.Adam if settings.optimizer == "adam" else torch.optim.AdamW
        options = dict(lr=settings.lr, betas=tuple(settings.betas), weight_decay=settings.weight_decay)
    try:
        return cls(params, fused=True, **options)
    except RuntimeError:  # PyTorch has no fused kernel for these parameters' device or dtype, and says so here
        return cls(params, **options)


def optimizer_step(optimizer: torch.optim.Optimizer, amp: Amp, loss: Callable[[], torch.Tensor]) -> torch.Tensor:
    """One step of `optimizer` on the scalar `loss()` computes under `amp`'s autocast (the step Amp describes, for
    a task with one loss and one optimizer); returns the loss detached, without synchronizing."""
    optimizer.zero_grad(set_to_none=True)
    with amp.autocast():
        value = loss()
    amp.step(value, optimizer)
    amp.update()
    return value.detach()
