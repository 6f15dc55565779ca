"""Modes: the precision, memory format and compilation a model is trained, evaluated and measured in.

A mode is written as `+`-joined parts: one precision (`fp32`, `bf16`, `fp16`, or `auto`: bf16 where the device
runs it natively, else fp32), optionally `channels_last`, optionally `compile` or `compile:MODE` (a
torch.compile mode). Examples: `fp32`, `bf16+channels_last`, `auto+channels_last+compile:max-autotune`.

Precision is autocast (with a gradient scaler for fp16) around forward passes and losses; parameters,
optimizer state and the backward's accumulation stay float32. `channels_last` converts the model and the
dataset's image tensors once, so every batch drawn from them is in that layout. `compile` compiles, in place,
the modules a task calls (`Mode.compile_modules`); the seconds spent compiling are read from torch.compile's
own clock (`compile_seconds`), so that they can be kept out of every throughput and training time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_SYNTAX = "a mode is PRECISION[+channels_last][+compile[:MODE]], e.g. bf16+channels_last"


@dataclass(frozen=True, kw_only=True)
class Mode:
    """One precision / memory format / compilation mode. `name` is how the user wrote it; `precision` is what
    runs (`auto` until `resolved` for a device)."""

    name: str = "fp32"
    precision: str = "fp32"
    channels_last: bool = False
    compile: str | None = None  # a torch.compile mode; None runs eagerly
    compile_backend: str = "inductor"
    emulated: bool = False  # the device has no native instructions for `precision` (set by `resolved`)

    @property
    def memory_format(self) -> str:
        return "channels_last" if self.channels_last else "contiguous"

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype autocast runs matmuls and convolutions in; None for fp32 (no autocast)."""
        return None if self.precision in ("fp32", "auto") else DTYPES[self.precision]

    def record(self) -> dict[str, object]:
        """The record's fields of this mode; `precision` is the resolved one."""
        return {
            "mode": self.name,
            "precision": self.precision,
            "memory_format": self.memory_format,
            "compile": self.compile or "none",
            "compile_backend": self.compile_backend if self.compile else None,
            "emulated_precision": self.emulated,
        }

    def resolved(self, device: torch.device) -> Mode:
        """This mode with `auto` replaced by what `device` runs natively (bf16 where it can, else fp32), and
        `emulated` where an explicit precision is one the device runs without native instructions (bf16 or fp16
        on a CPU without them: it runs, slowly); raises UserError for half precision on MPS."""
        precision = self.precision
        if precision == "auto":
            precision = "bf16" if native_bf16(device) else "fp32"
        if precision != "fp32" and device.type not in ("cpu", "cuda"):
            raise UserError(f"mode {self.name}: {precision} autocast is supported on cpu and cuda, not {device.type}")
        return dataclasses.replace(self, precision=precision, emulated=not native(device, precision))

    def prepare(self, model: nn.Module) -> nn.Module:
        """`model` in this mode's memory format (in place, as `nn.Module.to` does)."""
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """`x` in this mode's memory format (4-d image batches only; other tensors as they are)."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def data(self, data):
        """An ImageData like `data` with its images in this mode's memory format (converted once, on its device)."""
        return dataclasses.replace(data, train_x=self.inputs(data.train_x), test_x=self.inputs(data.test_x))

    def compile_modules(self, *modules: nn.Module) -> None:
        """Compile each of `modules` in place (`nn.Module.compile`), so every call of it runs compiled; a no-op
        when eager. Compile a copy after copying it: a deep copy of a compiled module would call the original."""
        if self.compile:
            for module in modules:
                module.compile(mode=self.compile, backend=self.compile_backend)

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """A context in which forward passes run in this mode's precision (no-op for fp32)."""
        dtype = self.autocast_dtype
        return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


class Amp:
    """Forward passes and optimizer steps of one model in a mode: autocast, and for fp16 loss scaling.

    Each trainee gets its own (the scaler's scale adapts to that model's steps). A step does
    `with amp.autocast(): loss = ...`, then `amp.step(loss, optimizer)` per optimizer, then `amp.update()`.
    """

    def __init__(self, mode: Mode, device: torch.device):
        self.mode, self.device = mode, device
        # Active for fp16; otherwise a pass-through (scale 1, a plain `optimizer.step`).
        self.scaler = torch.amp.GradScaler(device.type, enabled=mode.precision == "fp16")

    def autocast(self) -> contextlib.AbstractContextManager:
        return self.mode.autocast(self.device)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Backward of `loss` (scaled for fp16) and `optimizer`'s step (skipped by the scaler on overflow)."""
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)

    def update(self) -> None:
        """End of a training step: the scaler adjusts its scale (fp16)."""
        self.scaler.update()


def parse(text: str, compile_backend: str = "inductor") -> Mode:
    """The Mode written as `text`; raises UserError naming the valid parts."""
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"mode {text!r}: {_SYNTAX}")
    parts = [part.strip() for part in text.split("+")]
    precision, rest = parts[0], parts[1:]
    if precision not in PRECISIONS:
        raise UserError(f"mode {text!r}: unknown precision {precision!r} (valid: {', '.join(PRECISIONS)}); {_SYNTAX}")
    channels_last, compile_mode = False, None
    for part in rest:
        if part == "channels_last" and not channels_last:
            channels_last = True
        elif part.split(":")[0] == "compile" and compile_mode is None:
            compile_mode = part.partition(":")[2] or "default"
            if compile_mode not in COMPILE_MODES:
                raise UserError(f"mode {text!r}: unknown compile mode {compile_mode!r} (valid: {', '.join(COMPILE_MODES)})")
        else:
            raise UserError(f"mode {text!r}: unexpected part {part!r}; {_SYNTAX}")
    return Mode(
        name="+".join(parts), precision=precision, channels_last=channels_last, compile=compile_mode,
        compile_backend=compile_backend,
    )


def from_flags(precision: str | None, channels_last: bool, compile_mode: str | None) -> str | None:
    """The mode text the `--precision`, `--channels-last` and `--compile` flags ask for; None when none is given."""
    if precision is None and not channels_last and compile_mode is None:
        return None
    parts = [precision or "fp32"] + (["channels_last"] if channels_last else [])
    if compile_mode is not None:
        parts.append("compile" if compile_mode == "default" else f"compile:{compile_mode}")
    return "+".join(parts)


def fresh_compiler() -> None:
    """Forget what torch.compile compiled before in this process and make hitting its recompile limit an error.

    Called before each compiled run: otherwise a run would reuse (and its compile time omit) graphs compiled
    for an earlier model of the same class, and once Dynamo's recompile limit is reached it silently runs the
    model eagerly, which would be measured as compiled."""
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.config.fail_on_recompile_limit_hit = True


def compile_backends() -> list[str]:
    """The torch.compile backends registered in this process (imports torch._dynamo)."""
    import torch._dynamo

    return sorted(torch._dynamo.list_backends(exclude_tags=()))


def native_bf16(device: torch.device) -> bool:
    """Whether `device` runs bfloat16 matmuls and convolutions natively: CUDA compute capability 8.0 or newer,
    or a CPU that PyTorch's oneDNN reports as bf16-capable (AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def native(device: torch.device, precision: str) -> bool:
    """Whether `device` runs `precision`'s matmuls and convolutions with native instructions (fp32 always; fp16
    on CUDA always)."""
    if precision == "bf16":
        return native_bf16(device)
    if precision == "fp16" and device.type == "cpu":
        return native_fp16_cpu()
    return True


def native_fp16_cpu() -> bool:
    """Whether this CPU runs float16 natively (PyTorch's oneDNN reports fp16 support: AVX512-FP16 or AMX-FP16)."""
    return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())


def compile_seconds() -> float:
    """Seconds torch.compile has spent compiling in this process so far: Dynamo's frame compiles (backend
    included) and AOTAutograd's lazy backward compiles. 0 before anything was compiled."""
    if "torch._dynamo" not in sys.modules:
        return 0.0
    spent = torch._dynamo.utils.calculate_time_spent()
    return spent.get("entire_frame_compile", 0.0) + spent.get("entire_backward_compile", 0.0)


@contextlib.contextmanager
def compute_dtypes(model: nn.Module) -> Iterator[set[str]]:
    """Collects, while the block runs, the output dtypes of `model`'s convolutions and linear layers: the
    dtypes its matmuls and convolutions actually ran in."""
    seen: set[str] = set()
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)

    def hook(module, inputs, output):
        if isinstance(output, torch.Tensor):
            seen.add(str(output.dtype).removeprefix("torch."))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()
