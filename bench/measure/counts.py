"""Counts that need no clock: parameters and theoretical FLOPs."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from .phases import phase


def parameter_counts(module: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def flops(call: Callable[[], object]) -> int:
    """Theoretical FLOPs of one `call()`, counted by torch.utils.flop_counter (a multiply-add is 2 FLOPs).

    Attention is counted as the matrix products it is: nn.MultiheadAttention's fused inference path and
    scaled_dot_product_attention's fused kernels are switched off while counting, since the counter does not
    see into them on every device (torchvision's ViT-B/16 read 11.3 GMACs on a CPU under inference_mode, 16.8
    with grad, 17.56 as here and as torchvision publishes)."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with phase("flops"), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            call()
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return int(counter.get_total_flops())
