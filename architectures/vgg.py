"""VGG-11 with batch norm in its small-image (CIFAR) form: torchvision's configuration "A" of 3x3 conv stages,
each conv followed by batch norm and ReLU, and a single linear classifier on the last stage's features in place
of the three 4096-unit layers that ImageNet's 224 px images need."""

from __future__ import annotations

from torch import nn

from .registry import register

VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")  # torchvision's cfgs["A"]


class SmallImageVGG(nn.Module):
    """Conv stages of `widths` ("M": a 2x2 max-pool, skipped once the feature map is down to 1 px, so 28 px
    inputs keep four pools and 32 px ones five), then one linear layer on the flattened features."""

    def __init__(self, input_shape, num_classes: int = 10, widths=VGG11):
        super().__init__()
        channels, height, width = input_shape
        layers: list[nn.Module] = []
        for item in widths:
            if item == "M":
                if min(height, width) >= 2:
                    layers.append(nn.MaxPool2d(2))
                    height, width = height // 2, width // 2
                continue
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU(inplace=True)]
            channels = item
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels * height * width, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


@register("vgg11-bn", task="classify", family="vgg")
def vgg11_bn(input_shape, num_classes, **overrides):
    """VGG-11 with batch norm, CIFAR form: configuration A's eight 3x3 convs (64-512) and a linear head."""
    return SmallImageVGG(input_shape, num_classes, **overrides)
