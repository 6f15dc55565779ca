"""A training step of the quick suite's models under each of PyTorch's optimizer implementations, interleaved.

    .venv/bin/python tests/benchmarks/optimizer_step.py [--rounds 5]

On a CPU, PyTorch's default Adam and SGD are a Python loop over the parameter tensors (`foreach` and `fused` are
opt-in there); bench.tasks.base.make_optimizer takes the fused kernel. This prints, per model, the median
milliseconds of a whole training step (bf16 autocast, channels_last, as the quick suite runs) with the default,
foreach and fused implementations, each round timing every implementation in turn on its own copy of the model,
and the ratio to the default.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from architectures import registry
from bench.measure import modes
from bench.tasks import gan

SHAPE = (1, 16, 16)
CPU = torch.device("cpu")
MODE = modes.parse("bf16+channels_last").resolved(CPU)
IMPLEMENTATIONS = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def classifier_step(name: str, optimizer: type, options: dict, batch: int = 50):
    model = MODE.prepare(registry.create(name, SHAPE))
    step_optimizer, amp = optimizer(model.parameters(), **options), modes.Amp(MODE, CPU)
    x, y = MODE.inputs(torch.rand(batch, *SHAPE)), torch.randint(0, 10, (batch,))

    def step():
        step_optimizer.zero_grad(set_to_none=True)
        with amp.autocast():
            loss = F.cross_entropy(model(x).float(), y)
        amp.step(loss, step_optimizer)

    return step


def gan_step(name: str, optimizer: type, options: dict, batch: int = 32):
    model = MODE.prepare(registry.create(name, SHAPE))
    g, d = optimizer(model.generator.parameters(), **options), optimizer(model.discriminator.parameters(), **options)
    x, amp = torch.rand(batch, *SHAPE), modes.Amp(MODE, CPU)
    return lambda: gan.train_step(model, g, d, x, amp)


CASES = [  # (model, step builder, optimizer, its settings, steps per timing)
    ("gan-mlp", gan_step, torch.optim.Adam, dict(lr=2e-4, betas=(0.5, 0.999)), 200),
    ("cnn-baseline", classifier_step, torch.optim.Adam, dict(lr=1e-3), 200),
    ("cnn-baseline", classifier_step, torch.optim.SGD, dict(lr=1e-3, momentum=0.9), 200),
    ("resnet18", classifier_step, torch.optim.Adam, dict(lr=1e-3), 30),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, mode {MODE.name}")
    for name, build, optimizer, options, calls in CASES:
        steps = {impl: build(name, optimizer, {**options, **extra}) for impl, extra in IMPLEMENTATIONS.items()}
        for step in steps.values():
            for _ in range(5):
                step()
        ms: dict[str, list[float]] = {impl: [] for impl in steps}
        for _ in range(rounds):
            for impl, step in steps.items():
                start = time.perf_counter()
                for _ in range(calls):
                    step()
                ms[impl].append((time.perf_counter() - start) / calls * 1e3)
        default = statistics.median(ms["default"])
        cells = "  ".join(f"{impl} {statistics.median(v):6.2f} ms ({statistics.median(v) / default:.2f})" for impl, v in ms.items())
        print(f"{name:13s} {optimizer.__name__:5s} {cells}", flush=True)


if __name__ == "__main__":
    main()
