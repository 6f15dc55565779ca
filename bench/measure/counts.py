"""Counts that need no clock: parameters and theoretical FLOPs."""

from __future__ import annotations

from typing import Callable

from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .phases import phase


def parameter_counts(module: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def flops(call: Callable[[], object]) -> int:
    """Theoretical FLOPs of one `call()`, counted by torch.utils.flop_counter (a multiply-add is 2 FLOPs)."""
    with phase("flops"), FlopCounterMode(display=False) as counter:
        call()
    return int(counter.get_total_flops())
