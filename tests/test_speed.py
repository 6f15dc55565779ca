"""`archbench speed`: cost figures over batch sizes, image sizes and modes as records that report and compare read,
and the step down to the largest batch that fits."""


import json

import pytest

from bench.results import aggregate, report
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
    assert "| ok; stepped down from 32 |" in out and "2 out-of-memory attempts folded into their step-down rows" in out
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


OOM = "OutOfMemoryError: CUDA out of memory. Tried to allocate 12.25 GiB. GPU 0 has a total capacity of 139.80 GiB"


def speed_record(architecture, batch, stepped_down_from=None, error=None, out_of_memory=False, mode="fp32"):
    """A record as `archbench speed` appends it: the keys the report reads, in the shape of
    results/speed-h200/records.jsonl (a failed one has `out_of_memory` and no figures, an ok one no `out_of_memory`)."""
    record = {
        "record_version": 8, "run_id": "20261204-150228-speed", "suite": "speed", "kind": "speed", "task": "classify",
        "dataset": "random 3x224x224", "input_shape": [3, 224, 224], "image_size": 224, "architecture": architecture,
        "mode": mode, "config_id": f"{mode}-{batch}", "seed": 0, "batch_size": batch, "stepped_down_from": stepped_down_from,
        "status": "failed" if error else "ok", "error": error,
    }
    if error:
        return {**record, "out_of_memory": out_of_memory}
    return {**record, "params": 11_689_512, "flops_per_sample": 3.63e9, "train_throughput": 1000.0 + batch,
            "infer_throughput": 4000.0 + batch, "latency_p50_ms": 1.4, "peak_memory_mb": 20.0 * batch}


def test_a_step_down_is_one_row_that_says_where_from_and_a_failure_other_than_out_of_memory_stays_a_failed_row(
    tmp_path, capsys,
):
    records = [
        speed_record("a", 64), speed_record("a", 512, error=OOM, out_of_memory=True),
        speed_record("a", 384, 512, error=OOM, out_of_memory=True), speed_record("a", 256, 512, error=OOM, out_of_memory=True),
        speed_record("a", 192, 512),
        speed_record("b", 64), speed_record("b", 512, error="RuntimeError: cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"),
        # c's step-down from 32 ran out of memory down to 12; decay_batch_step(12) is 8, which fitted already
        speed_record("c", 8), *(speed_record("c", batch, None if batch == 32 else 32, error=OOM, out_of_memory=True)
                                for batch in (32, 24, 16, 12)),
    ]
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    code, terminal, err = run_cli(capsys, "report", tmp_path / "records.jsonl", "--output", tmp_path / "out")
    assert code == 0, err

    text = (tmp_path / "out" / "REPORT.md").read_text()
    headers = [cell.strip() for cell in text.split("## Speed on random 3x224x224")[1].strip().splitlines()[0].split("|")]
    table = [line for line in text.splitlines() if line.startswith("| a ") or line.startswith("| b ") or line.startswith("| c ")]
    rows = [dict(zip(headers, (cell.strip() for cell in line.split("|")))) for line in table]
    assert [(r["architecture"], r["batch"], r["status"]) for r in rows] == [
        ("a", "64", "ok"), ("a", "192", "ok; stepped down from 512"),
        ("b", "64", "ok"), ("b", "", "failed: RuntimeError: cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"),
        ("c", "8", "ok; stepped down from 32"),
    ]
    assert "OutOfMemoryError" not in text
    folded = ("7 out-of-memory attempts folded into their step-down rows (the records keep them): "
              "a at 224 px, batch 512, 384, 256; c at 224 px, batch 32, 24, 16, 12.")
    after_table = text.split(table[-1] + "\n\n")[1]
    assert after_table.startswith(folded + "\n\nCost figures alone")
    assert folded in terminal and "stepped down from 512" in terminal and "OutOfMemoryError" not in terminal
    assert (tmp_path / "out" / "records.csv").read_text().count(OOM) == 7  # every attempt stays a record


def test_a_step_down_where_no_batch_fits_is_one_failed_row():
    records = [speed_record("a", batch, None if batch == 4 else 4, error=OOM, out_of_memory=True) for batch in (4, 3, 2, 1)]
    records.append(speed_record("a", 4, mode="bf16"))
    rows, folded = aggregate.fold_step_downs(aggregate.aggregate(records))
    assert [row.point for row in rows] == [(224, 1), (224, 4)] and len(folded) == 3
    headers, body = report.table_cells(rows)
    statuses = [dict(zip(headers, line))["status"] for line in body]
    assert statuses[0].startswith("failed: OutOfMemoryError") and statuses[0].endswith("; stepped down from 4 to 1")
    assert statuses[1] == "ok"
    assert report.folded_line(folded).startswith("3 out-of-memory attempts folded into their step-down rows")
