"""Variational autoencoders: a convolutional and a fully connected encoder/decoder pair.

The interface the `vae` task relies on, for any registered VAE:

- `latent_dim`: the size of the latent code z.
- `encode(x)`: for images x (N, C, H, W) in [0, 1], the mean and log-variance (each (N, latent_dim)) of the
  diagonal Gaussian q(z | x).
- `decode(z)`: for codes z (N, latent_dim), per-pixel logits (N, C, H, W); the task's likelihood turns
  them into Bernoulli probabilities or Gaussian means (their sigmoid).
- `encoder` and `decoder`: the submodules holding each half's parameters; the decoder is the generator
  that is compared with GAN generators.

Builders take `latent_dim` as a keyword; the suite's `[vae]` table sets it for every VAE alike.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register


class VAE(nn.Module):
    """An encoder producing 2 * latent_dim numbers (mean, log-variance) and a decoder producing logits."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int):
        super().__init__()
        self.encoder, self.decoder, self.latent_dim = encoder, decoder, latent_dim

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self.encoder(x).chunk(2, dim=1)
        return mean, log_var

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the reconstruction of x from the mean of q(z | x)."""
        return self.decode(self.encode(x)[0])


def _check_latent(latent_dim: int) -> None:
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be at least 1, got {latent_dim}")


@register("vae-conv", task="vae", family="cnn")
def vae_conv(input_shape, num_classes, latent_dim: int = 16, widths: tuple[int, int] = (32, 64)):
    """Two 4x4 stride-2 convs (32, 64) + ReLU to a Gaussian latent; the decoder mirrors them with transposed convs."""
    _check_latent(latent_dim)
    channels, height, width = input_shape
    if height % 4 or width % 4:
        raise ValueError(f"vae-conv needs height and width divisible by 4, got {height}x{width}")
    first, second = widths
    flat = (second, height // 4, width // 4)
    encoder = nn.Sequential(
        nn.Conv2d(channels, first, 4, stride=2, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(first, second, 4, stride=2, padding=1),
        nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(second * flat[1] * flat[2], 2 * latent_dim),
    )
    decoder = nn.Sequential(
        nn.Linear(latent_dim, second * flat[1] * flat[2]),
        nn.ReLU(inplace=True),
        nn.Unflatten(1, flat),
        nn.ConvTranspose2d(second, first, 4, stride=2, padding=1),
        nn.ReLU(inplace=True),
        nn.ConvTranspose2d(first, channels, 4, stride=2, padding=1),
    )
    return VAE(encoder, decoder, latent_dim)


@register("vae-mlp", task="vae", family="mlp")
def vae_mlp(input_shape, num_classes, latent_dim: int = 16, hidden: int = 512):
    """One hidden layer of 512 units + ReLU on each side of a Gaussian latent, on the flattened image."""
    _check_latent(latent_dim)
    pixels = input_shape[0] * input_shape[1] * input_shape[2]
    encoder = nn.Sequential(
        nn.Flatten(), nn.Linear(pixels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2 * latent_dim)
    )
    decoder = nn.Sequential(
        nn.Linear(latent_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, pixels), nn.Unflatten(1, input_shape)
    )
    return VAE(encoder, decoder, latent_dim)
