"""`archbench speed`: cost figures over batch sizes, image sizes and modes as records that report and compare read,
and the step down to the largest batch that fits."""


import pytest

from bench.run.speed import decay_batch_step
from support.cli import run_cli, run_records

FAST = """
architectures = ["cnn-baseline"]
modes = ["fp32"]

[classify]
optimizer = "sgd"
lr = 0.01

[measure]
repeats = 5
warmup_time = 0.0
min_repeat_time = 0.005
max_time = 0.0
latency_time = 0.02
latency_min_calls = 5
"""

# A classifier whose forward pass "runs out of memory" above 20 samples, as CUDA's allocator would.
FAKE_ALLOCATOR = """
import torch
from torch import nn
import architectures

class FailsAbove(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.linear = nn.Linear(input_shape[0] * input_shape[1] * input_shape[2], num_classes)

    def forward(self, x):
        if len(x) > 20:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(x)} samples' activations")
        return self.linear(x.flatten(1))

@architectures.register("fails-above-20", task="classify", family="test")
def build(input_shape, num_classes):
    return FailsAbove(input_shape, num_classes)
"""


@pytest.fixture
def fast_suite(tmp_path):
    path = tmp_path / "fast-speed.toml"
    path.write_text(FAST)
    return path


def test_batches_step_down_between_powers_of_two_as_timms_decay_batch_step_does():
    sequence, batch = [], 64
    while batch:
        sequence.append(batch)
        batch = decay_batch_step(batch)
    assert sequence == [64, 48, 32, 24, 16, 12, 8, 6, 4, 3, 2, 1]
    assert decay_batch_step(100) == 96 and decay_batch_step(33) == 32


def test_a_sweep_records_every_point_and_report_and_compare_read_them(fast_suite, tmp_path, capsys):
    argv = ["speed", "--suite", fast_suite, "--arch", "cnn-baseline", "timm:resnet18", "--batch-sizes", "4", "2",
            "--image-sizes", "16", "24", "--classes", "5", "--quiet", "--isolation", "none"]
    code, out, err = run_cli(capsys, *argv, "--out", tmp_path / "a")
    assert code == 0, err
    records = run_records(tmp_path / "a")
    points = [(r["architecture"], r["image_size"], r["batch_size"]) for r in records]
    assert points == [(name, size, batch) for size in (16, 24) for name in ("cnn-baseline", "timm:resnet18") for batch in (2, 4)]
    for record in records:
        size = record["image_size"]
        assert record["status"] == "ok" and record["kind"] == "speed" and record["input_shape"] == [3, size, size]
        assert record.get("train_time_s") is None  # nothing was trained
        for key in ("train_throughput", "infer_throughput", "latency_p50_ms", "peak_memory_mb", "train_utilization"):
            assert record[key] > 0, key
        assert len(record["train_throughput_repeats"]) >= 5 and record["train_throughput_iqr"] >= 0
    assert "### Speed on random 3x16x16" in out and "### Speed on random 3x24x24" in out
    (run_dir,) = (tmp_path / "a").iterdir()
    assert (run_dir / "plots" / "speed-random-3x16x16.png").stat().st_size > 0
    assert "Cost figures alone" in (run_dir / "REPORT.md").read_text()

    code, _, err = run_cli(capsys, "run", "--resume", run_dir)
    assert code == 2 and "speed sweeps are not resumed" in err

    small = ["speed", "--suite", fast_suite, "--batch-sizes", "2", "4", "--image-sizes", "16", "--quiet", "--isolation", "none"]
    for out_dir in ("b", "c"):
        code, _, err = run_cli(capsys, *small, "--out", tmp_path / out_dir)
        assert code == 0, err
    (baseline,), (candidate,) = (tmp_path / "b").iterdir(), (tmp_path / "c").iterdir()
    code, out, err = run_cli(capsys, "compare", baseline, candidate, "--tolerances", _lenient(tmp_path))
    assert code == 0, out + err
    assert "cnn-baseline at 16 px, batch 2" in out and "cnn-baseline at 16 px, batch 4" in out


def _lenient(tmp_path):
    """Tolerances no timing on a busy test machine breaks: this test checks that compare reads the points."""
    path = tmp_path / "lenient.toml"
    path.write_text("[default]\ntrain_throughput = 10.0\ninfer_throughput = 10.0\nlatency_p50_ms = 10.0\npeak_memory_mb = 10.0\n")
    return path


def test_out_of_memory_steps_down_to_the_largest_batch_that_fits_and_tries_no_larger_one(fast_suite, tmp_path, capsys):
    (tmp_path / "fake_allocator.py").write_text(FAKE_ALLOCATOR)
    code, out, err = run_cli(
        capsys, "speed", "--suite", fast_suite, "--arch-module", tmp_path / "fake_allocator.py", "--arch", "fails-above-20",
        "--batch-sizes", "8", "32", "64", "--image-sizes", "8", "--out", tmp_path, "--isolation", "none",
    )
    assert code == 0, err
    got = [(r["batch_size"], r["status"], bool(r.get("out_of_memory")), r["stepped_down_from"]) for r in run_records(tmp_path)]
    assert got == [(8, "ok", False, None), (32, "failed", True, None), (24, "failed", True, 32), (16, "ok", False, 32)]
    assert "batch 32 is out of memory; not trying 64" in out
    failed = run_records(tmp_path)[1]
    assert failed["error"].startswith("OutOfMemoryError: CUDA out of memory") and "\n" not in failed["error"]


def test_a_cpu_memory_limit_counts_as_out_of_memory(fast_suite, tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "speed", "--suite", fast_suite, "--batch-sizes", "4", "8", "--image-sizes", "16", "--max-memory", "0.001",
        "--out", tmp_path, "--quiet", "--isolation", "none",
    )
    assert code == 0, err
    records = run_records(tmp_path)
    assert [(r["batch_size"], r["out_of_memory"]) for r in records] == [(4, True), (3, True), (2, True), (1, True)]
    assert records[0]["error"].startswith("OverMemoryLimit: training at batch 4 took ")
    assert records[0]["error"].endswith(" MB, over the limit of 0.001 MB")


def test_speed_measures_classifiers_only(fast_suite, tmp_path, capsys):
    code, _, err = run_cli(capsys, "speed", "--suite", fast_suite, "--arch", "vae-mlp", "--out", tmp_path / "runs", "--quiet")
    assert code == 2 and err == "archbench: error: archbench speed measures classifiers; vae-mlp is a vae\n"
    assert not (tmp_path / "runs").exists()
    code, _, err = run_cli(capsys, "speed", "--suite", fast_suite, "--arch", "torchvision:nonet", "--out", tmp_path)
    assert code == 2 and "torchvision has no such model" in err
