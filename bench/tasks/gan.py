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

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..measure import counts
from ..data import ImageData, TensorSource
from ..measure.modes import Amp
from . import generative, loop
from .base import Diverged, RunContext, make_optimizer
from .settings import GanSettings
from .loop import AfterStep, EpochEnd, TrainingStep
from .sequence import Parts


def compiled_parts(model: nn.Module) -> tuple[nn.Module, ...]:
    """The modules this task calls, which a compiling mode compiles: the generator and the discriminator."""
    return model.generator, model.discriminator


def optimizers(model: nn.Module, settings: GanSettings) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """One optimizer of the suite's kind for the generator, one for the discriminator."""
    generator, discriminator = model.generator.parameters(), model.discriminator.parameters()
    return make_optimizer(generator, settings), make_optimizer(discriminator, settings)


def moving_average(model: nn.Module, settings: GanSettings) -> AveragedModel | None:
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


@dataclass(kw_only=True)
class GanTrainingStep(TrainingStep):
    """The GAN's step, and the moving average of its generator that the step updates (None without `ema`)."""

    average: AveragedModel | None = None


def training_step(model: nn.Module, settings: GanSettings, amp: Amp) -> GanTrainingStep:
    """The GAN's training step over `model`: a discriminator step, then a generator step, then the generator's
    moving average (`settings.ema`) updated; returns the two losses."""
    (g_optimizer, d_optimizer), average = optimizers(model, settings), moving_average(model, settings)
    step = lambda x, _: train_step(model, g_optimizer, d_optimizer, x, amp, average)
    return GanTrainingStep(
        model=model, optimizers=(g_optimizer, d_optimizer), step=step, amp=amp, loss_name="GAN loss", average=average
    )


def collapse_step(d_losses: torch.Tensor, threshold: float, window: int) -> int | None:
    """The 1-based step at which the discriminator's loss has been below `threshold` for `window` steps in a row."""
    if len(d_losses) < window:
        return None
    below = (d_losses < threshold).long().cumsum(0)
    in_window = below[window - 1 :] - torch.cat([below.new_zeros(1), below[:-window]])
    hits = torch.nonzero(in_window == window)
    return int(hits[0, 0]) + window if len(hits) else None


def parts(model: nn.Module, data: ImageData, settings: GanSettings, context: RunContext, record: dict) -> Parts:
    """The GAN's parts for the one sequence (sequence.run): costs of the generator, the timed step of `steps`
    (both networks), `fit`, then generation costs and the generator's FID/KID.

    Beyond the costs every generator has (bench.tasks.generative): `latent_dim`, `discriminator_params`,
    the last epoch's mean `d_loss` and `g_loss`, and their per-epoch curves. Everything runs in the context's
    mode (see classify.parts); FID compares against the original test images.
    """
    mode = context.mode
    images, model = mode.data(data), mode.prepare(model)
    build = lambda copied, amp: training_step(copied, settings, amp)
    return Parts(
        **generative.training_parts(model, images, build, compiled_parts, settings, context),
        forward=generative.sample_forward(model, model.generator, context),
        figures=lambda: dict(
            latent_dim=model.latent_dim, discriminator_params=counts.parameter_counts(model.discriminator)[0],
            generator_params=counts.parameter_counts(model.generator)[0],
        ),
        fit=lambda after_step: fit(model, images, settings, context, record, after_step),
        infer=lambda: generative.generation_costs(model, model.generator, settings, context),
        score=lambda: generative.evaluate_samples(model, model.generator, data, settings, context, record),
    )


def fit(
    model: nn.Module, data: ImageData, settings: GanSettings, context: RunContext, record: dict,
    after_step: AfterStep = lambda clock, optimizers: None,
) -> None:
    """Train for `settings.epochs` (or its budget) on the [0, 1] training images in the one loop (loop.fit);
    per-epoch mean losses go into `record`. With `settings.ema`, the generator ends as the moving average of
    its weights and buffers.

    Raises Diverged at the first step with a non-finite loss, or where the discriminator has collapsed.
    `after_step(clock, (g_optimizer, d_optimizer))` runs after every step, inside the training clock.
    """
    training = training_step(model, settings, Amp(context.mode, context.device))
    d_losses = []

    def evaluate_epoch(losses: torch.Tensor, epoch: int) -> dict[str, float]:
        d_losses.append(losses[:, 0])
        collapsed = collapse_step(torch.cat(d_losses), settings.collapse_loss, settings.collapse_steps)
        if collapsed is not None:
            raise Diverged(
                f"discriminator collapsed: its loss stayed below {settings.collapse_loss:g} for "
                f"{settings.collapse_steps} steps up to step {collapsed}",
                collapsed,
            )
        d_loss, g_loss = losses.mean(0).tolist()
        return {"d_loss": d_loss, "g_loss": g_loss}

    end = EpochEnd(("d_loss", "g_loss"), evaluate_epoch, lambda f: f"D {f['d_loss']:.3f} G {f['g_loss']:.3f}")
    last = loop.fit(training, TensorSource(data.train_x), settings, context, record, end, after_step)
    if training.average is not None:
        model.generator.load_state_dict(training.average.module.state_dict())
    record.update(last)
