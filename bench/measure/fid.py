"""Sample quality of generators: FID and KID computed by torchmetrics on a reference classifier's features.

Inception weights are neither available offline nor suited to 28x28 grey images, so the feature network is
a classifier that the harness trains on the run's own dataset (`bench.tasks.reference`). Real and generated
image sets go through torchmetrics' FrechetInceptionDistance and KernelInceptionDistance with that network
as their custom feature extractor; nothing here computes the statistics by hand.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .phases import phase


def sample_quality(
    features: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    batch_size: int,
    kid_subsets: int,
    kid_subset_size: int,
    seed: int,
    calibration: dict[str, torch.Tensor] | None = None,
) -> dict[str, float]:
    """FID, and KID's mean and spread over subsets, between image sets `real` and `fake` (N, C, H, W) in [0, 1];
    with `calibration` (name -> image set, see `calibration_images`), also each set's FID against `real` as
    `fid_calibration_<name>`, on the same features (real's extracted once).

    `features` maps such images to (N, d) features and says d in its `num_features` attribute; images go
    through it in batches of `batch_size`. KID averages `kid_subsets` random subsets of `kid_subset_size`
    images (fewer when a set is smaller) drawn from `seed`; the global random state is left as it was.
    """
    subset_size = min(kid_subset_size, len(real), len(fake))
    with phase("fid_features"):
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer.*")
            kid = KernelInceptionDistance(
                feature=features, subsets=kid_subsets, subset_size=subset_size, normalize=True, sync_on_compute=False
            )
        fid = FrechetInceptionDistance(feature=features, normalize=True, reset_real_features=False, sync_on_compute=False)
        metrics = [fid.to(real.device), kid.to(real.device)]
        _feed(metrics, real, batch_size, is_real=True)
        _feed(metrics, fake, batch_size, is_real=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            kid_mean, kid_std = kid.compute()
        found = {"fid": fid.compute().item(), "kid": kid_mean.item(), "kid_std": kid_std.item()}
    with phase("fid_calibration"):
        for name, images in (calibration or {}).items():
            fid.reset()  # the generated images' features only: reset_real_features=False
            _feed([fid], images, batch_size, is_real=False)
            found[f"fid_calibration_{name}"] = fid.compute().item()
    return found


def _feed(metrics: list, images: torch.Tensor, batch_size: int, is_real: bool) -> None:
    for start in range(0, len(images), batch_size):
        for metric in metrics:
            metric.update(images[start : start + batch_size], real=is_real)


def calibration_images(train: torch.Tensor, count: int, seed: int) -> dict[str, torch.Tensor]:
    """The image sets that place a generator's FID, `count` images each (fewer real ones when the training split
    is smaller), on `train`'s device: `real` (the first training images: the floor a perfect generator
    approaches), `mean_image` (the mean training image repeated: what a generator that learned only the
    average draws) and `noise` (uniform noise drawn from `seed`: the ceiling)."""
    shape = train.shape[1:]
    noise = torch.rand(count, *shape, generator=torch.Generator().manual_seed(seed))
    return {
        "real": train[:count],
        "mean_image": train.mean(0, keepdim=True).expand(count, *shape),
        "noise": noise.to(train.device),
    }
