"""Classification: train with the suite's optimizer and schedule, evaluate every epoch, measure the costs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import measure
from ..data import ImageData, batch_count, batches, training_batches
from ..modes import Amp, Mode
from .base import (
    Budget, Diverged, Progress, RunContext, TrainClock, TrainingSettings, compute_dtype, first_non_finite,
    make_optimizer, make_schedule, run_epoch, resume_optimizers, trainee, training_windows,
)


@dataclass(frozen=True)
class Settings(TrainingSettings):
    """The suite's `[classify]` table. Defaults are the reference setup: SGD lr 0.001 momentum 0.9, batch 100."""

    target_accuracy: float | None = None
    eval_batch_size: int = 1000

    def problems(self) -> list[str]:
        found = super().problems()
        if self.target_accuracy is not None and not 0 < self.target_accuracy <= 1:
            found.append(f"target_accuracy must be in (0, 1], got {self.target_accuracy}")
        if self.eval_batch_size < 1:
            found.append(f"eval_batch_size must be at least 1, got {self.eval_batch_size}")
        return found


def compiled_parts(model: nn.Module) -> tuple[nn.Module, ...]:
    """The modules this task calls, which a compiling mode compiles: the classifier itself."""
    return (model,)


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, amp: Amp
) -> torch.Tensor:
    """One optimizer step on cross-entropy in `amp`'s mode; returns the detached loss without synchronizing."""
    optimizer.zero_grad(set_to_none=True)
    with amp.autocast():
        loss = F.cross_entropy(model(x).float(), y)
    amp.step(loss, optimizer)
    amp.update()
    return loss.detach()


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    amp: Amp,
    schedule: torch.optim.lr_scheduler.LRScheduler | None = None,
    progress: Progress = Progress(),
    rank: int = 0,
    world_size: int = 1,
    budget: Budget | None = None,
    after_step: Callable[[], None] = lambda: None,
) -> torch.Tensor:
    """One pass over (x, y) in the generator's order (over this rank's shard of it when `world_size` > 1), or
    its part until `budget` is spent; returns every step's loss, kept on the device."""
    model.train()
    return run_epoch(
        lambda xb, yb: train_step(model, optimizer, xb, yb, amp),
        batches(x, y, batch_size, generator, rank, world_size),
        batch_count(len(x), batch_size, world_size),
        [schedule],
        progress,
        budget,
        after_step,
    )


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of `model` in eval mode over all of (x, y)."""
    model.eval()
    correct = torch.zeros((), device=x.device)
    loss = torch.zeros((), device=x.device)
    for xb, yb in batches(x, y, batch_size):
        logits = model(xb).float()
        loss += F.cross_entropy(logits, yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
    return correct.item() / len(x), loss.item() / len(x)


def run(
    model: nn.Module, data: ImageData, settings: Settings, context: RunContext, record: dict, train: bool = True
) -> None:
    """Measure `model`'s training costs, train and evaluate it, then measure inference; fills `record` as it goes.
    The training throughput is timed in windows before and during training (measure.TrainingWindows).
    Without `train`, only the cost figures (what `python -m bench.probe` measures).

    Everything runs in the context's mode: the standardized images and the model in its memory format, the
    measured copies and then the model compiled when it compiles, forward passes under its autocast."""
    mode = context.mode
    data = mode.data(data.standardized)
    model = mode.prepare(model)
    check_outputs(model, data.train_x[:2], data.num_classes)
    make_step = step_maker(model, data, settings, context)
    record.update(training_costs(model, data, settings, context, make_step))
    steps_per_epoch = batch_count(len(data.train_x), settings.batch_size)
    windows = training_windows(make_step, settings.batch_size, steps_per_epoch, context, record)
    mode.compile_modules(*compiled_parts(model))
    if train:
        torch.manual_seed(context.seed)
        fit(model, data, settings, context, record, windows.after_step)
    record.update(inference_costs(model, data, settings, context))


def check_outputs(model: nn.Module, x: torch.Tensor, num_classes: int) -> None:
    """Raise ValueError unless `model` maps a batch of `x` to one score per class: (batch, num_classes)."""
    model.eval()
    with torch.inference_mode():
        scores = model(x)
    expected = (len(x), num_classes)
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != expected:
        got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"the model's output has shape {got}; a classifier must return (batch, classes) = {expected}")


def step_maker(model: nn.Module, data: ImageData, settings: Settings, context: RunContext) -> Callable[..., Callable[[], object]]:
    """`make_step(mode=context.mode, trained=())`: one training step over a fresh copy of `model` as it stands
    (in `mode`) with a fresh optimizer, or one resumed from training's own (`trained`, see resume_optimizers),
    on the next batch of the training split as training draws them."""

    def make_step(mode: Mode = context.mode, trained: Sequence[torch.optim.Optimizer] = ()):
        copied = trainee(model, mode, compiled_parts)
        optimizer, amp = make_optimizer(copied.parameters(), settings), Amp(mode, context.device)
        resume_optimizers([optimizer], trained)
        drawn = training_batches(data.train_x, data.train_y, settings.batch_size, context.seed)
        return lambda: train_step(copied, optimizer, *next(drawn), amp)

    return make_step


def training_costs(
    model: nn.Module, data: ImageData, settings: Settings, context: RunContext,
    make_step: Callable[..., Callable[[], object]] | None = None,
) -> dict:
    """Parameters, FLOPs per sample (counted on the eager model), the dtype its layers compute in, and
    training-step throughput and peak memory of `make_step`'s steps (by default `step_maker`'s)."""
    make_step = make_step or step_maker(model, data, settings, context)
    x = data.train_x[: settings.batch_size]
    figures = model_figures(model, x, context)
    costs = measure.training_costs(make_step, len(x), context.device, context.measure)
    if settings.budget_flops is not None:  # one step of an eager copy, forward and backward
        costs["train_flops_per_step"] = measure.flops(make_step(Mode()))
    return {**figures, **costs}


def model_figures(model: nn.Module, x: torch.Tensor, context: RunContext) -> dict:
    """`model`'s parameter counts, FLOPs per sample (counted on the eager model on `x[:1]`) and the dtype its
    layers compute in under the context's mode."""
    total, trainable = measure.parameter_counts(model)
    model.eval()
    with torch.inference_mode():
        flops = measure.flops(lambda: model(x[:1]))
    dtype = compute_dtype(model, lambda: model(x[:2]), context)
    return {"params": total, "trainable_params": trainable, "flops_per_sample": flops, "compute_dtype": dtype}


def inference_costs(model: nn.Module, data: ImageData, settings: Settings, context: RunContext) -> dict:
    """Inference throughput at the suite's batch size and batch-1 latency percentiles, in eval mode, in the
    context's mode."""
    x = data.test_x[: settings.batch_size]
    model.eval()
    with context.mode.autocast(context.device):
        return measure.inference_costs(lambda: model(x), lambda: model(x[:1]), len(x), context.device, context.measure)


def fit(
    model: nn.Module, data: ImageData, settings: Settings, context: RunContext, record: dict,
    after_step: Callable[[TrainClock, tuple[torch.optim.Optimizer, ...]], None] = lambda clock, optimizers: None,
) -> None:
    """Train for `settings.epochs` (or its budget, see Budget), evaluating after each epoch; per-epoch curves and
    final metrics go into `record`, with the steps and epochs trained. `after_step(clock, (optimizer,))` runs
    after every step, inside the training clock (what it times, it times in `clock.paused()`).

    Training accuracy is measured like test accuracy (eval mode) on the first len(test) training samples,
    so that the generalization gap compares like with like. Raises Diverged on a non-finite loss.

    Data-parallel (`context.group` of several ranks, `model` wrapped in DistributedDataParallel): every rank
    trains on its shard of the same per-epoch order, clocks are read after all ranks got there, the
    per-step losses are averaged over the ranks, and every rank evaluates the whole test set on its replica
    (identical to rank 0's, whose figures are recorded); nothing of the evaluation is all-reduced.
    """
    device, group = context.device, context.group
    generator = torch.Generator().manual_seed(context.seed)
    optimizer, amp, clock = make_optimizer(model.parameters(), settings), Amp(context.mode, device), TrainClock(device, group)
    budget = Budget(settings, clock, record.get("train_flops_per_step"))
    steps_per_epoch = batch_count(len(data.train_x), settings.batch_size, group.world_size)
    schedule = make_schedule(optimizer, settings, budget.planned_steps(steps_per_epoch))
    train_probe = data.train_x[: len(data.test_x)], data.train_y[: len(data.test_x)]
    curves = {key: [] for key in ("train_loss", "test_accuracy", "test_loss", "train_accuracy", "train_time_s")}
    record.update({f"curve_{key}": values for key, values in curves.items()})
    record.update(train_time_s=0.0, epochs_to_target=None, time_to_target_s=None)
    progress = context.progress(budget.planned_steps(steps_per_epoch), "train")
    try:
        for epoch in budget.epochs():
            with clock:
                losses = train_epoch(
                    model, optimizer, data.train_x, data.train_y, settings.batch_size, generator, amp, schedule,
                    progress, group.rank, group.world_size, budget, lambda: after_step(clock, (optimizer,)),
                )
            record["train_time_s"] = clock.seconds
            losses = group.mean(losses)
            bad = first_non_finite(losses)
            if bad is not None:
                step = epoch * steps_per_epoch + bad + 1
                raise Diverged(f"non-finite training loss at step {step} (epoch {epoch + 1})", step)
            with amp.autocast():
                test_accuracy, test_loss = evaluate(model, data.test_x, data.test_y, settings.eval_batch_size)
                train_accuracy, train_probe_loss = evaluate(model, *train_probe, settings.eval_batch_size)
            if not (math.isfinite(test_loss) and math.isfinite(train_probe_loss)):
                step = (epoch + 1) * steps_per_epoch
                raise Diverged(f"non-finite outputs at evaluation after epoch {epoch + 1} (step {step})", step)
            curves["train_loss"].append(losses.mean().item())
            curves["test_accuracy"].append(test_accuracy)
            curves["test_loss"].append(test_loss)
            curves["train_accuracy"].append(train_accuracy)
            curves["train_time_s"].append(record["train_time_s"])
            progress.set_postfix_str(f"test acc {test_accuracy:.3f}")
            target = settings.target_accuracy
            if target is not None and record["epochs_to_target"] is None and test_accuracy >= target:
                record.update(epochs_to_target=epoch + 1, time_to_target_s=record["train_time_s"])
    finally:
        progress.close()
    record.update(budget.figures(steps_per_epoch))
    record.update(
        test_accuracy=test_accuracy,
        test_loss=test_loss,
        train_accuracy=train_accuracy,
        train_loss=curves["train_loss"][-1],
        generalization_gap=train_accuracy - test_accuracy,
    )
