"""How close a model runs to the machine's limit: its achieved FLOP rate against the rate of a square matmul
timed on the same device, in the same precision, in the same run.

The matmul is sized by time, not by a constant: it grows from `START_SIZE` until one call takes
`PLATEAU_CALL_S` (where the rate has levelled off) or reaches the device's cap (`MAX_SIZE`, `CPU_FP32_MAX`),
so that the peak costs well under a second on any machine, with or without native bf16. It runs in the
mode's autocast dtype (fp32 without one); a matmul has no memory format, so channels_last and fp32 share the
fp32 peak. The run picks the size once per mode (`peak_size`); each pair's process then warms the matmul up
until its rate stops rising and times it after the model (`matmul_peak`), and the run takes the best of those
pair peaks so far as its peak (bench.run.session.finish): one process can read low, the best of several is the
machine's. The achieved rate of training is the FLOPs of a training step per sample times the training
throughput: counted where they were (`train_flops_per_step`, for a FLOPs budget), else the task's factor
times the forward FLOPs (3 for a classifier; a task whose step is not a multiple of the counted forward
pass, as a GAN's, has none). That of inference is the forward FLOPs times the inference throughput.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..stats import iqr
from .modes import Mode
from .phases import phase
from .timing import MeasureSettings, time_repeats, timed

START_SIZE = 128
PLATEAU_CALL_S = 0.02  # a call this long is on the rate's plateau on the CPUs and GPUs measured (docs/measurement.md)
MAX_SIZE = {"cpu": 2048, "cuda": 8192, "mps": 4096}
CPU_FP32_MAX = 1024  # fp32 on a CPU levels off by 1024
WARMUP_MAX_S = 0.5  # the warm-up ends once the rate stops rising, or after this long
WARMUP_FLAT_CALLS = 3  # ... calls in a row that do not beat the best rate by more than WARMUP_GAIN
WARMUP_GAIN = 0.02
PEAK_TIMING = MeasureSettings(repeats=6, warmup_time=0.0, min_repeat_time=PLATEAU_CALL_S, max_time=0.0)


def compute_dtype(mode: Mode) -> torch.dtype:
    """The dtype a mode's matmuls run in: its autocast dtype, fp32 without one."""
    return mode.autocast_dtype or torch.float32


def peak_size(device: torch.device, dtype: torch.dtype, seconds_at: Callable[[int], float] | None = None) -> int:
    """The side of the square matmul the peak times on `device` in `dtype`: grown from START_SIZE until one warm
    call takes PLATEAU_CALL_S, at most the device's cap; a multiple of 64. `seconds_at(size)`: one warm call's
    seconds at a size (default: timed here)."""
    seconds_at = seconds_at or (lambda size: _warm_call_seconds(device, dtype, size))
    cap = CPU_FP32_MAX if device.type == "cpu" and dtype == torch.float32 else MAX_SIZE.get(device.type, 2048)
    size = START_SIZE
    while size < cap:
        seconds = max(seconds_at(size), 1e-9)
        if seconds >= PLATEAU_CALL_S:
            break
        growth = min(2.0, max(1.25, (PLATEAU_CALL_S / seconds) ** (1 / 3)))  # a matmul's time grows as size cubed
        size = min(cap, 64 * math.ceil(size * growth / 64))
    return size


def matmul_peak(device: torch.device, mode: Mode, size: int | None = None) -> dict[str, object]:
    """`peak_flops` (FLOP/s, the fastest repeat: what the machine can do, which interference only slows), its IQR,
    and `peak_method` (what was timed) of a `size` x `size` matmul (default: `peak_size`) on `device` in `mode`'s
    precision, warmed up until its rate stops rising (the first calls of a process ran up to 31% slow)."""
    dtype = compute_dtype(mode)
    size = size or peak_size(device, dtype)
    # fp32 on CUDA: cuDNN's convolutions run in TF32 by default (torch.backends.cudnn.allow_tf32), so the mode's
    # peak is TF32's wherever they may; timed against true fp32 matmuls, ResNets read 95-157% on an H200.
    tf32 = device.type == "cuda" and dtype == torch.float32 and torch.backends.cudnn.allow_tf32
    allowed = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allowed or tf32
    try:
        with torch.inference_mode(), phase("peak", absorb=True):
            multiply = _operands(device, dtype, size)
            per_call = warm_up(lambda: timed(multiply, device, 1))
            seconds = time_repeats(multiply, device, PEAK_TIMING, warmup_calls=0, per_call=per_call)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allowed
    rates = [2 * size**3 / s for s in seconds]
    math_text = f"{str(dtype).removeprefix('torch.')}{' (TF32 allowed, as for cuDNN convolutions)' if tf32 else ''}"
    return {"peak_flops": max(rates), "peak_flops_iqr": iqr(rates), "peak_method": f"{size}x{size} matmul, {math_text}, {device.type}"}


def emulation_note(device: torch.device, mode: Mode, size: int | None = None) -> str:
    """One line for a mode whose precision `device` only emulates: what it lacks, and its matmul's rate (at `size`,
    default `peak_size`) against fp32's, both timed here."""
    dtype = compute_dtype(mode)
    fp32, emulated = matmul_peak(device, Mode())["peak_flops"], matmul_peak(device, mode, size)["peak_flops"]
    name = str(dtype).removeprefix("torch.")
    lacks = {torch.bfloat16: "AVX512-BF16 or AMX", torch.float16: "AVX512-FP16 or AMX-FP16"}.get(dtype, name)
    where = f"this CPU has no {lacks}" if device.type == "cpu" else f"this {device.type} device has no native {name}"
    return (f"mode {mode.name}: {where}, so {name} is emulated; matmul rate here fp32 : {name} = {fp32 / emulated:.3g} : 1 "
            f"({fp32 / 1e9:.3g} and {emulated / 1e9:.3g} GFLOP/s); its records say emulated_precision")


def warm_up(call_seconds: Callable[[], float]) -> float:
    """Make calls (`call_seconds()` makes one and returns its seconds) until WARMUP_FLAT_CALLS in a row run no
    faster than the fastest so far (by WARMUP_GAIN), or for WARMUP_MAX_S, at least one; return the fastest call's
    seconds."""
    best, flat, spent = math.inf, 0, 0.0
    while best == math.inf or (flat < WARMUP_FLAT_CALLS and spent < WARMUP_MAX_S):
        seconds = call_seconds()
        spent += seconds
        flat, best = (0, seconds) if seconds < best * (1 - WARMUP_GAIN) else (flat + 1, min(best, seconds))
    return best


def _warm_call_seconds(device: torch.device, dtype: torch.dtype, size: int) -> float:
    multiply = _operands(device, dtype, size)
    multiply()  # the first call at a size allocates and packs
    return min(timed(multiply, device, 1) for _ in range(2))


def _operands(device: torch.device, dtype: torch.dtype, size: int):
    generator = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(size, size, device=device, dtype=dtype, generator=generator) for _ in range(2))
    return lambda: torch.mm(a, b)


def figures(record: dict, training_factor: float | None) -> dict[str, object]:
    """For each of training and inference whose throughput and FLOPs `record` has, the achieved FLOP rate
    (`train_flop_rate`, `infer_flop_rate`) and its share of the record's `peak_flops` (`train_utilization`,
    `infer_utilization`). `training_factor`: a training step's FLOPs per forward FLOP where they were not
    counted (None: not known, no training figures but counted ones)."""
    found = {}
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
            found[f"{kind}_utilization"] = rate / record["peak_flops"]
    return found
