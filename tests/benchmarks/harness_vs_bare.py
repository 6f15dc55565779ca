"""The harness against a bare PyTorch loop, per mode, interleaved in one process: does the harness realise each
mode's speedup? Run from the project's root:

    .venv/bin/python tests/benchmarks/harness_vs_bare.py cnn-baseline 100 fp32,fp32+channels_last,bf16,bf16+channels_last
    .venv/bin/python tests/benchmarks/harness_vs_bare.py resnet18 64 fp32,bf16+channels_last

Per mode and round, in turn:

- the bare loop (`bare_step` below): the model on one fixed random batch of 3x32x32 images, in channels_last
  when the mode asks for it, SGD (lr 0.001, momentum 0.9; PyTorch's default implementation, where the harness
  takes the fused one: bench.tasks.base.make_optimizer), the forward pass and loss under CPU autocast in the
  mode's dtype, and `torch.compile` in the mode's compile mode when it compiles; nothing of the harness;
- the harness's training step (`classify.train_step` on a `trainee` with its `Amp`: what `train_throughput`
  times);
- the harness's training epoch (`loop.run_epoch` on `classify.training_step` over a `TensorSource`: batches gathered
  from the data in the mode's memory format, as `loop.fit` trains).

Prints the median samples/s over the rounds and the harness/bare ratios.
"""

import statistics
import sys
import time

import torch
import torch.nn.functional as F

import architectures
from bench.measure import modes
from bench.data import ImageData, TensorSource
from bench.measure.modes import Amp
from bench.tasks import classify
from bench.tasks.loop import run_epoch, trainee
from bench.tasks.settings import ClassifySettings

CPU = torch.device("cpu")
ROUNDS, STEPS = 5, 5


def bare_step(name: str, batch: int, mode: modes.Mode):
    model = architectures.create(name, (3, 32, 32), 10).train()
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    if mode.channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    dtype = mode.autocast_dtype
    forward = torch.compile(model, mode=mode.compile) if mode.compile else model

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = F.cross_entropy(forward(x), y)
        loss.backward()
        optimizer.step()

    return step


def harness(name: str, batch: int, mode: modes.Mode):
    settings = ClassifySettings(batch_size=batch)
    model = mode.prepare(architectures.create(name, (3, 32, 32), 10))
    images = torch.randn(batch * STEPS, 3, 32, 32)
    data = mode.data(ImageData(
        name="random", train_x=images, train_y=torch.randint(0, 10, (len(images),)), test_x=images[:batch],
        test_y=images[:batch], num_classes=10,
    ))
    x, y = data.train_x[:batch], data.train_y[:batch]
    copied = trainee(model, mode, classify.compiled_parts)
    optimizer, amp = classify.make_optimizer(copied.parameters(), settings), Amp(mode, CPU)
    step = lambda: classify.train_step(copied, optimizer, x, y, amp)
    generator, source = torch.Generator().manual_seed(0), TensorSource(data.train_x, data.train_y)
    fitted = classify.training_step(trainee(model, mode, classify.compiled_parts), settings, Amp(mode, CPU))
    epoch = lambda: run_epoch(fitted.step, source.epoch(batch, generator), source.steps_per_epoch(batch))
    return step, epoch


def main() -> None:
    name, batch, texts = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
    torch.manual_seed(0)
    runs = {}
    for text in texts:
        mode = modes.parse(text).resolved(CPU)
        step, epoch = harness(name, batch, mode)
        runs[text] = {"bare": (bare_step(name, batch, mode), STEPS), "harness step": (step, STEPS), "harness epoch": (epoch, 1)}
        for call, _ in runs[text].values():
            for _ in range(2):
                call()
    rates = {text: {kind: [] for kind in kinds} for text, kinds in runs.items()}
    for _ in range(ROUNDS):
        for text, kinds in runs.items():
            for kind, (call, calls) in kinds.items():
                started = time.perf_counter()
                for _ in range(calls):
                    call()
                rates[text][kind].append(batch * STEPS / (time.perf_counter() - started))
    first = statistics.median(rates[texts[0]]["bare"])
    for text in texts:
        median = {kind: statistics.median(values) for kind, values in rates[text].items()}
        print(
            f"{name} batch {batch} {text:20s} bare {median['bare']:7.1f} (x{median['bare'] / first:.2f})  "
            f"harness step {median['harness step']:7.1f} ({median['harness step'] / median['bare']:.3f} of bare)  "
            f"harness epoch {median['harness epoch']:7.1f} ({median['harness epoch'] / median['bare']:.3f} of bare)",
            flush=True,
        )


if __name__ == "__main__":
    main()
