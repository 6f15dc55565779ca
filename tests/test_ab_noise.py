"""What the paired gate can resolve and where its noise comes from: the windows' conditions, their pairing, the
floor's arithmetic and the discarding rules, on known inputs; and `ab --calibrate` end to end."""

import json
import math
import random

import pytest
import torch

from bench import configs, probe, stats
from bench.cli import gating
from bench.gate import ab, noise
from bench.measure import conditions
from bench.run import runner

from support.settings import FAST_MEASURE
from test_ab import SIDES

CPU = torch.device("cpu")


def window(started: float, **changes) -> dict:
    return {"started": started, "wall_s": 0.1, "cpu_s": 0.2, "switches": 0, "steal_s": 0.0, "others_cpu_s": 0.0, **changes}


def sides(base_times, candidate_times, base_rates=(100.0,) * 4, candidate_rates=(90.0,) * 4):
    """One round of train_throughput windows taken in turns, each window starting at the time given."""
    base = {"turns": True, "train_throughput": 100.0, "train_throughput_repeats": list(base_rates),
            "train_throughput_conditions": [window(t) for t in base_times]}
    candidate = {"turns": True, "train_throughput": 50.0, "train_throughput_repeats": list(candidate_rates),
                 "train_throughput_conditions": [window(t) for t in candidate_times]}
    return base, candidate


def test_windows_pair_side_by_side_only_where_their_start_times_say_they_ran_next_to_each_other():
    # Turns go base, candidate, base, candidate, ...: each pair is next in time.
    base, candidate = sides([0, 2, 4, 6], [1, 3, 5, 7])
    assert ab.paired_windows(base, candidate, "train_throughput") == [(100.0, 90.0)] * 4
    assert ab.round_ratio(base, candidate, "train_throughput") == pytest.approx(0.9)
    # The candidate's list reordered (its third window listed second): refused, not paired by position.
    base, candidate = sides([0, 2, 4, 6], [1, 5, 3, 7])
    assert ab.paired_windows(base, candidate, "train_throughput") is None
    assert ab.round_ratio(base, candidate, "train_throughput") == pytest.approx(0.5)  # the ratio of the medians
    # One side one turn ahead (an extra window earlier on): every pair is a turn apart, none next to each other.
    base, candidate = sides([0, 2, 4, 6], [3, 5, 7, 9])
    assert ab.paired_windows(base, candidate, "train_throughput") is None
    # A longer list cannot pair either; and the rounds judged without pairs are counted on the figure's line.
    base, candidate = sides([0, 2, 4, 6], [1, 3, 5, 7, 8], candidate_rates=(90.0,) * 5)
    assert ab.paired_windows(base, candidate, "train_throughput") is None
    lines = ab.judge([{"a": {**base, "status": "ok"}}] * 6, [{"a": {**candidate, "status": "ok"}}] * 6, 0.05)
    (line,) = [line for line in lines if line.figure == "train_throughput"]
    assert line.unpaired == 6 and line.ratio == pytest.approx(0.5)


def test_a_probe_records_what_each_timed_window_ran_under(tmp_path):
    config = configs.load("quick", architectures=["cnn-baseline"], limit_train=128, limit_test=64, out=tmp_path,
                          measure=FAST_MEASURE)
    mode = configs.modes(config)[0].resolved(CPU)
    record = probe.probe("cnn-baseline", config, runner.load_data(config), CPU, mode, 0, tmp_path)
    for figure in ("train_throughput", "infer_throughput", "latency_p50_ms"):
        windows = record[f"{figure}_conditions"]
        assert len(windows) == len(record[f"{figure}_repeats"])
        assert all(w["wall_s"] > 0 and w["cpu_s"] >= 0 and w["switches"] >= 0 for w in windows)
        assert [w["started"] for w in windows] == sorted(w["started"] for w in windows)
    # The figure a window belongs to is its caller's label; nothing is observed once the probe is done.
    assert record["train_throughput_conditions"][-1]["started"] < record["infer_throughput_conditions"][0]["started"]


def test_conditions_count_this_process_cpu_time_and_its_wall_time():
    started, before = 0.0, conditions.read()
    torch.ones(400, 400) @ torch.ones(400, 400)
    found = conditions.between(before, conditions.read(), started)
    assert found.wall_s > 0 and found.cpu_s > 0 and found.switches >= 0


def test_the_floor_and_the_rounds_it_needs_match_the_signed_rank_interval_on_normal_noise():
    spread, floor = 0.03, 0.02
    rounds = noise.rounds_for(spread, floor)
    assert noise.floor_after(spread, rounds) <= floor < noise.floor_after(spread, rounds - 1)
    generator = random.Random(0)
    widths = []
    for _ in range(200):
        median, low, high = stats.ratio_interval([math.exp(generator.gauss(0, spread)) for _ in range(rounds)])
        widths.append(math.log(high / low) / 2)
    assert statistics_median(widths) == pytest.approx(math.log1p(floor), rel=0.15)
    assert 10 <= rounds <= 16  # the normal approximation would say 10; few rounds widen the signed-rank interval
    many = noise.rounds_for(0.05, 0.01)  # past the simulated range: the normal approximation
    assert many == math.ceil((1.96 * math.sqrt(math.pi / 3) * 0.05 / math.log(1.01)) ** 2) > noise.SIMULATED
    assert noise.rounds_for(0.0, floor) == ab.MIN_ROUNDS and noise.rounds_for(0.001, 0.05) == ab.MIN_ROUNDS


def statistics_median(values):
    ordered = sorted(values)
    return (ordered[len(ordered) // 2] + ordered[(len(ordered) - 1) // 2]) / 2


def test_a_lines_worst_end_and_floor_read_its_interval_in_the_figures_direction():
    throughput = ab.Line(architecture="a", figure="train_throughput", base=100, candidate=97, ratio=0.97, low=0.95,
                         high=0.99, higher_is_better=True)
    assert throughput.worst == pytest.approx(1 / 0.95 - 1) and throughput.floor == pytest.approx(0.99 / 0.97 - 1)
    latency = ab.Line(architecture="a", figure="latency_p50_ms", base=1, candidate=1.02, ratio=1.02, low=1.0,
                      high=1.05, higher_is_better=False)
    assert latency.worst == pytest.approx(0.05) and latency.floor == pytest.approx(1.02 / 1.0 - 1)


def test_discarding_rules_keep_the_windows_nobody_disturbed_and_the_cpu_clock_ignores_time_off_the_cpu():
    generator = random.Random(1)
    pairs = []
    for index in range(60):
        preempted = index % 3 == 0  # a third of the candidate's windows lose 20% of their time to another process
        ratio = math.exp(generator.gauss(0, 0.01)) * (0.8 if preempted else 1.0)
        candidate = window(0, switches=5 if preempted else 0, cpu_s=0.2 * (0.8 if preempted else 1.0))
        pairs.append(noise.WindowPair(round=index, figure="train_throughput", log_ratio=math.log(ratio),
                                      base=window(0), candidate=candidate))
    rows = {what: (n, spread) for what, n, spread in noise.window_noise(pairs, {"train_throughput": True})}
    everything, cpu = rows["every pair, wall clock"], rows["every pair, each process's CPU time as its clock"]
    unswitched = rows["neither window had an involuntary context switch"]
    assert everything[0] == cpu[0] == 60 and unswitched[0] == 40
    assert unswitched[1] < everything[1] / 1.5 and cpu[1] < everything[1] / 1.5
    correlations = dict(noise.followed_by(pairs))
    assert correlations["involuntary context switches"] > 0.5 and correlations["steal time"] is None


def test_calibrate_prints_the_floor_the_budgets_and_where_the_noise_comes_from(tmp_path, capsys):
    generator = random.Random(2)

    def measure(first, second):
        measured = []
        for side in (first, second):
            rates = [100 * math.exp(generator.gauss(0, 0.02)) for _ in range(4)]
            times = [0, 2, 4, 6] if side is first else [1, 3, 5, 7]
            figures = {"status": "ok", "turns": True, "params": 10, "train_throughput": statistics_median(rates),
                       "train_throughput_repeats": rates, "train_throughput_conditions": [window(t) for t in times]}
            measured.append({"a": figures})
        return tuple(measured)

    result = ab.run(SIDES, measure, 0.05, ab.Rounds(budget_s=1e9, max_rounds=8, until_budget=True))
    assert result.rounds == 8 and len(result.measured[0]) == len(result.measured[1]) == 8
    gating._present_calibration(result)
    out = capsys.readouterr().out
    assert "noise floor of train_throughput" in out and "floor 5%: rounds (--budget)" in out
    assert "every pair, each process's CPU time as its clock" in out and "involuntary context switches" in out
    rounds_file = tmp_path / "rounds.jsonl"
    gating._write_rounds(result, SIDES, rounds_file)
    lines = [json.loads(line) for line in rounds_file.read_text().splitlines()]
    assert [(line["round"], line["side"]) for line in lines[:4]] == [(0, "base"), (0, "candidate"), (1, "base"), (1, "candidate")]
    assert len(lines) == 16 and all(line["figures"]["a"]["train_throughput_conditions"] for line in lines)


def test_more_windows_per_round_are_asked_only_of_probes_that_take_the_flag():
    from bench.gate import probes

    request = probes.Request(suite="quick", architectures=("cnn-bn",), repeats=15)
    assert request.command("python", 3)[5:7] == ["--repeats", "15"]
    assert "--repeats" not in request.command("python", 2)  # an older side's probe would refuse it
