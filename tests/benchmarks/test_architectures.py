"""Forward and forward+backward of every registered architecture at a fixed small batch, grouped by task.

Classifiers: logits, and cross-entropy backward. VAEs: reconstruction, and the negative ELBO backward.
GANs: the generator from latent codes (what is compared), and its non-saturating loss backward through
the discriminator.

Save a run and compare a later one against it (see docs/development.md, "Micro-benchmarks"):

    pytest tests/benchmarks --benchmark-enable --benchmark-save=before
    pytest tests/benchmarks --benchmark-enable --benchmark-compare --benchmark-compare-fail=median:10%
"""

import pytest
import torch
import torch.nn.functional as F

import architectures
from bench.tasks import vae
from bench.tasks.settings import VaeSettings

BATCH, SHAPE = 8, (3, 32, 32)
CLASSIFIERS = architectures.list_architectures(task="classify")
VAES = architectures.list_architectures(task="vae")
GANS = architectures.list_architectures(task="gan")


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


@pytest.mark.parametrize("name", VAES)
def test_vae_forward(benchmark, name):
    benchmark.group = f"vae forward, batch {BATCH}, {'x'.join(map(str, SHAPE))}"
    model = architectures.create(name, SHAPE, 10).eval()
    with torch.inference_mode():
        logits = benchmark(model, torch.rand(BATCH, *SHAPE))
    assert logits.shape == (BATCH, *SHAPE)


@pytest.mark.parametrize("name", VAES)
def test_vae_forward_backward(benchmark, name):
    benchmark.group = f"vae forward+backward, batch {BATCH}, {'x'.join(map(str, SHAPE))}"
    model, x, settings = architectures.create(name, SHAPE, 10).train(), torch.rand(BATCH, *SHAPE), VaeSettings()

    def step():
        model.zero_grad(set_to_none=True)
        reconstruction, kl = vae.elbo_terms(model, x, settings)
        loss = (reconstruction + kl).mean()
        loss.backward()
        return loss

    assert torch.isfinite(benchmark(step))


@pytest.mark.parametrize("name", GANS)
def test_gan_forward(benchmark, name):
    benchmark.group = f"gan generator forward, batch {BATCH}, {'x'.join(map(str, SHAPE))}"
    model = architectures.create(name, SHAPE, 10).eval()
    with torch.inference_mode():
        images = benchmark(model.generator, torch.randn(BATCH, model.latent_dim))
    assert images.shape == (BATCH, *SHAPE)


@pytest.mark.parametrize("name", GANS)
def test_gan_forward_backward(benchmark, name):
    benchmark.group = f"gan generator forward+backward, batch {BATCH}, {'x'.join(map(str, SHAPE))}"
    model = architectures.create(name, SHAPE, 10).train()
    z = torch.randn(BATCH, model.latent_dim)

    def step():
        model.zero_grad(set_to_none=True)
        logits = model.discriminator(model.generator(z)).reshape(-1)
        loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        loss.backward()
        return loss

    assert torch.isfinite(benchmark(step))
    assert all(p.grad is not None for p in model.generator.parameters())
