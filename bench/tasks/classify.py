"""Classification: train with the suite's optimizer and schedule, evaluate every epoch, measure the costs."""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Source, Splits
from ..measure.throughput import loader_throughput
from ..measure.phases import phase
from ..measure.modes import Amp
from . import costs, loop
from .base import Diverged, RunContext, make_optimizer, optimizer_step
from .loop import AfterStep, EpochEnd, TrainingStep
from .sequence import Parts
from .settings import ClassifySettings


def compiled_parts(model: nn.Module) -> tuple[nn.Module, ...]:
    """The modules this task calls, which a compiling mode compiles: the classifier itself."""
    return (model,)


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, amp: Amp
) -> torch.Tensor:
    """One optimizer step on cross-entropy in `amp`'s mode; returns the detached loss without synchronizing."""
    return optimizer_step(optimizer, amp, lambda: F.cross_entropy(model(x).float(), y))


def training_step(model: nn.Module, settings: ClassifySettings, amp: Amp) -> TrainingStep:
    """The classifier's training step over `model`: cross-entropy, one optimizer of the suite's kind."""
    optimizer = make_optimizer(model.parameters(), settings)
    step = lambda x, y: train_step(model, optimizer, x, y, amp)
    return TrainingStep(model=model, optimizers=(optimizer,), step=step, amp=amp)


@torch.inference_mode()
def evaluate(model: nn.Module, source: Source, batch_size: int) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of `model` in eval mode over all of `source`."""
    model.eval()
    correct = loss = 0  # sums kept on the device: one synchronization at the end, not one per batch
    for xb, yb in source.in_order(batch_size):
        logits = model(xb).float()
        loss = loss + F.cross_entropy(logits, yb, reduction="sum")
        correct = correct + (logits.argmax(1) == yb).sum()
    return float(correct) / len(source), float(loss) / len(source)


def parts(model: nn.Module, data, settings: ClassifySettings, context: RunContext, record: dict) -> Parts:
    """The classifier's parts for the one sequence (sequence.run): costs on its training inputs, the timed step of
    `steps`, `fit` with its evaluation every epoch, inference on the test inputs. The model's outputs are checked
    first (`check_outputs`).

    `data` is an ImageData or a streamed folder (bench.data.stream.FolderStream): anything whose `splits` gives
    the sources. Where the training split streams, the loader alone is timed too (`loader_throughput`), so that
    the report can say whether training was bound by the input pipeline.

    Everything runs in the context's mode: the standardized images and the model in its memory format, the
    measured copies and then the model compiled when it compiles, forward passes under its autocast."""
    splits = data.splits(context.mode, context.seed)
    model = context.mode.prepare(model)
    check_outputs(model, splits.train.head(2), splits.num_classes)
    x = splits.train.head(settings.batch_size)

    def loader() -> dict:
        if splits.loader is None or context.group.world_size > 1:  # a group's ranks would time it all at once
            return {}
        with phase("loader"):
            return loader_throughput(splits.loader, settings.batch_size, context.measure.max_time, context.seed)

    return Parts(
        model=model, forward=lambda n: model(x[:n]), make_step=step_maker(model, splits, settings, context),
        items_per_step=len(x), samples=len(splits.train), steps_per_epoch=splits.train.steps_per_epoch(settings.batch_size),
        compiled=compiled_parts(model), figures=loader,
        fit=lambda after_step: fit(context.group.wrap(model), splits, settings, context, record, after_step),
        infer=lambda: inference_costs(model, splits, settings, context),
    )


def check_outputs(model: nn.Module, x: torch.Tensor, num_classes: int) -> None:
    """Raise ValueError unless `model` maps a batch of `x` to one score per class: (batch, num_classes); one that
    raises on it (one that cannot take the data's shape, say) is a ValueError naming the shape, on one line."""
    model.eval()
    try:
        with torch.inference_mode():
            scores = model(x)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as error:  # a model that cannot take the data's shape, mostly: say which shape, on one line
        shape = "x".join(map(str, x.shape[1:]))
        text = str(error).strip()
        reason = f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
        raise ValueError(f"the model failed on a batch of {len(x)} inputs of {shape}: {reason}") from error
    expected = (len(x), num_classes)
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != expected:
        got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"the model's output has shape {got}; a classifier must return (batch, classes) = {expected}")


def step_maker(model: nn.Module, splits: Splits, settings: ClassifySettings, context: RunContext) -> Callable[..., Callable[[], object]]:
    """The timed training step (loop.step_maker) of this task's `steps` over `model`, on the training split."""
    build = lambda copied, amp: training_step(copied, settings, amp)
    return loop.step_maker(model, build, compiled_parts, splits.train, settings.batch_size, context)


def inference_costs(model: nn.Module, splits: Splits, settings: ClassifySettings, context: RunContext) -> dict:
    """Inference throughput at the suite's batch size and batch-1 latency percentiles, in eval mode, in the
    context's mode."""
    x = splits.test.head(settings.batch_size)
    return costs.inference_costs(model, lambda n: model(x[:n]), len(x), context)


def fit(
    model: nn.Module, splits: Splits, settings: ClassifySettings, context: RunContext, record: dict,
    after_step: AfterStep = lambda clock, optimizers: None,
) -> None:
    """Train for `settings.epochs` (or its budget) in the one loop (loop.fit), evaluating after each epoch;
    per-epoch curves and final metrics go into `record`, with the steps and epochs trained. `after_step(clock,
    (optimizer,))` runs after every step, inside the training clock.

    Training accuracy is measured like test accuracy (eval mode) on the first len(test) training samples,
    so that the generalization gap compares like with like. Raises Diverged on a non-finite loss, or on
    non-finite outputs at evaluation.

    Data-parallel (`context.group` of several ranks, `model` wrapped in DistributedDataParallel): every rank
    trains on its shard of the same per-epoch order, clocks are read after all ranks got there, the
    per-step losses are averaged over the ranks, and every rank evaluates the whole test set on its replica
    (identical to rank 0's, whose figures are recorded); nothing of the evaluation is all-reduced.
    """
    training = training_step(model, settings, Amp(context.mode, context.device))
    train, test, probe = splits.train, splits.test, splits.probe
    steps_per_epoch = train.steps_per_epoch(settings.batch_size, context.group.world_size)
    record.update(epochs_to_target=None, time_to_target_s=None)

    def evaluate_epoch(losses: torch.Tensor, epoch: int) -> dict[str, float]:
        with training.amp.autocast():
            test_accuracy, test_loss = evaluate(model, test, settings.eval_batch_size)
            train_accuracy, train_probe_loss = evaluate(model, probe, settings.eval_batch_size)
        if not (math.isfinite(test_loss) and math.isfinite(train_probe_loss)):
            step = (epoch + 1) * steps_per_epoch
            raise Diverged(f"non-finite outputs at evaluation after epoch {epoch + 1} (step {step})", step)
        target = settings.target_accuracy
        if target is not None and record["epochs_to_target"] is None and test_accuracy >= target:
            record.update(epochs_to_target=epoch + 1, time_to_target_s=record["train_time_s"])
        return {
            "train_loss": losses.mean().item(), "test_accuracy": test_accuracy, "test_loss": test_loss,
            "train_accuracy": train_accuracy,
        }

    curves = ("train_loss", "test_accuracy", "test_loss", "train_accuracy")
    end = EpochEnd(curves, evaluate_epoch, lambda figures: f"test acc {figures['test_accuracy']:.3f}")
    last = loop.fit(training, train, settings, context, record, end, after_step)
    record.update(last, generalization_gap=last["train_accuracy"] - last["test_accuracy"])
