"""GANs: the DCGAN recipe by default (non-saturating loss, Adam lr 2e-4, betas (0.5, 0.999)); the generator is judged.

A step updates the discriminator on a real batch and as many generated images (targets 1 and 0), then the
generator on those generated images so that the discriminator says 1 (the non-saturating loss). Training is
`diverged` at a non-finite loss, or when the discriminator collapses: its loss stays below `collapse_loss`
for `collapse_steps` steps in a row, so it tells every generated image from a real one and the generator
has stopped getting through.

With `ema` (a decay such as 0.99), the generator judged is an exponential moving average of the trained one's
weights and buffers, updated after every generator step (as BigGAN and StyleGAN judge theirs): a small GAN's
generator swings from step to step, and its average draws steadier shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .. import measure
from ..data import ImageData, batch_count, batches, training_batches
from ..modes import Amp, Mode
from . import generative
from .base import (
    Budget, Diverged, Progress, RunContext, TrainClock, first_non_finite, make_optimizer, make_schedule,
    run_epoch, resume_optimizers, trainee, training_windows,
)


@dataclass(frozen=True)
class Settings(generative.GenerativeSettings):
    """The suite's `[gan]` table. Defaults: DCGAN's batch 128, Adam lr 2e-4, betas (0.5, 0.999), latent size 100."""

    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 0.0002
    betas: tuple[float, float] = (0.5, 0.999)
    latent_dim: int = 100
    collapse_loss: float = 0.01
    collapse_steps: int = 100
    ema: float = 0.0  # decay of the moving average of the generator that is judged; 0: the generator as trained

    def problems(self) -> list[str]:
        found = super().problems()
        if self.collapse_loss < 0:
            found.append(f"collapse_loss must not be negative, got {self.collapse_loss}")
        if self.collapse_steps < 1:
            found.append(f"collapse_steps must be at least 1, got {self.collapse_steps}")
        if not 0 <= self.ema < 1:
            found.append(f"ema must be in [0, 1), got {self.ema}")
        return found


def compiled_parts(model: nn.Module) -> tuple[nn.Module, ...]:
    """The modules this task calls, which a compiling mode compiles: the generator and the discriminator."""
    return model.generator, model.discriminator


def optimizers(model: nn.Module, settings: Settings) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """One optimizer of the suite's kind for the generator, one for the discriminator."""
    generator, discriminator = model.generator.parameters(), model.discriminator.parameters()
    return make_optimizer(generator, settings), make_optimizer(discriminator, settings)


def moving_average(model: nn.Module, settings: Settings) -> AveragedModel | None:
    """The exponential moving average of `model`'s generator (weights and buffers) that `settings.ema` asks for,
    starting from the generator as it is; None without `ema`."""
    if not settings.ema:
        return None
    return AveragedModel(model.generator, multi_avg_fn=get_ema_multi_avg_fn(settings.ema), use_buffers=True)


def train_step(
    model: nn.Module, g_optimizer: torch.optim.Optimizer, d_optimizer: torch.optim.Optimizer, x: torch.Tensor,
    amp: Amp, average: AveragedModel | None = None,
) -> torch.Tensor:
    """One discriminator step, then one generator step, in `amp`'s mode, then `average` updated from the
    generator; returns (discriminator loss, generator loss), detached. The losses are computed in float32 from
    the discriminator's logits."""
    d_optimizer.zero_grad(set_to_none=True)
    with amp.autocast():
        fake = model.generator(torch.randn(len(x), model.latent_dim, device=x.device))
        real_logits = model.discriminator(x).reshape(-1).float()
        fake_logits = model.discriminator(fake.detach()).reshape(-1).float()
        d_loss = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        d_loss = d_loss + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    amp.step(d_loss, d_optimizer)
    g_optimizer.zero_grad(set_to_none=True)
    with amp.autocast():
        fooled = model.discriminator(fake).reshape(-1).float()
        g_loss = F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
    amp.step(g_loss, g_optimizer)
    amp.update()
    if average is not None:
        average.update_parameters(model.generator)
    return torch.stack([d_loss.detach(), g_loss.detach()])


def train_epoch(
    model: nn.Module,
    g_optimizer: torch.optim.Optimizer,
    d_optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    amp: Amp,
    schedules: list[torch.optim.lr_scheduler.LRScheduler],
    progress: Progress = Progress(),
    budget: Budget | None = None,
    average: AveragedModel | None = None,
    after_step: Callable[[], None] = lambda: None,
) -> torch.Tensor:
    """One pass over x in the generator's order, or its part until `budget` is spent; returns every step's
    (discriminator, generator) loss, on the device."""
    model.train()
    return run_epoch(
        lambda xb, _: train_step(model, g_optimizer, d_optimizer, xb, amp, average),
        batches(x, x, batch_size, generator),
        batch_count(len(x), batch_size),
        schedules,
        progress,
        budget,
        after_step,
    )


def collapse_step(d_losses: torch.Tensor, threshold: float, window: int) -> int | None:
    """The 1-based step at which the discriminator's loss has been below `threshold` for `window` steps in a row."""
    if len(d_losses) < window:
        return None
    counts = (d_losses < threshold).long().cumsum(0)
    in_window = counts[window - 1 :] - torch.cat([counts.new_zeros(1), counts[:-window]])
    hits = torch.nonzero(in_window == window)
    return int(hits[0, 0]) + window if len(hits) else None


def run(
    model: nn.Module, data: ImageData, settings: Settings, context: RunContext, record: dict, train: bool = True
) -> None:
    """Measure costs on copies, train, then record generation costs and the generator's FID/KID.
    Without `train`, only the cost figures (what `python -m bench.probe` measures).

    Beyond the costs every generator has (bench.tasks.generative): `latent_dim`, `discriminator_params`,
    the last epoch's mean `d_loss` and `g_loss`, and their per-epoch curves. Everything runs in the context's
    mode (see classify.run); FID compares against the original test images.
    """
    mode = context.mode
    images, model = mode.data(data), mode.prepare(model)
    x = images.train_x[: settings.batch_size]

    def make_step(step_mode: Mode = mode, trained: Sequence[torch.optim.Optimizer] = ()):
        copied = trainee(model, step_mode, compiled_parts)
        (g_optimizer, d_optimizer), amp = optimizers(copied, settings), Amp(step_mode, context.device)
        resume_optimizers([g_optimizer, d_optimizer], trained)
        drawn = training_batches(images.train_x, images.train_x, settings.batch_size, context.seed)
        average = moving_average(copied, settings)
        return lambda: train_step(copied, g_optimizer, d_optimizer, next(drawn)[0], amp, average)

    record.update(latent_dim=model.latent_dim, discriminator_params=measure.parameter_counts(model.discriminator)[0])
    record.update(generative.training_costs(
        model, model.generator, model.generator, make_step, len(x), context, settings.budget_flops is not None
    ))
    steps_per_epoch = batch_count(len(images.train_x), settings.batch_size)
    windows = training_windows(make_step, len(x), steps_per_epoch, context, record)
    mode.compile_modules(*compiled_parts(model))
    if train:
        torch.manual_seed(context.seed)
        fit(model, images, settings, context, record, windows.after_step)
    record.update(generative.generation_costs(model, model.generator, settings, context))
    if train:
        generative.evaluate_samples(model, model.generator, data, settings, context, record)


def fit(
    model: nn.Module, data: ImageData, settings: Settings, context: RunContext, record: dict,
    after_step: Callable[[TrainClock, tuple[torch.optim.Optimizer, ...]], None] = lambda clock, optimizers: None,
) -> None:
    """Train for `settings.epochs` on the [0, 1] training images; per-epoch mean losses go into `record`. With
    `settings.ema`, the generator ends as the moving average of its weights and buffers.

    Raises Diverged at the first step with a non-finite loss, or where the discriminator has collapsed.
    `after_step(clock, (g_optimizer, d_optimizer))` runs after every step, inside the training clock (what it
    times, it times in `clock.paused()`).
    """
    device = context.device
    generator = torch.Generator().manual_seed(context.seed)
    (g_optimizer, d_optimizer), amp = optimizers(model, settings), Amp(context.mode, device)
    clock = TrainClock(device, context.group)
    budget = Budget(settings, clock, record.get("train_flops_per_step"))
    steps_per_epoch = batch_count(len(data.train_x), settings.batch_size)
    total = budget.planned_steps(steps_per_epoch)
    schedules = [s for s in (make_schedule(o, settings, total) for o in (g_optimizer, d_optimizer)) if s is not None]
    curves = {key: [] for key in ("d_loss", "g_loss", "train_time_s")}
    record.update({f"curve_{key}": values for key, values in curves.items()})
    record["train_time_s"] = 0.0
    d_losses = []
    average = moving_average(model, settings)
    progress = context.progress(total, "train")
    try:
        for epoch in budget.epochs():
            with clock:
                losses = train_epoch(
                    model, g_optimizer, d_optimizer, data.train_x, settings.batch_size, generator, amp, schedules,
                    progress, budget, average, lambda: after_step(clock, (g_optimizer, d_optimizer)),
                )
            record["train_time_s"] = clock.seconds
            bad = first_non_finite(losses.sum(1))
            if bad is not None:
                step = epoch * steps_per_epoch + bad + 1
                raise Diverged(f"non-finite GAN loss at step {step} (epoch {epoch + 1})", step)
            d_losses.append(losses[:, 0])
            collapsed = collapse_step(torch.cat(d_losses), settings.collapse_loss, settings.collapse_steps)
            if collapsed is not None:
                raise Diverged(
                    f"discriminator collapsed: its loss stayed below {settings.collapse_loss:g} for "
                    f"{settings.collapse_steps} steps up to step {collapsed}",
                    collapsed,
                )
            d_loss, g_loss = losses.mean(0).tolist()
            curves["d_loss"].append(d_loss)
            curves["g_loss"].append(g_loss)
            curves["train_time_s"].append(record["train_time_s"])
            progress.set_postfix_str(f"D {d_loss:.3f} G {g_loss:.3f}")
    finally:
        progress.close()
    if average is not None:
        model.generator.load_state_dict(average.module.state_dict())
    record.update(budget.figures(steps_per_epoch))
    record.update(d_loss=curves["d_loss"][-1], g_loss=curves["g_loss"][-1])
