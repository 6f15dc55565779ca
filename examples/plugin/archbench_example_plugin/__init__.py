"""Registers `cnn-tiny` when archbench loads the `archbench.architectures` entry points."""

from torch import nn

import architectures


@architectures.register("cnn-tiny", task="classify", family="cnn")
def cnn_tiny(input_shape, num_classes):
    """Two 3x3 conv stages of 16 and 32 channels with global average pooling: the cheapest CNN."""
    return nn.Sequential(
        nn.Conv2d(input_shape[0], 16, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, num_classes),
    )
