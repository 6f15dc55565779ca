"""The CUDA path of every mode: run on a GPU machine with `pytest -m cuda`; skipped where there is no GPU."""

import pytest
import torch
from support.settings import FAST_MEASURE
from torch import nn

import architectures
from bench import data
from bench.measure import memory, modes, timing
from bench.measure.modes import Amp, Mode
from bench.tasks import TASKS
from bench.tasks.base import RunContext
from bench.tasks.settings import ClassifySettings, FidSettings, GanSettings, VaeSettings

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
CUDA = torch.device("cuda")
MODES = [
    "fp32", "fp32+channels_last", "bf16", "bf16+channels_last", "fp16", "fp16+channels_last", "auto",
    "bf16+channels_last+compile",
]


@pytest.fixture(scope="module")
def tiny():
    return data.load("synthetic", limit_train=200, limit_test=100).to(CUDA)


@pytest.fixture(scope="module")
def fid(tmp_path_factory):
    cache = tmp_path_factory.mktemp("fid")
    return FidSettings(epochs=1, batch_size=50, eval_batch_size=100, kid_subsets=2, cache_dir=str(cache))


@pytest.mark.parametrize("text", MODES)
def test_every_task_runs_in_every_mode_on_cuda(text, tiny, fid, tmp_path):
    mode = modes.parse(text).resolved(CUDA)
    context = RunContext(device=CUDA, seed=0, measure=FAST_MEASURE, run_dir=tmp_path, fid=fid, mode=mode)
    expected = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[mode.precision]
    for task, name, settings in (
        (TASKS["classify"], "cnn-bn", ClassifySettings(epochs=2, batch_size=50, optimizer="adam")),
        (TASKS["vae"], "vae-conv", VaeSettings(epochs=1, batch_size=50, iwae_samples=4, eval_batch_size=100)),
        (TASKS["gan"], "gan-dcgan", GanSettings(epochs=1, batch_size=50, latent_dim=16, eval_batch_size=100)),
    ):
        torch.manual_seed(0)
        model = architectures.create(name, tiny.input_shape, tiny.num_classes, **settings.model_overrides()).to(CUDA)
        record = {"architecture": name}
        task.run(model, tiny, settings, context, record)
        assert record["compute_dtype"] == expected, (text, name)
        assert record["peak_memory_method"] == "cuda max_memory_allocated above start" and record["peak_memory_mb"] > 0
        assert record["train_throughput"] > 0 and record["latency_p50_ms"] > 0


def test_auto_is_bf16_from_compute_capability_8():
    expected = "bf16" if torch.cuda.get_device_capability() >= (8, 0) else "fp32"
    assert modes.parse("auto").resolved(CUDA).precision == expected


def test_throughput_on_cuda_is_timed_with_cuda_events(monkeypatch):
    made = []
    real = torch.cuda.Event

    def event(*args, **kwargs):
        made.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.cuda, "Event", event)
    x = torch.randn(64, 64, device=CUDA)
    seconds = timing.time_repeats(lambda: x @ x, CUDA, FAST_MEASURE)
    assert len(seconds) == 5 and all(s > 0 for s in seconds)
    assert made and all(kwargs.get("enable_timing") for kwargs in made)


def test_the_fp16_scaler_steps_and_backs_off_on_cuda():
    amp = Amp(Mode(name="fp16", precision="fp16"), CUDA)
    assert amp.scaler.is_enabled()
    model = nn.Linear(8, 1).to(CUDA)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.weight.detach().clone()
    with amp.autocast():  # small inputs: at the first scale, 2**16, larger gradients overflowed fp16 on an H200
        loss = model(0.01 * torch.randn(4, 8, device=CUDA)).float().square().mean()
    assert model(torch.randn(1, 8, device=CUDA)).dtype == torch.float32  # outside autocast
    amp.step(loss, optimizer)
    amp.update()
    assert not torch.equal(before, model.weight.detach()) and amp.scaler.get_scale() == 2.0**16
    with amp.autocast():
        overflow = model(torch.full((4, 8), 1e4, device=CUDA)).square().sum() * 1e4
    amp.step(overflow, optimizer)
    amp.update()
    assert amp.scaler.get_scale() < 2.0**16


def test_peak_memory_on_cuda_comes_from_the_allocator():
    with memory.peak_memory(CUDA) as peak:
        block = torch.empty(64 * 2**20, dtype=torch.uint8, device=CUDA)
        del block
    assert peak.method == "cuda max_memory_allocated above start" and peak.bytes >= 64 * 2**20
