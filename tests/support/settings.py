"""Measurement settings, a suite and a plugin module that keep tests fast."""

import dataclasses

from bench.measure.timing import MeasureSettings

FAST_MEASURE = MeasureSettings(  # one call per repeat, no windows during training
    repeats=5, warmup_time=0.0, min_repeat_time=0.0, max_time=0.0, latency_time=0.0, latency_min_calls=3,
    window_repeats=0,
)
WINDOWED_MEASURE = dataclasses.replace(FAST_MEASURE, window_every=1e-9, window_repeats=1)  # a window after every step

TINY_SUITE = """
description = "tiny test suite"
dataset = "synthetic"
architectures = {architectures}
seeds = [0]
limit_train = 96
limit_test = 48

[classify]
epochs = 2
batch_size = 16
optimizer = "adam"
lr = 0.001

[measure]
repeats = 5
warmup_time = 0.0
min_repeat_time = 0.0
max_time = 0.0
latency_time = 0.0
latency_min_calls = 3
"""

FLAT_NET = """from torch import nn
import architectures

@architectures.register("flat", task="classify", family="test")
def build(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))
"""  # an --arch-module file: one linear layer, named flat
