"""Variational autoencoders: train on the negative ELBO; report it, an IWAE likelihood bound and the decoder's samples.

The prior is a standard normal, q(z | x) the diagonal Gaussian of the model's `encode`, and z is drawn by
reparameterization. The likelihood p(x | z) is the suite's choice:

- `bernoulli`: independent Bernoulli pixels with probabilities sigmoid(logits), the grey levels in [0, 1]
  as targets (binary cross-entropy, the usual practice for [0, 1] images);
- `gaussian`: independent Gaussian pixels with means sigmoid(logits) and the fixed `gaussian_std`.

All figures are in nats per image. Generated samples are the likelihood's mean, sigmoid(decode(z)).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..measure import counts
from ..data import ImageData, Source, TensorSource
from ..measure.modes import Amp
from ..measure.phases import phase
from . import generative, loop
from .base import RunContext, make_optimizer, optimizer_step
from .settings import VaeSettings
from .loop import AfterStep, EpochEnd, TrainingStep
from .sequence import Parts

def compiled_parts(model: nn.Module) -> tuple[nn.Module, ...]:
    """The modules this task calls, which a compiling mode compiles: the encoder and the decoder."""
    return model.encoder, model.decoder


def log_likelihood(logits: torch.Tensor, x: torch.Tensor, settings: VaeSettings) -> torch.Tensor:
    """log p(x | z) per image (N,) for decoder logits (N, C, H, W) and images x in [0, 1], in float32."""
    logits = logits.float()
    if settings.likelihood == "bernoulli":
        per_pixel = -F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    else:
        std = settings.gaussian_std
        per_pixel = -0.5 * ((x - torch.sigmoid(logits)) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)
    return per_pixel.flatten(1).sum(1)


def elbo_terms(model: nn.Module, x: torch.Tensor, settings: VaeSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image (N,): the reconstruction term -log p(x | z) at one reparameterized z ~ q(z | x), and KL(q || p(z)),
    in float32 whatever the precision the encoder and decoder ran in."""
    mean, log_var = (t.float() for t in model.encode(x))
    z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
    reconstruction = -log_likelihood(model.decode(z), x, settings)
    kl = 0.5 * (mean.square() + log_var.exp() - 1 - log_var).sum(1)
    return reconstruction, kl


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, settings: VaeSettings, amp: Amp
) -> torch.Tensor:
    """One optimizer step on the mean negative ELBO in `amp`'s mode; returns it detached, without synchronizing."""

    def negative_elbo() -> torch.Tensor:
        reconstruction, kl = elbo_terms(model, x, settings)
        return (reconstruction + kl).mean()

    return optimizer_step(optimizer, amp, negative_elbo)


def training_step(model: nn.Module, settings: VaeSettings, amp: Amp) -> TrainingStep:
    """The VAE's training step over `model`: the negative ELBO, one optimizer of the suite's kind."""
    optimizer = make_optimizer(model.parameters(), settings)
    step = lambda x, _: train_step(model, optimizer, x, settings, amp)
    return TrainingStep(model=model, optimizers=(optimizer,), step=step, amp=amp)


@torch.inference_mode()
def evaluate(model: nn.Module, source: Source, settings: VaeSettings) -> dict[str, float]:
    """Mean negative ELBO over `source`'s images in nats per image, with its reconstruction and KL terms, in
    eval mode."""
    model.eval()
    totals = 0
    for xb, _ in source.in_order(settings.eval_batch_size):
        reconstruction, kl = elbo_terms(model, xb, settings)
        totals = totals + torch.stack([reconstruction.sum(), kl.sum()])
    reconstruction, kl = (totals / len(source)).tolist()
    return {"neg_elbo": reconstruction + kl, "reconstruction": reconstruction, "kl": kl}


@torch.inference_mode()
def iwae_nll(model: nn.Module, source: Source, settings: VaeSettings) -> float:
    """Importance-weighted estimate of -log p(x) in nats per image with k = settings.iwae_samples samples of q(z | x).

    -log p(x) ~ -log (1/k) sum_i p(x | z_i) p(z_i) / q(z_i | x); an upper bound in expectation, tighter as k grows.
    Images are taken so that about `eval_batch_size` decodes run at once.
    """
    model.eval()
    k = settings.iwae_samples
    total = 0
    for xb, _ in source.in_order(max(1, settings.eval_batch_size // k)):
        mean, log_var = (t.float() for t in model.encode(xb))
        std = torch.exp(0.5 * log_var)
        eps = torch.randn(k, *mean.shape, device=xb.device)
        z = mean + eps * std
        log_q = (-0.5 * eps.square() - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prior = (-0.5 * z.square() - 0.5 * math.log(2 * math.pi)).sum(-1)
        logits = model.decode(z.flatten(0, 1))
        log_px = log_likelihood(logits, xb.expand(k, *xb.shape).flatten(0, 1), settings).view(k, len(xb))
        total = total - (torch.logsumexp(log_px + log_prior - log_q, dim=0) - math.log(k)).sum()
    return total.item() / len(source)


def sampler(model: nn.Module) -> generative.Sampler:
    """Images from codes: the likelihood's mean, sigmoid(decode(z))."""
    return lambda z: torch.sigmoid(model.decode(z))


def parts(model: nn.Module, data: ImageData, settings: VaeSettings, context: RunContext, record: dict) -> Parts:
    """The VAE's parts for the one sequence (sequence.run): costs of generating from codes, the timed step of
    `steps`, `fit` with the test ELBO every epoch, then the IWAE bound, generation costs and FID/KID.

    Beyond the costs every generator has (bench.tasks.generative): `latent_dim`, `encoder_params`,
    `test_neg_elbo` = `test_reconstruction` + `test_kl` and `test_nll` (IWAE), all in nats per test image.
    Everything runs in the context's mode (see classify.parts); FID compares against the original test images.
    """
    mode = context.mode
    images, model = mode.data(data), mode.prepare(model)
    sample = sampler(model)
    build = lambda copied, amp: training_step(copied, settings, amp)

    def evaluate() -> None:
        with phase("evaluate"), mode.autocast(context.device):
            record["test_nll"] = iwae_nll(model, TensorSource(images.test_x), settings)

    return Parts(
        **generative.training_parts(model, images, build, compiled_parts, settings, context),
        forward=generative.sample_forward(model, sample, context),
        figures=lambda: dict(
            latent_dim=model.latent_dim, encoder_params=counts.parameter_counts(model.encoder)[0],
            generator_params=counts.parameter_counts(model.decoder)[0],
        ),
        fit=lambda after_step: fit(model, images, settings, context, record, after_step), evaluate=evaluate,
        infer=lambda: generative.generation_costs(model, sample, settings, context),
        score=lambda: generative.evaluate_samples(model, sample, data, settings, context, record),
    )


def fit(
    model: nn.Module, data: ImageData, settings: VaeSettings, context: RunContext, record: dict,
    after_step: AfterStep = lambda clock, optimizers: None,
) -> None:
    """Train for `settings.epochs` (or its budget) on the [0, 1] training images in the one loop (loop.fit),
    evaluating the test ELBO after each epoch.

    Per-epoch curves and the last epoch's test figures go into `record`. Raises Diverged at the first step
    whose loss is not finite. `after_step(clock, (optimizer,))` runs after every step, inside the training
    clock.
    """
    training, test = training_step(model, settings, Amp(context.mode, context.device)), TensorSource(data.test_x)

    def evaluate_epoch(losses: torch.Tensor, epoch: int) -> dict[str, float]:
        with training.amp.autocast():
            figures = evaluate(model, test, settings)
        return {"train_loss": losses.mean().item(), **{f"test_{key}": value for key, value in figures.items()}}

    end = EpochEnd(("train_loss", "test_neg_elbo"), evaluate_epoch, lambda f: f"test -ELBO {f['test_neg_elbo']:.1f}")
    record.update(loop.fit(training, TensorSource(data.train_x), settings, context, record, end, after_step))
