"""An outside architecture module: `archbench run --arch-module examples/my_archs.py --arch mlp`.

Any module whose import runs `architectures.register` works; archbench imports it by path or by name.
"""

from torch import nn

import architectures


@architectures.register("mlp", task="classify", family="mlp")
def mlp(input_shape, num_classes, hidden=512, dropout=0.2):
    """Two hidden layers of `hidden` units on the flattened image: the no-convolution reference point."""
    channels, height, width = input_shape
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(channels * height * width, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )
