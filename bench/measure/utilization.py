"""How close a model runs to the machine's limit: its achieved FLOP rate against the rate of a large matmul
timed on the same device, in the same precision, in the same run.

The peak is one square matmul (`MATMUL_SIZE` by device, `CPU_FP32_SIZE` for fp32 on a CPU), in the mode's autocast dtype (fp32 without one), timed
like every figure (bench.measure.timing: warm-up, repeats, median). A matmul has no memory format, so
channels_last and fp32 share the fp32 peak. The achieved rate of training is the FLOPs of a training step per
sample times the training throughput: counted where they were (`train_flops_per_step`, for a FLOPs budget),
else the task's factor times the forward FLOPs (3 for a classifier: the backward pass costs about twice the
forward; a task whose step is not a multiple of the counted forward pass, as a GAN's, has none). That of
inference is the forward FLOPs times the inference throughput.
"""

from __future__ import annotations

import torch

from ..results.stats import iqr
from .modes import Mode
from .timing import MeasureSettings, time_repeats

# Where the rate levels off. On a 2-core Xeon (AMX): fp32 351 GFLOP/s at 1024, 319-378 at 2048-4096; bf16 1447 at
# 1024, 2461 at 2048, 2088 at 4096. On an H200, bf16 reaches ~790 TFLOP/s at 8192.
MATMUL_SIZE = {"cpu": 2048, "cuda": 8192, "mps": 4096}
CPU_FP32_SIZE = 1024  # a quarter of the time per repeat for the same rate: every run times its peak
PEAK_TIMING = MeasureSettings(repeats=8, warmup_time=0.05, min_repeat_time=0.02, max_time=0.0)


def matmul_peak(device: torch.device, mode: Mode, settings: MeasureSettings | None = None) -> dict[str, object]:
    """`peak_flops` (FLOP/s, the fastest repeat: what the machine can do, which interference only slows; the
    first calls in a process ran at a third of it for 0.1-0.2 s on a 2-core Xeon), its IQR, and `peak_method`
    (what was timed) of a large square matmul on `device` in `mode`'s precision."""
    dtype = mode.autocast_dtype or torch.float32
    size = CPU_FP32_SIZE if device.type == "cpu" and dtype == torch.float32 else MATMUL_SIZE.get(device.type, 2048)
    generator = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(size, size, device=device, dtype=dtype, generator=generator) for _ in range(2))
    # fp32 on CUDA: cuDNN's convolutions run in TF32 by default (torch.backends.cudnn.allow_tf32), so the mode's
    # peak is TF32's wherever they may; timed against true fp32 matmuls, ResNets read 95-157% on an H200.
    tf32 = device.type == "cuda" and dtype == torch.float32 and torch.backends.cudnn.allow_tf32
    allowed = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allowed or tf32
    try:
        with torch.inference_mode():
            seconds = time_repeats(lambda: torch.mm(a, b), device, settings or PEAK_TIMING)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allowed
    rates = [2 * size**3 / s for s in seconds]
    math = f"{str(dtype).removeprefix('torch.')}{' (TF32 allowed, as for cuDNN convolutions)' if tf32 else ''}"
    return {"peak_flops": max(rates), "peak_flops_iqr": iqr(rates), "peak_method": f"{size}x{size} matmul, {math}, {device.type}"}


def figures(record: dict, peak: dict[str, object], training_factor: float | None) -> dict[str, object]:
    """The peak's figures, and for each of training and inference whose throughput and FLOPs `record` has, the
    achieved FLOP rate (`train_flop_rate`, `infer_flop_rate`) and its share of the peak (`train_utilization`,
    `infer_utilization`). `training_factor`: a training step's FLOPs per forward FLOP where they were not
    counted (None: not known, no training figures but counted ones)."""
    found = dict(peak)
    flops, step_flops, batch = record.get("flops_per_sample"), record.get("train_flops_per_step"), record.get("batch_size")
    per_sample = {
        "train": step_flops / batch if step_flops and batch else training_factor * flops if flops and training_factor else None,
        "infer": flops,
    }
    for kind, sample_flops in per_sample.items():
        throughput = record.get(f"{kind}_throughput")
        if sample_flops and isinstance(throughput, (int, float)) and throughput > 0:
            rate = sample_flops * throughput
            found[f"{kind}_flop_rate"] = rate
            found[f"{kind}_utilization"] = rate / peak["peak_flops"]
    return found
