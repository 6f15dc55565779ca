"""Plain convolutional classifiers: the reference CNN and its deeper, wider and batch-normalized variants."""

from __future__ import annotations

from torch import nn

from .registry import register


class ConvNet(nn.Module):
    """Stages of (3x3 conv [+ BN] + ReLU) x convs_per_stage + 2x2 max-pool, then FC + ReLU + dropout, then classes.

    The flattened size is derived from `input_shape`, so the same class builds for 1x28x28 and 3x32x32.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        widths: tuple[int, ...] = (32, 64, 128),
        convs_per_stage: int = 1,
        batch_norm: bool = False,
        hidden: int = 1000,
        dropout: float = 0.5,
    ):
        super().__init__()
        channels, height, width = input_shape
        layers: list[nn.Module] = []
        for stage_width in widths:
            for _ in range(convs_per_stage):
                layers.append(nn.Conv2d(channels, stage_width, 3, padding=1, bias=not batch_norm))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(stage_width))
                layers.append(nn.ReLU(inplace=True))
                channels = stage_width
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
        if height < 1 or width < 1:
            raise ValueError(f"input {'x'.join(map(str, input_shape))} is too small for {len(widths)} 2x2 poolings")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * height * width, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register("cnn-baseline", task="classify", family="cnn")
def cnn_baseline(input_shape, num_classes, **overrides):
    """The reference CNN: conv 32/64/128 each + ReLU + 2x2 pool, FC 1000 + ReLU + dropout 0.5, classes."""
    return ConvNet(input_shape, num_classes, **overrides)


@register("cnn-deep", task="classify", family="cnn")
def cnn_deep(input_shape, num_classes, **overrides):
    """The baseline with two 3x3 convs per stage (6 conv layers) at its widths 32/64/128."""
    return ConvNet(input_shape, num_classes, **{"convs_per_stage": 2, **overrides})


@register("cnn-wide", task="classify", family="cnn")
def cnn_wide(input_shape, num_classes, **overrides):
    """The baseline's three stages at twice the channels: 64/128/256."""
    return ConvNet(input_shape, num_classes, **{"widths": (64, 128, 256), **overrides})


@register("cnn-bn", task="classify", family="cnn")
def cnn_bn(input_shape, num_classes, **overrides):
    """The baseline with batch normalization after every conv."""
    return ConvNet(input_shape, num_classes, **{"batch_norm": True, **overrides})
