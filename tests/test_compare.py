"""The regression gate on real runs of sleep-timed models (steady speed) and on edited copies of their records."""

import json
import sys
from dataclasses import replace

import pytest
import torch

from architectures import registry
from bench import compare, store
from bench.cli import main
from bench.errors import UserError

SLEEPY = '''
import time
from torch import nn
import architectures

DELAY = {"sleepy": 0.02, "sleepy-ref": 0.02}


class Sleepy(nn.Module):
    """A linear classifier on a 4x4 corner of the image whose forward first sleeps DELAY[name] seconds.

    Its tensor work is too small for torch to wake worker threads, so its speed is the sleep's: known,
    and steady even on a sleepy machine.
    """

    def __init__(self, name, num_classes):
        super().__init__()
        self.name, self.linear = name, nn.Linear(16, num_classes)

    def forward(self, x):
        time.sleep(DELAY[self.name])
        return self.linear(x[:, 0, :4, :4].flatten(1))


for _name in DELAY:
    architectures.register(_name, task="classify", family="test")(
        lambda shape, classes, name=_name: Sleepy(name, classes)
    )
'''

GATE = ["--reference", "sleepy-ref"]


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: no worker threads to wake after each sleep, so timings stay the sleep's under load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sleepy(tmp_path_factory, one_thread):
    folder = tmp_path_factory.mktemp("sleepy")
    path = folder / "sleepy_models.py"
    path.write_text(SLEEPY)
    suite = folder / "suite.toml"
    suite.write_text(
        'dataset = "synthetic"\narchitectures = ["sleepy", "sleepy-ref"]\nlimit_train = 64\nlimit_test = 64\n'
        '[classify]\nepochs = 1\nbatch_size = 64\noptimizer = "adam"\n'
        "[measure]\nrepeats = 7\nwarmup_time = 0.0\nmin_repeat_time = 0.0\nlatency_time = 0.0\nlatency_min_calls = 14\n"
    )

    def run(name):
        out = folder / name
        argv = ["run", "--suite", suite, "--out", out, "--quiet", "--arch-module", path]
        assert main([str(a) for a in argv]) == 0
        (records_file,) = out.glob(f"*/{store.RECORDS}")
        return records_file

    run.module_path, run.baseline = path, None
    run.baseline = run("baseline")
    yield run
    for name in ("sleepy", "sleepy-ref"):
        registry._REGISTRY.pop(name, None)
    sys.modules.pop("sleepy_models", None)


def edited(records_file, tmp_path, change):
    records = store.read_records(records_file)
    for record in records:
        change(record)
    path = tmp_path / "edited.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def gate(capsys, baseline, *candidates_and_flags):
    code = main(["compare", str(baseline), *map(str, candidates_and_flags), *GATE])
    out, err = capsys.readouterr()
    lines = {}
    for row in out.splitlines():
        cells = [c.strip() for c in row.strip("|").split("|")]
        if len(cells) == 6:
            lines[(cells[0], cells[1])] = cells[5]
    return code, lines, out, err


def test_an_unchanged_rerun_passes(sleepy, capsys):
    code, lines, out, err = gate(capsys, sleepy.baseline, sleepy("rerun"))
    assert code == 0, out
    assert "regressed" not in lines.values() and ("sleepy", "train_throughput ÷ sleepy-ref") in lines


def test_an_architecture_slowed_by_20_percent_fails_the_gate(sleepy, capsys):
    models = sys.modules["sleepy_models"]
    models.DELAY["sleepy"] = 0.025  # 25% more time per forward: 20% less throughput
    try:
        candidate = sleepy("slowed")
    finally:
        models.DELAY["sleepy"] = 0.02
    code, lines, out, err = gate(capsys, sleepy.baseline, candidate)
    assert code == 1
    assert lines[("sleepy", "train_throughput ÷ sleepy-ref")] == "regressed"
    assert lines[("sleepy", "infer_throughput ÷ sleepy-ref")] == "regressed"
    assert lines[("sleepy-ref", "train_throughput (raw)")] == "reference"
    assert "regression(s): sleepy train_throughput" in err


def test_with_reruns_a_regression_must_show_in_every_one(sleepy, capsys):
    models = sys.modules["sleepy_models"]
    models.DELAY["sleepy"] = 0.025
    try:
        slowed, slowed_again = sleepy("slowed-1"), sleepy("slowed-2")
    finally:
        models.DELAY["sleepy"] = 0.02
    unchanged = sleepy("unchanged")
    code, lines, _, err = gate(capsys, sleepy.baseline, slowed, slowed_again)
    assert code == 1 and lines[("sleepy", "train_throughput ÷ sleepy-ref")] == "regressed", err
    code, lines, out, _ = gate(capsys, sleepy.baseline, slowed, unchanged)
    assert code == 0 and lines[("sleepy", "train_throughput ÷ sleepy-ref")] == "noise (not reproduced)", out


def test_a_two_point_accuracy_drop_fails_the_gate(sleepy, tmp_path, capsys):
    def drop(record):
        if record["architecture"] == "sleepy":
            record["test_accuracy"] -= 0.02

    code, lines, _, err = gate(capsys, sleepy.baseline, edited(sleepy.baseline, tmp_path, drop))
    assert code == 1
    assert lines[("sleepy", "test_accuracy")] == "regressed" and lines[("sleepy-ref", "test_accuracy")] == "ok"
    assert "sleepy test_accuracy" in err


def test_a_changed_parameter_count_fails_unless_accepted(sleepy, tmp_path, capsys):
    def grow(record):
        if record["architecture"] == "sleepy-ref":
            record["params"] += 1

    candidate = edited(sleepy.baseline, tmp_path, grow)
    code, lines, _, _ = gate(capsys, sleepy.baseline, candidate)
    assert code == 1 and lines[("sleepy-ref", "params")] == "regressed" and lines[("sleepy", "params")] == "ok"
    code, lines, _, _ = gate(capsys, sleepy.baseline, candidate, "--accept", "sleepy-ref")
    assert code == 0 and lines[("sleepy-ref", "params")] == "accepted"


def test_a_uniformly_slower_machine_is_not_a_regression(sleepy, tmp_path, capsys):
    def slower_machine(record):
        for key in ("train_throughput", "infer_throughput"):
            record[key] *= 0.6
            record[f"{key}_repeats"] = [v * 0.6 for v in record[f"{key}_repeats"]]
        record["latency_p50_ms"] /= 0.6
        record["latency_p50_ms_repeats"] = [v / 0.6 for v in record["latency_p50_ms_repeats"]]

    code, lines, out, _ = gate(capsys, sleepy.baseline, edited(sleepy.baseline, tmp_path, slower_machine))
    assert code == 0, out
    assert lines[("sleepy", "train_throughput ÷ sleepy-ref")] == "ok"
    assert lines[("sleepy-ref", "train_throughput (raw)")] == "reference"  # shown, not judged


def speed_records(speeds: dict[str, float]) -> list[dict]:
    """One ok record per architecture whose train throughput repeats sit tightly around `speeds[name]`."""
    return [
        {"task": "classify", "dataset": "d", "architecture": name, "config_id": "c", "status": "ok",
         "train_throughput": speed, "train_throughput_repeats": [speed * f for f in (0.99, 1.0, 1.01, 0.995, 1.005)]}
        for name, speed in speeds.items()
    ]


def test_the_median_machine_factor_is_not_moved_by_one_disturbed_architecture():
    base = {"a": 100.0, "b": 200.0, "c": 300.0, "d": 400.0, "e": 500.0}
    # A machine 40% slower for every architecture, and "a" disturbed to a third of that besides.
    cand = {name: speed * 0.6 * (1 / 3 if name == "a" else 1) for name, speed in base.items()}
    tolerances = compare.load_tolerances()
    assert tolerances.reference == compare.MEDIAN
    result = compare.compare(speed_records(base), speed_records(cand), tolerances)
    verdicts = {line.architecture: line.verdict for line in result.lines}
    assert result.machine == {("d", "train_throughput"): pytest.approx(0.6)}
    assert verdicts == {"a": "regressed", "b": "ok", "c": "ok", "d": "ok", "e": "ok"}
    with pytest.raises(UserError, match="reference 'z' is not in both runs"):
        compare.compare(speed_records(base), speed_records(cand), replace(tolerances, reference="z"))
    # With "a" as the single reference, its disturbance would make every other architecture "improved".
    named = compare.compare(speed_records(base), speed_records(cand), replace(tolerances, reference="a"))
    assert {line.architecture: line.verdict for line in named.lines} == {
        "a": "reference", "b": "improved", "c": "improved", "d": "improved", "e": "improved"
    }


def test_changes_inside_the_spread_are_noise():
    base = compare._significant([100, 90, 110, 95, 105], [85, 120, 80, 118, 88], alpha=0.05)
    apart = compare._significant([100, 101, 99, 100, 102], [80, 81, 79, 80, 82], alpha=0.05)
    assert base is False and apart is True


def test_per_architecture_tolerances_override_the_defaults(sleepy, tmp_path, capsys):
    def slower(record):
        if record["architecture"] == "sleepy":
            record["train_throughput_repeats"] = [v * 0.8 for v in record["train_throughput_repeats"]]
            record["train_throughput"] *= 0.8

    candidate = edited(sleepy.baseline, tmp_path, slower)
    assert gate(capsys, sleepy.baseline, candidate)[0] == 1
    loose = tmp_path / "loose.toml"
    loose.write_text("[architecture.sleepy]\ntrain_throughput = 0.3\n")
    code, lines, _, _ = gate(capsys, sleepy.baseline, candidate, "--tolerances", str(loose))
    assert code == 0 and lines[("sleepy", "train_throughput ÷ sleepy-ref")] == "ok"


def test_missing_architectures_are_listed_not_dropped(sleepy, tmp_path, capsys):
    records = [r for r in store.read_records(sleepy.baseline) if r["architecture"] != "sleepy"]
    candidate = tmp_path / "fewer.jsonl"
    candidate.write_text("".join(json.dumps(r) + "\n" for r in records))
    code, lines, out, _ = gate(capsys, sleepy.baseline, candidate)
    assert code == 0 and "Only in the baseline (not compared): sleepy" in out


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_text('{"architecture": "x"\n'), "corrupt record"),
        (lambda p: p.write_text(json.dumps({"architecture": "other", "task": "classify", "status": "ok"}) + "\n"), "nothing in common"),
        (lambda p: None, "no run records at"),
    ],
    ids=["corrupt", "nothing-in-common", "missing"],
)
def test_unusable_input_exits_2_with_one_line(sleepy, tmp_path, capsys, make, message):
    candidate = tmp_path / "candidate.jsonl"
    make(candidate)
    code, _, _, err = gate(capsys, sleepy.baseline, candidate)
    assert code == 2 and message in err.replace("have no architecture and configuration in common", "nothing in common")
    assert len(err.strip().splitlines()) == 1


def test_baseline_update_copies_the_runs_and_their_commit(sleepy, tmp_path, capsys):
    rerun = sleepy("baseline-rerun")
    assert main(["baseline", "update", str(sleepy.baseline), str(rerun), "--to", str(tmp_path / "baseline")]) == 0
    source = json.loads((tmp_path / "baseline" / "baseline.json").read_text())
    assert source["git_commit"] == store.read_records(sleepy.baseline)[0]["git_commit"]
    assert source["run_ids"] == [sleepy.baseline.parent.name, rerun.parent.name]
    assert len(store.read_records(tmp_path / "baseline" / "records.jsonl")) == 4
    capsys.readouterr()
    code, lines, out, _ = gate(capsys, tmp_path / "baseline", sleepy.baseline)
    assert code == 0 and lines[("sleepy", "train_throughput ÷ sleepy-ref")] == "ok", out
