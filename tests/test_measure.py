import contextlib
import dataclasses
import statistics
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from bench.measure import counts, load, memory, throughput, timing
from bench.stats import iqr
from support.settings import FAST_MEASURE

CPU = torch.device("cpu")


def test_parameter_counts_split_trainable():
    model = nn.Sequential(nn.Linear(10, 20), nn.Linear(20, 3))
    model[0].weight.requires_grad_(False)
    assert counts.parameter_counts(model) == (10 * 20 + 20 + 20 * 3 + 3, 20 + 20 * 3 + 3)


def test_flops_count_a_multiply_add_as_two():
    layer = nn.Linear(10, 20, bias=False)
    assert counts.flops(lambda: layer(torch.randn(1, 10))) == 2 * 10 * 20
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert counts.flops(lambda: conv(torch.randn(1, 3, 16, 16))) == 2 * 16 * 16 * 8 * 3 * 9


def test_time_repeats_calibrates_calls_per_repeat():
    calls = []
    settings = timing.MeasureSettings(repeats=6, warmup_time=0, min_repeat_time=0.001, max_time=0)
    seconds = timing.time_repeats(lambda: calls.append(1), CPU, settings)
    assert len(seconds) == 6 and all(s > 0 for s in seconds)
    assert len(calls) > 2 + 6  # fast calls are batched so a repeat fills min_repeat_time


def test_time_repeats_without_a_warm_up_calibrates_on_the_time_per_call_it_is_given():
    calls = []
    settings = timing.MeasureSettings(repeats=5, warmup_time=0, min_repeat_time=0.5, max_time=0)
    timing.time_repeats(lambda: calls.append(1), CPU, settings, warmup_calls=0, per_call=0.1)
    assert len(calls) == 5 * 5  # no warm-up call; 5 calls of 0.1 s fill a repeat


def scripted_clock(monkeypatch, repeat_seconds):
    """Make every timed repeat take the next of `repeat_seconds` (per call); the warm-up's calls take 0.1 s."""
    durations = iter(repeat_seconds)
    monkeypatch.setattr(timing, "_warm_up", lambda call, timer, warmup_time, min_calls: 0.1)
    monkeypatch.setattr(timing, "timed", lambda call, device, calls: next(durations) * calls)


def test_repeats_that_agree_stop_at_the_minimum(monkeypatch):
    scripted_clock(monkeypatch, [0.100, 0.101, 0.100, 0.099, 0.100] + [0.5] * 100)
    settings = timing.MeasureSettings(repeats=5, min_repeat_time=0.1, max_spread=0.02, max_time=10)
    assert timing.time_repeats(lambda: None, CPU, settings) == [0.100, 0.101, 0.100, 0.099, 0.100]


def test_spread_repeats_go_on_until_they_agree(monkeypatch):
    scripted = [0.10, 0.14, 0.10, 0.13, 0.10] + [0.10] * 6 + [0.5] * 100
    scripted_clock(monkeypatch, scripted)
    settings = timing.MeasureSettings(repeats=5, min_repeat_time=0.1, max_spread=0.02, max_time=10)
    seconds = timing.time_repeats(lambda: None, CPU, settings)
    assert seconds == scripted[: len(seconds)] and 5 < len(seconds) <= 11
    assert iqr(seconds) <= 0.02 * statistics.median(seconds)  # the first count at which they agree
    assert iqr(seconds[:-1]) > 0.02 * statistics.median(seconds[:-1])


def test_spread_repeats_stop_at_the_time_limit(monkeypatch):
    scripted_clock(monkeypatch, [0.1, 0.2] * 100)
    settings = timing.MeasureSettings(repeats=5, min_repeat_time=0.1, max_spread=0.02, max_time=3)
    seconds = timing.time_repeats(lambda: None, CPU, settings)
    assert sum(seconds) >= 3 and sum(seconds[:-1]) < 3  # one call per repeat: 0.1 s or 0.2 s each


def test_rates_and_percentiles_are_summarized_from_every_repeat():
    rates = timing.summarize_rates([1.0, 0.5, 0.25, 2.0, 1.0], items_per_call=10)
    assert rates["repeats"] == [10, 20, 40, 5, 10] and rates["median"] == 10 and rates["iqr"] == 10
    assert timing.percentiles_ms([0.001 * i for i in range(1, 102)]) == pytest.approx({"p50": 51.0, "p95": 96.0})


def test_peak_memory_sees_a_real_allocation():
    with memory.peak_memory(CPU) as peak:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        del block
    assert peak.mb >= 60, peak
    assert "RSS" in peak.method


def test_training_costs_measure_a_fresh_copy_each_time():
    made = []

    def make_step():
        made.append(1)
        return lambda: torch.randn(100, 100) @ torch.randn(100, 100)

    costs = throughput.training_costs(make_step, 32, CPU, FAST_MEASURE)
    assert len(made) == 2 and len(costs["train_throughput_repeats"]) == 5
    assert costs["train_throughput"] > 0 and costs["peak_memory_mb"] is not None


class CountingClock:
    """A stand-in for the fit's TrainClock that counts the blocks it was paused for."""

    def __init__(self):
        self.pauses = 0

    @contextlib.contextmanager
    def paused(self):
        self.pauses += 1
        yield


def test_windows_during_training_pool_from_the_first_epochs_end_as_training_pools_its_steps():
    record = throughput.training_costs(lambda: lambda: time.sleep(0.001), 10, CPU, FAST_MEASURE)
    assert len(record["train_throughput_windows"]) == 1 and len(record["train_throughput_repeats"]) == 5
    before = record["train_throughput"]
    settings = dataclasses.replace(FAST_MEASURE, window_every=1e-9, window_repeats=3)  # a window after every step
    windows = throughput.TrainingWindows(lambda trained=(): lambda: time.sleep(0.01), 10, 2, CPU, settings, record)
    clock = CountingClock()
    for _ in range(4):
        windows.after_step(clock)
    rates = record["train_throughput_repeats"]
    assert clock.pauses == 4 and len(rates) == 5 + 4 * 3
    assert record["train_throughput_iqr"] == pytest.approx(iqr(rates))
    medians = [statistics.median(rates[start : start + 3]) for start in range(5, 17, 3)]
    assert record["train_throughput_windows"] == [before, *medians]
    assert record["train_throughput_window_steps"] == [0, 1, 2, 3, 4]
    pooled = medians[1:]  # from the end of the first epoch of 2 steps on, samples over seconds
    assert record["train_throughput"] == pytest.approx(len(pooled) / sum(1 / m for m in pooled))
    assert record["train_throughput"] < 1000  # the window before training, at 10000/s, left out


def test_windows_come_every_so_many_seconds_of_training_at_the_speed_timed_before_it():
    record = {"train_throughput": 1000.0, "train_throughput_windows": [1000.0], "train_throughput_repeats": [1000.0] * 5}
    settings = dataclasses.replace(FAST_MEASURE, window_every=0.05, window_repeats=1)  # 10 items at 1000/s: 5 steps
    windows = throughput.TrainingWindows(lambda trained=(): lambda: None, 10, 100, CPU, settings, record)
    clock = CountingClock()
    for _ in range(12):
        windows.after_step(clock)
    assert clock.pauses == 2 and record["train_throughput_window_steps"] == [0, 5, 10]
    # none from the first epoch's end (step 100) on: the windows during training give the figure
    slow = record["train_throughput_windows"][1:]
    assert record["train_throughput"] == pytest.approx(2 / sum(1 / w for w in slow))


@pytest.mark.parametrize("every_s, planned, expected", [
    (5.0, 12, [0, 5, 8, 11]),  # 10 items at 1000/s: 500 steps; a 12-step run of 3-step epochs: 3 shares of 3 steps from step 3 on
    (0.05, 600, [0, 5, 10, 15, 20]),  # a long run: one every 5 steps (0.05 s), which is more than 3
    (5.0, None, [0]),  # a budgeted run's length is unknown: by the clock alone
])
def test_a_short_run_gets_min_windows_evenly_spaced_from_the_first_epochs_end(every_s, planned, expected):
    record = {"train_throughput": 1000.0, "train_throughput_windows": [1000.0], "train_throughput_repeats": [1000.0] * 5}
    settings = dataclasses.replace(FAST_MEASURE, window_every=every_s, window_repeats=1, min_windows=3)
    windows = throughput.TrainingWindows(lambda trained=(): lambda: None, 10, 3, CPU, settings, record, planned)
    for _ in range(min(planned or 20, 20)):
        windows.after_step(CountingClock())
    assert record["train_throughput_window_steps"] == expected


def test_a_one_epoch_runs_windows_fall_and_pool_in_its_second_half_where_its_loop_figure_is_taken():
    assert throughput.loop_stretch(12, 12) == 6 and throughput.loop_stretch(24, 12) == 12
    assert throughput.loop_stretch(None, 12) == 12  # a time budget: from the first epoch's end, as before
    record = {"train_throughput": 1000.0, "train_throughput_windows": [1000.0], "train_throughput_repeats": [1000.0] * 5}
    settings = dataclasses.replace(FAST_MEASURE, window_every=5.0, window_repeats=1, min_windows=3)
    windows = throughput.TrainingWindows(lambda trained=(): lambda: time.sleep(0.001), 10, 12, CPU, settings, record, 12)
    for _ in range(12):
        windows.after_step(CountingClock())
    assert record["train_throughput_window_steps"] == [0, 7, 9, 11]  # 3 shares of 2 steps from step 6 on
    during = record["train_throughput_windows"][1:]
    assert record["train_throughput"] == pytest.approx(3 / sum(1 / w for w in during))


@pytest.mark.parametrize("samples_per_s, calls", [(1000.0, 2), (50.0, 1)])  # 10 items: 10 ms or 200 ms a step
def test_a_windows_copy_warms_up_for_one_step_unless_a_step_takes_a_tenth_of_a_second(samples_per_s, calls):
    made = []

    def make_step(trained=()):
        made.append(0)
        return lambda: made.__setitem__(-1, made[-1] + 1)

    record = {"train_throughput": samples_per_s, "train_throughput_windows": [samples_per_s], "train_throughput_repeats": [1.0] * 5}
    settings = dataclasses.replace(FAST_MEASURE, window_every=1e-9, window_repeats=1)
    windows = throughput.TrainingWindows(make_step, 10, 2, CPU, settings, record)
    windows.after_step(CountingClock())
    assert made == [calls]  # a warm-up call and a timed one; or the timed one alone


def test_a_window_during_training_times_a_copy_resumed_from_trainings_optimizers():
    made_with = []

    def make_step(trained=()):
        made_with.append(trained)
        return lambda: None

    record = {"train_throughput": 1000.0, "train_throughput_windows": [1000.0], "train_throughput_repeats": [1000.0] * 5}
    settings = dataclasses.replace(FAST_MEASURE, window_every=1e-9, window_repeats=1)
    windows, optimizer = throughput.TrainingWindows(make_step, 10, 2, CPU, settings, record), object()
    windows.after_step(CountingClock(), (optimizer,))
    assert made_with == [(optimizer,)]


def test_no_windows_during_training_when_window_repeats_is_0():
    record = {"train_throughput": 1000.0, "train_throughput_windows": [1000.0], "train_throughput_repeats": [1000.0] * 5}
    unchanged = {**record, "train_throughput_window_steps": [0]}
    settings = dataclasses.replace(FAST_MEASURE, window_repeats=0)
    windows, clock = throughput.TrainingWindows(lambda: 1 / 0, 10, 2, CPU, settings, record), CountingClock()
    for _ in range(5):
        windows.after_step(clock)
    assert record == unchanged and clock.pauses == 0


@pytest.mark.alone
def test_machine_load_counts_the_cpu_other_processes_take_and_not_its_own_childrens(tmp_path):
    """A busy loop in another process shows as other_cpu_s; this process's own work and its children's (a pair's
    DataLoader workers) do not."""
    burn = "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass\nopen({done!r}, 'w').close()"
    with load.machine_load() as alone:
        deadline = time.perf_counter() + 0.5
        while time.perf_counter() < deadline:
            pass
    with load.machine_load() as own:
        subprocess.run([sys.executable, "-c", burn.format(done=str(tmp_path / "child"))], check=True)
    done = tmp_path / "orphan"
    # started through a shell that exits at once: the loop runs on as nobody's child of this process
    subprocess.run(["sh", "-c", f"{sys.executable} -c \"{burn.format(done=str(done))}\" &"], check=True)
    with load.machine_load() as loaded:
        while not done.exists():
            time.sleep(0.05)
    assert alone["load_1min"] is not None and loaded["other_cpu_s"] > alone["other_cpu_s"] + 0.5
    assert 0 <= alone["other_cpu_share"] < loaded["other_cpu_share"] <= 1
    assert own["other_cpu_s"] < loaded["other_cpu_s"] - 0.5


def test_a_copy_trained_beside_its_model_does_not_fault_its_pages_in_at_every_step():
    # A timing window's copy (fp32 cnn-wide, batch 128), allocated after the model it copies, frees tens of
    # MB at the top of the heap every step; glibc must keep them, not return them and fault them in again.
    script = """
import copy, resource, torch
from architectures import registry
from bench.measure import memory
from bench.stats import iqr
if memory.steady_allocator() is None:
    raise SystemExit("no glibc mallopt")
torch.manual_seed(0)
x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
def stepper(model):
    optimizer = torch.optim.Adam(model.parameters())
    def step():
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return step
model = registry.create("cnn-wide", (1, 28, 28))
loop = stepper(model)
for _ in range(3): loop()
window = stepper(copy.deepcopy(model))
for _ in range(2): window()
per_step = []
for _ in range(5):
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    window()
    per_step.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
print(sorted(per_step)[2])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    if "no glibc mallopt" in done.stderr:
        pytest.skip("glibc's mallopt is not available here")
    assert done.returncode == 0, done.stderr
    # The median step's pages: 4 MB; 23,000 with a 64 MiB trim threshold. An odd step may still grow the heap.
    assert int(done.stdout.split()[-1]) < 1000


def test_a_forward_reuses_its_largest_activations_whatever_ran_before_it():
    # A forward whose output (16 x 64 x 96 x 96 fp32, 36 MiB) exceeds glibc's 32 MiB mmap threshold, timed by
    # throughput.inference_costs in a fresh process and after training steps: unless steady_allocator serves
    # every block from the heap, glibc maps that block and faults its pages in at every call.
    script = """
import resource, sys, torch
from bench.measure import memory, throughput
from bench.measure.timing import MeasureSettings
if memory.steady_allocator() is None:
    raise SystemExit("no glibc mallopt")
torch.manual_seed(0)
model, x = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU()), torch.randn(16, 3, 96, 96)
if sys.argv[1] == "trained":
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(2):
        optimizer.zero_grad(); model(x).square().mean().backward(); optimizer.step()
faults = []
def forward():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    model(x)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
settings = MeasureSettings(repeats=5, warmup_time=0, min_repeat_time=0, max_time=0, latency_time=0, latency_min_calls=1)
throughput.inference_costs(forward, lambda: model(x[:1]), len(x), torch.device("cpu"), settings)
print(sorted(faults[2:])[len(faults[2:]) // 2])
"""
    per_call = {}
    for history in ("fresh", "trained"):
        done = subprocess.run([sys.executable, "-c", script, history], capture_output=True, text=True)
        if "no glibc mallopt" in done.stderr:
            pytest.skip("glibc's mallopt is not available here")
        assert done.returncode == 0, done.stderr
        per_call[history] = int(done.stdout.split()[-1])
    assert per_call["fresh"] < 1000 and per_call["trained"] < 1000, per_call
