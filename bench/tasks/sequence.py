"""The sequence every task's pair runs, written once: a task supplies its `Parts` for one model, and `run` measures
the model's costs, times its training in windows, trains and scores it, and measures its inference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from . import costs
from .base import RunContext
from .costs import Forward
from .loop import AfterStep, training_windows
from .settings import TrainingSettings

StepMaker = Callable[..., Callable[[], object]]  # loop.step_maker's `make_step`


def nothing() -> None:
    """A part with nothing to do."""


@dataclass(frozen=True, kw_only=True)
class Parts:
    """What a task supplies for one model, already in the run's mode: the model, `forward(n)` (the model on its
    first n inputs, for FLOPs and the compute dtype), the timed training step (`make_step`, loop.step_maker) on
    `items_per_step` samples, the training split's `samples` and the epoch's length in steps, and the modules a
    compiling mode compiles.

    `figures()` gives the task's own figures beside the common costs; `fit(after_step)` trains the model and fills
    the record; `evaluate()` scores it right after; `infer()` gives its inference or generation costs; `score()`
    scores what it makes after those (a generator's FID). `evaluate` and `score` fill the record."""

    model: nn.Module
    forward: Forward
    make_step: StepMaker
    items_per_step: int
    samples: int
    steps_per_epoch: int
    compiled: tuple[nn.Module, ...]
    fit: Callable[[AfterStep], None]
    infer: Callable[[], dict]
    figures: Callable[[], dict] = dict
    evaluate: Callable[[], None] = nothing
    score: Callable[[], None] = nothing


def run(
    parts: Parts, settings: TrainingSettings, context: RunContext, record: dict, train: bool = True,
    training_costs: Callable[[Parts], dict] | None = None,
) -> None:
    """Fill `record` with the model's costs (costs.training_costs) and the task's figures, then its training
    throughput in windows before and during training (loop.training_windows); compile it where the mode compiles;
    with `train`, train it from the context's seed (plus the rank's, in a group: each its own dropout) and evaluate
    it; then its inference costs (rank 0's), and with `train` the score of what it makes. Without `train` (what
    `python -m bench.probe` measures), costs only: nothing trains.

    `training_costs(parts)` replaces the common costs where a data-parallel group measures its own
    (bench.run.parallel.rank); no windows are timed during its training then."""
    common = training_costs is None
    count_flops = settings.budget_flops is not None
    record.update(
        costs.training_costs(parts.model, parts.forward, parts.make_step, parts.items_per_step, context, count_flops)
        if common else training_costs(parts)
    )
    record.update(parts.figures())
    after_step = no_windows
    if common:
        after_step = training_windows(parts.make_step, parts.items_per_step, parts.steps_per_epoch, settings, context, record).after_step
    context.mode.compile_modules(*parts.compiled)
    if train:
        torch.manual_seed(context.seed + context.group.rank)
        parts.fit(after_step)
        parts.evaluate()
    if context.group.rank == 0:
        record.update(parts.infer())
    if train:
        parts.score()


def no_windows(clock, optimizers) -> None:
    """The `after_step` of a training that times no windows."""
