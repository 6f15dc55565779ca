"""Harness overhead: the harness's training epoch against a minimal hand-written PyTorch loop.

Same model (cnn-baseline), optimizer (SGD lr 0.001 momentum 0.9), batch (100) and data, in one process,
so the ratio of the two medians is the harness's overhead. Measure with:

    pytest tests/benchmarks --benchmark-enable --benchmark-group-by=group
"""

import pytest
import torch
import torch.nn.functional as F

import architectures
from bench import data
from bench.data import TensorSource
from bench.measure.modes import Amp, Mode
from bench.tasks import classify
from bench.tasks.loop import run_epoch

BATCH, STEPS = 100, 10
GROUP = f"train epoch: cnn-baseline, batch {BATCH}, {STEPS} steps"


@pytest.fixture(scope="module")
def samples():
    d = data.load("synthetic", limit_train=BATCH * STEPS).standardized
    return d.train_x, d.train_y


def model_and_optimizer(x):
    torch.manual_seed(0)
    model = architectures.create("cnn-baseline", tuple(x.shape[1:]), 10).train()
    return model, torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)


@pytest.mark.benchmark(group=GROUP)
def test_minimal_loop(benchmark, samples):
    x, y = samples
    model, optimizer = model_and_optimizer(x)

    def epoch():
        for start in range(0, len(x), BATCH):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x[start : start + BATCH]), y[start : start + BATCH])
            loss.backward()
            optimizer.step()
        return loss

    assert torch.isfinite(benchmark.pedantic(epoch, rounds=7, warmup_rounds=1))


@pytest.mark.benchmark(group=GROUP)
def test_harness_epoch(benchmark, samples):
    x, y = samples
    model, optimizer = model_and_optimizer(x)
    generator, source, amp = torch.Generator().manual_seed(0), TensorSource(x, y), Amp(Mode(), x.device)
    step = lambda xb, yb: classify.train_step(model, optimizer, xb, yb, amp)
    losses = benchmark.pedantic(
        lambda: run_epoch(step, source.epoch(BATCH, generator), source.steps_per_epoch(BATCH)),
        rounds=7,
        warmup_rounds=1,
    )
    assert losses.shape == (STEPS,) and torch.isfinite(losses).all()
