"""Utilization: a model's achieved FLOP rate against a matmul's, timed in the same run and precision."""

import pytest
import torch

from bench.measure import utilization
from bench.measure.modes import Mode
from support.cli import run_cli, run_records

FULL_LENGTH = utilization.PEAK_TIMING  # as imported, before conftest shortens it for each test
PEAK = {"peak_flops": 1e12, "peak_flops_iqr": 1e10, "peak_method": "2048x2048 matmul, bfloat16, cpu"}


def test_the_arithmetic_on_known_inputs():
    record = {"flops_per_sample": 2e6, "train_throughput": 1000.0, "infer_throughput": 5000.0, "batch_size": 100}
    got = utilization.figures(record, PEAK, training_factor=3)
    assert got["train_flop_rate"] == pytest.approx(6e9) and got["train_utilization"] == pytest.approx(0.006)
    assert got["infer_flop_rate"] == pytest.approx(1e10) and got["infer_utilization"] == pytest.approx(0.01)
    assert got["peak_method"] == PEAK["peak_method"]
    counted = utilization.figures({**record, "train_flops_per_step": 1e9}, PEAK, training_factor=3)
    assert counted["train_flop_rate"] == pytest.approx(1e9 / 100 * 1000)  # the counted step, not 3x forward
    unknown = utilization.figures(record, PEAK, training_factor=None)
    assert "train_utilization" not in unknown and unknown["infer_utilization"] == pytest.approx(0.01)
    failed = utilization.figures({"flops_per_sample": None}, PEAK, training_factor=3)
    assert failed == PEAK


def test_the_peak_is_a_timed_matmul_in_the_modes_precision(monkeypatch):
    monkeypatch.setattr(utilization, "PEAK_TIMING", FULL_LENGTH)
    fp32 = utilization.matmul_peak(torch.device("cpu"), Mode())
    bf16 = utilization.matmul_peak(torch.device("cpu"), Mode("bf16+channels_last", "bf16", True))
    assert fp32["peak_method"] == "1024x1024 matmul, float32, cpu"
    assert bf16["peak_method"] == "2048x2048 matmul, bfloat16, cpu"
    assert fp32["peak_flops"] > 1e9 and bf16["peak_flops"] > 1e9 and fp32["peak_flops_iqr"] >= 0


def test_a_runs_classifiers_say_how_close_to_the_peak_they_ran_and_the_report_shows_it(tiny_suite, tmp_path, capsys):
    code, out, err = run_cli(capsys, "run", "--suite", tiny_suite("cnn-baseline"), "--out", tmp_path, "--quiet", "--isolation", "none")
    assert code == 0, err
    (record,) = run_records(tmp_path)
    assert record["peak_flops"] > 0 and record["peak_method"].endswith(" matmul, float32, cpu")
    expected = 3 * record["flops_per_sample"] * record["train_throughput"]
    assert record["train_flop_rate"] == pytest.approx(expected)
    assert record["train_utilization"] == pytest.approx(expected / record["peak_flops"])
    assert record["infer_utilization"] == pytest.approx(record["flops_per_sample"] * record["infer_throughput"] / record["peak_flops"])
    assert "train % peak" in out
