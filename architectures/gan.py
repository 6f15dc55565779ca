"""Generative adversarial networks: a DCGAN-style pair of conv nets and a fully connected pair.

The interface the `gan` task relies on, for any registered GAN:

- `latent_dim`: the size of the noise z, drawn from a standard normal distribution.
- `generator`: maps z (N, latent_dim) to images (N, C, H, W) in [0, 1]. It is the architecture being
  compared; calling the GAN itself is calling its generator.
- `discriminator`: maps images (N, C, H, W) in [0, 1] to one logit per image, (N,) or (N, 1), large for
  images it takes for real ones.

Both networks here work internally in [-1, 1] as DCGAN does (a tanh output, inputs rescaled), so the
task never needs to know that convention. Builders take `latent_dim` as a keyword; the suite's `[gan]`
table sets it for every GAN alike.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register


class GAN(nn.Module):
    """A generator and a discriminator trained against each other; `GAN(z)` is `generator(z)`."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, latent_dim: int):
        super().__init__()
        self.generator, self.discriminator, self.latent_dim = generator, discriminator, latent_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)


class Rescale(nn.Module):
    """x * scale + shift: maps tanh's [-1, 1] to image [0, 1] and back."""

    def __init__(self, scale: float, shift: float):
        super().__init__()
        self.scale, self.shift = scale, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift

    def extra_repr(self) -> str:
        return f"scale={self.scale}, shift={self.shift}"


TO_IMAGE, FROM_IMAGE = (0.5, 0.5), (2.0, -1.0)


def _check_latent(latent_dim: int) -> None:
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be at least 1, got {latent_dim}")


def _upsamplings(input_shape: tuple[int, int, int]) -> tuple[int, int]:
    """(number of 2x steps, starting side) with side * 2**steps == image side and 4 <= side <= 7."""
    _, height, width = input_shape
    if height != width:
        raise ValueError(f"gan-dcgan needs square images, got {height}x{width}")
    steps, side = 0, height
    while side % 2 == 0 and side // 2 >= 4:
        steps, side = steps + 1, side // 2
    if steps == 0 or side > 7:
        raise ValueError(f"gan-dcgan needs an image side of 4..7 times a power of two, got {height}")
    return steps, side


def dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialization: conv weights from N(0, 0.02), batch-norm scales from N(1, 0.02), biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


@register("gan-dcgan", task="gan", family="cnn")
def gan_dcgan(input_shape, num_classes, latent_dim: int = 100, width: int = 32):
    """DCGAN: 4x4 stride-2 transposed convs + BN + ReLU up from 4x4 (7x7 at 28 px); a mirrored LeakyReLU discriminator."""
    _check_latent(latent_dim)
    channels = input_shape[0]
    steps, side = _upsamplings(input_shape)
    top = width * 2 ** (steps - 1)

    up: list[nn.Module] = [
        nn.Unflatten(1, (latent_dim, 1, 1)),
        nn.ConvTranspose2d(latent_dim, top, side, bias=False),
        nn.BatchNorm2d(top),
        nn.ReLU(inplace=True),
    ]
    for stage in range(steps - 1):
        wide = top // 2**stage
        up += [nn.ConvTranspose2d(wide, wide // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(wide // 2), nn.ReLU(True)]
    up += [nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh(), Rescale(*TO_IMAGE)]

    down: list[nn.Module] = [Rescale(*FROM_IMAGE), nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
    for stage in range(steps - 1):
        wide = width * 2**stage
        down += [nn.Conv2d(wide, wide * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(wide * 2), nn.LeakyReLU(0.2, True)]
    down += [nn.Conv2d(top, 1, side), nn.Flatten(0)]

    model = GAN(nn.Sequential(*up), nn.Sequential(*down), latent_dim)
    model.apply(dcgan_init)
    return model


@register("gan-mlp", task="gan", family="mlp")
def gan_mlp(input_shape, num_classes, latent_dim: int = 100, hidden: tuple[int, int] = (256, 512)):
    """Fully connected GAN: generator z -> 256 -> 512 -> pixels (LeakyReLU, tanh), discriminator the reverse."""
    _check_latent(latent_dim)
    pixels = input_shape[0] * input_shape[1] * input_shape[2]
    small, large = hidden
    generator = nn.Sequential(
        nn.Linear(latent_dim, small),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Linear(small, large),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Linear(large, pixels),
        nn.Tanh(),
        Rescale(*TO_IMAGE),
        nn.Unflatten(1, tuple(input_shape)),
    )
    discriminator = nn.Sequential(
        nn.Flatten(),
        Rescale(*FROM_IMAGE),
        nn.Linear(pixels, large),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Linear(large, small),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Linear(small, 1),
        nn.Flatten(0),
    )
    return GAN(generator, discriminator, latent_dim)
