"""torchvision ResNets adapted to small images: a 3x3 stride-1 stem and no max-pool, as for CIFAR."""

from __future__ import annotations

from torch import nn

from .registry import register


def small_image_resnet(depth: int, input_shape, num_classes, **overrides) -> nn.Module:
    """torchvision's ResNet-`depth` with its 7x7 stride-2 stem and max-pool replaced for 28-32 px inputs."""
    import torchvision  # here, not at the top: a process that builds no torchvision model skips its ~1 s import

    model = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=num_classes, **overrides)
    model.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


@register("resnet18", task="classify", family="resnet")
def resnet18(input_shape, num_classes, **overrides):
    """torchvision ResNet-18 with a 3x3 stride-1 stem and no max-pool (CIFAR-style)."""
    return small_image_resnet(18, input_shape, num_classes, **overrides)
