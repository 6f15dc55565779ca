"""torchvision's GoogLeNet (Inception v1) adapted to small images, without its auxiliary heads."""

from __future__ import annotations

from torch import nn

from .registry import register


@register("googlenet", task="classify", family="inception")
def googlenet(input_shape, num_classes, **overrides):
    """torchvision GoogLeNet, no auxiliary classifiers, for 28-32 px inputs: a 3x3 stride-1 stem in place of the
    7x7 stride-2 one and no second max-pool, so the inception stages see 16, 8 and 4 px maps from 32 px (as
    ImageNet's 224 px reach them at 28, 14 and 7)."""
    import torchvision  # here, not at the top: a process that builds no torchvision model skips its ~1 s import
    from torchvision.models.googlenet import BasicConv2d

    model = torchvision.models.googlenet(
        weights=None, num_classes=num_classes, aux_logits=False, init_weights=True, **overrides
    )
    model.conv1 = BasicConv2d(input_shape[0], 64, kernel_size=3, stride=1, padding=1)
    model.maxpool2 = nn.Identity()
    return model
