"""What the vae and gan tasks share: their common settings, drawing samples, a generator's costs and sample quality.

A generator is judged through a `Sampler`: a function from standard-normal codes z (N, latent_dim) to images
(N, C, H, W) in [0, 1] (a VAE's decoder mean, a GAN's generator). Costs come from `bench.tasks.costs`, the
code that measures classifiers; sample quality is FID and KID against the test split (`bench.measure.fid`) on
the features of the reference classifier (`bench.tasks.reference`).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.utils import save_image

from ..data import ImageData, TensorSource
from ..measure.modes import Amp
from ..measure.fid import calibration_images, sample_quality
from ..measure.phases import phase
from . import costs, loop
from .base import RunContext
from .loop import TrainingStep
from .reference import load_or_train
from .settings import FidSettings, GenerativeSettings

Sampler = Callable[[torch.Tensor], torch.Tensor]
GRID_ROWS = 8  # the sample grid PNG shows GRID_ROWS x GRID_ROWS images


def codes(n: int, latent_dim: int, seed: int, device: torch.device) -> torch.Tensor:
    """`n` standard-normal codes (n, latent_dim) drawn from `seed` alone, on `device`."""
    return torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed)).to(device)


@torch.no_grad()
def generate(sample: Sampler, z: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The images `sample` makes of codes `z` as float32, computed in batches of `batch_size`."""
    return torch.cat([sample(z[start : start + batch_size]).float() for start in range(0, len(z), batch_size)])


def training_parts(
    model: nn.Module, images: ImageData, build: Callable[[nn.Module, Amp], TrainingStep],
    compiled_parts: Callable[[nn.Module], tuple[nn.Module, ...]], settings: GenerativeSettings, context: RunContext,
) -> dict:
    """The fields of a generator's sequence.Parts that its training gives alike for every generator: the model, its
    timed step (`build`'s, loop.step_maker) on batches of the [0, 1] training images, their count, the epoch's
    length and the modules a compiling mode compiles."""
    source = TensorSource(images.train_x)
    return dict(
        model=model, make_step=loop.step_maker(model, build, compiled_parts, source, settings.batch_size, context),
        items_per_step=len(images.train_x[: settings.batch_size]), samples=len(images.train_x),
        steps_per_epoch=source.steps_per_epoch(settings.batch_size), compiled=compiled_parts(model),
    )


def sample_forward(model: nn.Module, sample: Sampler, context: RunContext) -> costs.Forward:
    """A generator's `forward(n)` for its cost figures (FLOPs per generated sample, compute dtype): `sample` on the
    first n of two codes drawn from the context's seed."""
    z = codes(2, model.latent_dim, context.seed, context.device)
    return lambda n: sample(z[:n])


def generation_costs(model: nn.Module, sample: Sampler, settings: GenerativeSettings, context: RunContext) -> dict:
    """Generation throughput at the suite's batch size and batch-1 latency (`generate_*`, `latency_*`), in eval mode,
    in the context's mode."""
    z = codes(settings.batch_size, model.latent_dim, context.seed, context.device)
    return costs.inference_costs(model, lambda n: sample(z[:n]), len(z), context, prefix="generate")


def evaluate_samples(
    model: nn.Module, sample: Sampler, data: ImageData, settings: GenerativeSettings, context: RunContext, record: dict
) -> None:
    """FID and KID of as many generated images as the test split has, against it, and a PNG grid of the first ones.

    The features are the reference classifier's of the context's `[fid]` settings (trained here when not
    cached); the record gets its name and test accuracy beside the figures, and the grid's path. Beside them,
    `fid_calibration_real`, `_mean_image` and `_noise`: the FID of real training images, of the mean training
    image repeated and of uniform noise, as many as the generated ones, on the same features (bench.measure.fid).
    """
    fid_settings = context.fid or FidSettings()
    with phase("fid_reference", absorb=True):  # its training and evaluation included
        reference = load_or_train(fid_settings, data, context.device, context.progress)
    model.eval()
    z = codes(len(data.test_x), model.latent_dim, context.seed, context.device)
    grid = context.run_dir / f"{record.get('architecture', 'generator')}-seed{context.seed}-samples.png"
    with phase("fid_features"):
        with context.mode.autocast(context.device):
            fake = generate(sample, z, settings.eval_batch_size)
        save_image(fake[: GRID_ROWS**2], grid, nrow=GRID_ROWS)
    with phase("fid_calibration"):
        calibration = calibration_images(data.train_x, len(fake), context.seed)
    record.update(reference.record())
    quality = sample_quality(
        reference.features, data.test_x, fake, fid_settings.eval_batch_size, fid_settings.kid_subsets,
        fid_settings.kid_subset_size, context.seed, calibration,
    )
    record.update(quality)
    record.update(fid_samples=len(fake), sample_grid=str(grid))
