"""The embedded default dataset: ten classes of shapes drawn in code, deterministic for a seed.

Each 16x16 image is one shape (disk, ring, square, frame, bars, cross, X, triangle, diamond) at a random
position, size, stroke and tilt, lighter or darker than a grey background by a clear margin and slightly
tinted, with faint blotches and pixel noise. A convolutional net must learn outlines that survive
translation, not a colour or a pixel; the contrast and the small size let every registered classifier pass
40% and every generator draw recognisable shapes within the quick suite's couple of minutes on a CPU. Three
channels, so the quick suite runs the input path that CIFAR-10's models take.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

CLASSES = ("disk", "ring", "square", "frame", "h-bar", "v-bar", "cross", "x", "triangle", "diamond")


def shapes(n: int, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` images (n, 3, size, size) in [0, 1] and their labels (n,), a function of `seed` only."""
    g = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, *shape, generator=g)

    labels = torch.randperm(n, generator=g) % len(CLASSES)
    radius = uniform(0.25 * size, 0.4 * size)
    centre = uniform(-0.5, 0.5, 2) * (size - 2 * radius[:, None]) + size / 2
    stroke = uniform(0.9, 1.8) / radius
    angle = uniform(-0.35, 0.35)
    background = torch.rand(n, 1, generator=g).expand(n, 3)
    foreground = background + torch.where(background < 0.5, 1.0, -1.0) * uniform(0.6, 0.9, 3)
    blotches = F.interpolate(torch.randn(n, 3, 4, 4, generator=g), size=size, mode="bicubic", align_corners=False)
    noise = torch.randn(n, 3, size, size, generator=g)

    pixel = torch.arange(size, dtype=torch.float32) + 0.5
    dy = (pixel[None, :, None] - centre[:, 1, None, None]) / radius[:, None, None]
    dx = (pixel[None, None, :] - centre[:, 0, None, None]) / radius[:, None, None]
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    u, v = cos * dx + sin * dy, cos * dy - sin * dx
    inside = _inside(labels, u, v, stroke[:, None, None])
    alpha = torch.sigmoid(inside * radius[:, None, None] / 0.4)[:, None]

    images = background[:, :, None, None] + 0.04 * blotches
    images = images + alpha * (foreground[:, :, None, None] - images) + 0.015 * noise
    return images.clamp_(0, 1), labels


def _inside(labels: torch.Tensor, u: torch.Tensor, v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Signed distance-like field, positive inside the shape of each label, in units of the radius."""
    field = torch.empty_like(u)
    for label, shape_field in enumerate(_FIELDS):
        chosen = labels == label
        field[chosen] = shape_field(u[chosen], v[chosen], w[chosen])
    return field


def _h_bar(u, v, w):
    return torch.minimum(1.5 * w - v.abs(), 1 - u.abs())


def _box(u, v):
    return torch.maximum(u.abs(), v.abs())


def _diagonals(u, v, w):
    return torch.maximum(w - (u - v).abs() / math.sqrt(2), w - (u + v).abs() / math.sqrt(2))


_FIELDS = (
    lambda u, v, w: 1 - torch.hypot(u, v),  # disk
    lambda u, v, w: w - (torch.hypot(u, v) - 0.8).abs(),  # ring
    lambda u, v, w: 0.85 - _box(u, v),  # square
    lambda u, v, w: w - (_box(u, v) - 0.8).abs(),  # frame
    lambda u, v, w: _h_bar(u, v, w),  # h-bar
    lambda u, v, w: _h_bar(v, u, w),  # v-bar
    lambda u, v, w: torch.maximum(_h_bar(u, v, w), _h_bar(v, u, w)),  # cross
    lambda u, v, w: torch.minimum(_diagonals(u, v, w), 0.85 - _box(u, v)),  # x
    lambda u, v, w: torch.minimum(0.8 - v, 0.55 * (v + 0.9) - u.abs()),  # triangle, apex up
    lambda u, v, w: 1 - (u.abs() + v.abs()),  # diamond
)
