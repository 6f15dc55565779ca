"""A model's cost figures, taken the same way for every task: parameters, FLOPs per sample and the dtype its
layers compute in; training-step throughput and peak memory; inference throughput and batch-1 latency.

A task says how its model makes one output per sample: `forward(n)` runs the model on its first `n` inputs (a
classifier on images, a generator on codes). Timing and memory are bench.measure's
(`throughput`, `timing`, `memory`).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..measure import counts, throughput
from ..measure.modes import Mode
from .base import RunContext, compute_dtype

Forward = Callable[[int], object]  # the model on its first n inputs


def model_figures(model: nn.Module, forward: Forward, context: RunContext) -> dict:
    """`model`'s parameter counts, FLOPs per sample (counted on the eager model, `forward(1)`) and the dtypes its
    convolutions and linear layers compute in under the context's mode (`forward(2)`)."""
    total, trainable = counts.parameter_counts(model)
    model.eval()
    with torch.inference_mode():
        flops = counts.flops(lambda: forward(1))
    dtype = compute_dtype(model, lambda: forward(2), context)
    return {"params": total, "trainable_params": trainable, "flops_per_sample": flops, "compute_dtype": dtype}


def training_costs(
    model: nn.Module, forward: Forward, make_step: Callable[..., Callable[[], object]], items_per_step: int,
    context: RunContext, count_training_flops: bool = False,
) -> dict:
    """`model_figures`, and the throughput and peak memory of the training steps `make_step()` returns (fresh
    copies, see throughput.training_costs) of `items_per_step` samples each. With `count_training_flops`, the FLOPs
    of one such step on an eager fp32 copy (`train_flops_per_step`), what a FLOPs budget is counted in."""
    figures = model_figures(model, forward, context)
    costs = throughput.training_costs(make_step, items_per_step, context.device, context.measure)
    if count_training_flops:
        costs["train_flops_per_step"] = counts.flops(make_step(Mode()))
    return {**figures, **costs}


def inference_costs(model: nn.Module, forward: Forward, items: int, context: RunContext, prefix: str = "infer") -> dict:
    """Throughput of `forward(items)` and latency percentiles of `forward(1)` (throughput.inference_costs, keys
    `<prefix>_throughput...` and `latency_...`), in eval mode, in the context's mode."""
    model.eval()
    with context.mode.autocast(context.device):
        return throughput.inference_costs(
            lambda: forward(items), lambda: forward(1), items, context.device, context.measure, prefix=prefix
        )
