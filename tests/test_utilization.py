"""Utilization: a model's achieved FLOP rate against a matmul's, timed in the same run and precision."""

import pytest
import torch

from bench.measure import utilization
from bench.measure.modes import Mode
from bench.run import session
from support.cli import run_cli, run_records

FULL_LENGTH = {  # as imported, before conftest shortens them for each test
    name: getattr(utilization, name) for name in ("PEAK_TIMING", "PLATEAU_CALL_S", "WARMUP_MAX_S")
}
PEAK = {"peak_flops": 1e12, "peak_flops_iqr": 1e10, "peak_method": "2048x2048 matmul, bfloat16, cpu"}


@pytest.fixture
def full_length(monkeypatch):
    for name, value in FULL_LENGTH.items():
        monkeypatch.setattr(utilization, name, value)


def test_the_arithmetic_on_known_inputs():
    record = {"flops_per_sample": 2e6, "train_throughput": 1000.0, "infer_throughput": 5000.0, "batch_size": 100, **PEAK}
    got = utilization.figures(record, training_factor=3)
    assert got["train_flop_rate"] == pytest.approx(6e9) and got["train_utilization"] == pytest.approx(0.006)
    assert got["infer_flop_rate"] == pytest.approx(1e10) and got["infer_utilization"] == pytest.approx(0.01)
    counted = utilization.figures({**record, "train_flops_per_step": 1e9}, training_factor=3)
    assert counted["train_flop_rate"] == pytest.approx(1e9 / 100 * 1000)  # the counted step, not 3x forward
    unknown = utilization.figures(record, training_factor=None)
    assert "train_utilization" not in unknown and unknown["infer_utilization"] == pytest.approx(0.01)
    assert utilization.figures({"flops_per_sample": None, **PEAK}, training_factor=3) == {}


def test_a_runs_peak_is_the_best_pair_peak_of_its_matmul_so_far_and_utilization_is_taken_against_it():
    fp32, bf16 = "1024x1024 matmul, float32, cpu", "2048x2048 matmul, bfloat16, cpu"

    def pair(peak, method=fp32):
        return {"task": "classify", "flops_per_sample": 1e6, "train_throughput": 1000.0, "infer_throughput": 4000.0,
                "batch_size": 10, "pair_peak_flops": peak, "peak_method": method}

    best = {}
    records = [pair(1e11), pair(2e11), pair(1.5e11), pair(5e11, bf16), {"task": "classify", "status": "failed"}]
    for record in records:
        session.finish(record, {"hostname": "h"}, best)
    assert [r.get("peak_flops") for r in records] == [1e11, 2e11, 2e11, 5e11, None]
    assert records[2]["train_utilization"] == pytest.approx(3 * 1e6 * 1000 / 2e11)
    assert records[2]["infer_utilization"] == pytest.approx(1e6 * 4000 / 2e11)
    assert "train_utilization" not in records[4] and records[4]["hostname"] == "h"
    assert best == session.best_peaks_of(records) == {fp32: 2e11, bf16: 5e11}  # what a resumed run starts from


@pytest.mark.parametrize("rate, device, dtype, expected", [
    (2.5e9, "cpu", torch.bfloat16, 320),  # bf16 emulated on an AVX2 CPU: 20 ms is reached early
    (2e11, "cpu", torch.float32, 1024),  # fast fp32: the CPU's fp32 cap
    (2e12, "cpu", torch.bfloat16, 2048),  # AMX bf16: the CPU's cap
    (8e14, "cuda", torch.bfloat16, 8192),  # an H200: the GPU's cap
])
def test_the_peaks_matmul_grows_until_a_call_takes_long_enough_or_reaches_the_cap(rate, device, dtype, expected, full_length):
    asked = []

    def seconds_at(size):
        asked.append(size)
        return 2 * size**3 / rate

    size = utilization.peak_size(torch.device(device), dtype, seconds_at)
    assert size == expected and size % 64 == 0
    assert asked == sorted(asked) and asked[0] == utilization.START_SIZE
    assert all(seconds_at(s) < utilization.PLATEAU_CALL_S for s in asked[:-1])


def test_the_warm_up_ends_once_the_rate_stops_rising(full_length):
    calls = iter([0.05, 0.03, 0.021, 0.0208, 0.0209, 0.0207, 0.02, 0.01])  # no faster by 2% after the third call
    assert utilization.warm_up(lambda: next(calls)) == pytest.approx(0.0207)
    assert next(calls) == 0.02
    slow = iter([0.3, 0.25, 0.2])  # still speeding up, but WARMUP_MAX_S is spent
    assert utilization.warm_up(lambda: next(slow)) == pytest.approx(0.25)
    assert next(slow) == 0.2


def test_the_peak_is_a_timed_matmul_in_the_modes_precision(full_length):
    fp32 = utilization.matmul_peak(torch.device("cpu"), Mode())
    bf16_cl = Mode(name="bf16+channels_last", precision="bf16", channels_last=True)
    bf16 = utilization.matmul_peak(torch.device("cpu"), bf16_cl)
    assert fp32["peak_method"].endswith(" matmul, float32, cpu") and bf16["peak_method"].endswith(" matmul, bfloat16, cpu")
    assert fp32["peak_flops"] > 1e8 and bf16["peak_flops"] > 1e8 and fp32["peak_flops_iqr"] >= 0


def test_a_runs_classifiers_say_how_close_to_the_peak_they_ran_and_the_report_shows_it(tiny_suite, tmp_path, capsys):
    code, out, err = run_cli(capsys, "run", "--suite", tiny_suite("cnn-baseline"), "--out", tmp_path, "--quiet", "--isolation", "none")
    assert code == 0, err
    (record,) = run_records(tmp_path)
    assert record["peak_flops"] == record["pair_peak_flops"] > 0 and record["peak_method"].endswith(" matmul, float32, cpu")
    expected = 3 * record["flops_per_sample"] * record["train_throughput"]
    assert record["train_flop_rate"] == pytest.approx(expected)
    assert record["train_utilization"] == pytest.approx(expected / record["peak_flops"])
    assert record["infer_utilization"] == pytest.approx(record["flops_per_sample"] * record["infer_throughput"] / record["peak_flops"])
    assert "train % peak" in out
