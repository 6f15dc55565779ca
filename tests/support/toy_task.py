"""A task archbench does not ship, added from a plugin module as one entry of the task table: a small
autoencoder scored by its reconstruction loss on the test split (lower is better).

Loaded with `--arch-module tests/support/toy_task.py` (child processes and `python -m bench.probe` import it
too): it registers the task (`bench.tasks.register`) and one architecture of it, `toy-ae`, and touches no other
module of archbench.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import architectures
from bench import tasks
from bench.measure.modes import Amp
from bench.tasks import costs, loop
from bench.tasks.base import make_optimizer
from bench.tasks.figures import INFER, TRAIN, Column, Figure, Number, Table
from bench.tasks.sequence import Parts
from bench.tasks.settings import TrainingSettings

TASK = "reconstruct"
LOSS = Figure(key="test_reconstruction_loss", kind="quality", higher_is_better=False, tolerance=0.01)


@dataclass(frozen=True, kw_only=True)
class ReconstructSettings(TrainingSettings):
    """The suite's `[reconstruct]` table: training as every task's, and the evaluation batch."""

    eval_batch_size: int = 500


def reconstruction_loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(model(x).float(), x.float())


@torch.inference_mode()
def evaluate(model: nn.Module, source, batch_size: int) -> float:
    """The mean squared reconstruction error of `model` in eval mode over all of `source`."""
    model.eval()
    total = sum(reconstruction_loss(model, xb) * len(xb) for xb, _ in source.in_order(batch_size))
    return float(total) / len(source)


def training_step(model: nn.Module, settings: ReconstructSettings, amp: Amp) -> loop.TrainingStep:
    optimizer = make_optimizer(model.parameters(), settings)

    def step(x: torch.Tensor, y) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with amp.autocast():
            loss = reconstruction_loss(model, x)
        amp.step(loss, optimizer)
        amp.update()
        return loss.detach()

    return loop.TrainingStep(model=model, optimizers=(optimizer,), step=step, amp=amp, loss_name="reconstruction loss")


def parts(model: nn.Module, data, settings: ReconstructSettings, context, record: dict) -> Parts:
    """The autoencoder's parts for the one sequence: its step on the training images, its fit evaluating the test
    reconstruction loss every epoch, its inference on the test images."""
    splits = data.splits(context.mode, context.seed)
    model = context.mode.prepare(model)
    x, test = splits.train.head(settings.batch_size), splits.test.head(settings.batch_size)
    build = lambda copied, amp: training_step(copied, settings, amp)

    def fit(after_step) -> None:
        def end_of_epoch(losses: torch.Tensor, epoch: int) -> dict[str, float]:
            return {"train_loss": losses.mean().item(), LOSS.key: evaluate(model, splits.test, settings.eval_batch_size)}

        end = loop.EpochEnd(("train_loss", LOSS.key), end_of_epoch)
        training = training_step(model, settings, Amp(context.mode, context.device))
        record.update(loop.fit(training, splits.train, settings, context, record, end, after_step))

    return Parts(
        model=model, forward=lambda n: model(x[:n]),
        make_step=loop.step_maker(model, build, lambda m: (m,), splits.train, settings.batch_size, context),
        items_per_step=len(x), samples=len(splits.train), steps_per_epoch=splits.train.steps_per_epoch(settings.batch_size),
        compiled=(model,), fit=fit, infer=lambda: costs.inference_costs(model, lambda n: model(test[:n]), len(test), context),
    )


tasks.register(tasks.Task(
    name=TASK, settings=ReconstructSettings, module=__name__, figures=(LOSS,),
    table=Table(
        name="autoencoders", title="Autoencoders", figure=LOSS, quality_name="reconstruction loss",
        quality_label="test reconstruction loss (MSE)", curve=f"curve_{LOSS.key}", curve_label="test MSE",
        columns=(
            Column(LOSS.key, "test MSE", Number(significant=3)),
            Column("params", "params", Number(decimals=0)),
            TRAIN, INFER,
        ),
    ),
    keys=(LOSS.key, "train_loss", "curve_train_loss", f"curve_{LOSS.key}", "infer_throughput", "infer_throughput_iqr",
          "infer_throughput_repeats"),
))


class TinyAutoencoder(nn.Module):
    def __init__(self, input_shape, code: int = 8):
        super().__init__()
        c, h, w = input_shape
        self.shape = input_shape
        self.encode = nn.Linear(c * h * w, code)
        self.decode = nn.Linear(code, c * h * w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(torch.relu(self.encode(x.flatten(1)))).view(len(x), *self.shape)


@architectures.register("toy-ae", task=TASK, family="test", description="a one-layer autoencoder")
def toy_ae(input_shape, num_classes):
    return TinyAutoencoder(input_shape)
