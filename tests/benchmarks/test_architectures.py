"""Forward and forward+backward of every registered classifier at a fixed small batch, grouped by task.

Save a run and compare a later one against it (see README, "Micro-benchmarks"):

    pytest tests/benchmarks --benchmark-enable --benchmark-save=before
    pytest tests/benchmarks --benchmark-enable --benchmark-compare --benchmark-compare-fail=median:10%
"""

import pytest
import torch
import torch.nn.functional as F

import architectures

BATCH, SHAPE = 8, (3, 32, 32)
CLASSIFIERS = architectures.list_architectures(task="classify")


@pytest.fixture
def batch():
    torch.manual_seed(0)
    return torch.randn(BATCH, *SHAPE), torch.randint(0, 10, (BATCH,))


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classify_forward(benchmark, batch, name):
    benchmark.group = f"classify forward, batch {BATCH}, {'x'.join(map(str, SHAPE))}"
    model = architectures.create(name, SHAPE, 10).eval()
    with torch.inference_mode():
        logits = benchmark(model, batch[0])
    assert logits.shape == (BATCH, 10)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classify_forward_backward(benchmark, batch, name):
    benchmark.group = f"classify forward+backward, batch {BATCH}, {'x'.join(map(str, SHAPE))}"
    model = architectures.create(name, SHAPE, 10).train()
    x, y = batch

    def step():
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    assert torch.isfinite(benchmark(step))
    assert all(p.grad is not None for p in model.parameters())
