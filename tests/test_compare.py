"""The regression gate on real runs of sleep-timed models (steady speed), on edited copies of their records,
and on hand-written records. Verdicts are read from `compare`'s Lines; one test reads the rendered table."""

import json
import re
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from architectures import registry
from bench.results import store
from bench.gate import compare
from bench.cli import main
from bench.errors import UserError
from bench.results.records import read_records
from support.cli import run_cli

SLOWED = "ARCHBENCH_TEST_SLEEPY_DELAY"  # seconds "sleepy" sleeps instead of 0.02; children inherit the environment

SLEEPY = '''
import os
import time
from torch import nn
import architectures

DELAY = {"sleepy": 0.02, "sleepy-ref": 0.02}


class Sleepy(nn.Module):
    """A linear classifier on a 4x4 corner of the image whose forward first sleeps DELAY[name] seconds
    ($ARCHBENCH_TEST_SLEEPY_DELAY instead for "sleepy" when set).

    Its tensor work is too small for torch to wake worker threads, so its speed is the sleep's: known,
    and steady even on a sleepy machine.
    """

    def __init__(self, name, num_classes):
        super().__init__()
        self.name, self.linear = name, nn.Linear(16, num_classes)

    def forward(self, x):
        delay = os.environ.get("ARCHBENCH_TEST_SLEEPY_DELAY") if self.name == "sleepy" else None
        time.sleep(float(delay) if delay else DELAY[self.name])
        return self.linear(x[:, 0, :4, :4].flatten(1))


for _name in DELAY:
    architectures.register(_name, task="classify", family="test")(
        lambda shape, classes, name=_name: Sleepy(name, classes)
    )
'''

REFERENCE = "sleepy-ref"
GATE = ["--reference", REFERENCE]


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
    records = read_records(records_file)
    for record in records:
        change(record)
    path = tmp_path / "edited.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def judge(baseline, *candidates, accept=(), tolerances=None, reference=REFERENCE):
    """The gate's Comparison of records files, as `archbench compare` makes it, and its verdicts by (architecture, figure)."""
    limits = replace(compare.load_tolerances(tolerances), reference=reference)
    base = read_records(baseline)
    comparison = compare.reproduced(
        [compare.compare(base, read_records(c), limits, tuple(accept)) for c in candidates]
    )
    return comparison, {(line.architecture, line.figure): line.verdict for line in comparison.lines}


def test_an_unchanged_rerun_passes(sleepy):
    comparison, verdicts = judge(sleepy.baseline, sleepy("rerun"))
    assert comparison.failures == [], compare.render(comparison)
    assert ("sleepy", "train_throughput ÷ sleepy-ref") in verdicts


def test_an_architecture_slowed_by_20_percent_fails_the_gate(sleepy, capsys, monkeypatch):
    """The one test of the command itself: its rendered table, its summary, its exit status and its stderr line."""
    with monkeypatch.context() as patch:
        patch.setenv(SLOWED, "0.025")  # 25% more time per forward: 20% less throughput
        candidate = sleepy("slowed")
    code, out, err = run_cli(capsys, "compare", sleepy.baseline, candidate, *GATE)
    assert code == 1
    assert re.search(r"^\| architecture +\| figure +\| baseline +\| candidate +\| change +\| verdict +\|$", out, re.M)
    for figure, verdict in [
        (r"train_throughput ÷ sleepy-ref", "regressed"),
        (r"infer_throughput ÷ sleepy-ref", "regressed"),
        (r"test_accuracy", "ok"),
    ]:
        assert re.search(rf"^\| sleepy +\| {figure} +\|.*\| {verdict} +\|$", out, re.M), out
    assert re.search(r"^\| sleepy-ref +\| train_throughput \(raw\) +\|.*\| reference +\|$", out, re.M), out
    assert "regressed" in out.splitlines()[-1] and "sleepy-ref's candidate/baseline ratio" in out
    assert "regression(s): sleepy train_throughput" in err and len(err.strip().splitlines()) == 1
    assert run_cli(capsys, "compare", sleepy.baseline, sleepy.baseline, *GATE)[0] == 0


def test_with_reruns_a_regression_must_show_in_every_one(sleepy, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setenv(SLOWED, "0.025")
        slowed, slowed_again = sleepy("slowed-1"), sleepy("slowed-2")
    unchanged = sleepy("unchanged")
    comparison, verdicts = judge(sleepy.baseline, slowed, slowed_again)
    assert verdicts[("sleepy", "train_throughput ÷ sleepy-ref")] == "regressed", compare.render(comparison)
    comparison, verdicts = judge(sleepy.baseline, slowed, unchanged)
    assert verdicts[("sleepy", "train_throughput ÷ sleepy-ref")] == "noise (not reproduced)"
    assert comparison.failures == [], compare.render(comparison)


def test_a_two_point_accuracy_drop_fails_the_gate(sleepy, tmp_path):
    def drop(record):
        if record["architecture"] == "sleepy":
            record["test_accuracy"] -= 0.02

    comparison, verdicts = judge(sleepy.baseline, edited(sleepy.baseline, tmp_path, drop))
    assert verdicts[("sleepy", "test_accuracy")] == "regressed" and verdicts[("sleepy-ref", "test_accuracy")] == "ok"
    assert [(line.architecture, line.figure) for line in comparison.failures] == [("sleepy", "test_accuracy")]


def test_a_changed_parameter_count_fails_unless_accepted(sleepy, tmp_path):
    def grow(record):
        if record["architecture"] == "sleepy-ref":
            record["params"] += 1

    candidate = edited(sleepy.baseline, tmp_path, grow)
    comparison, verdicts = judge(sleepy.baseline, candidate)
    assert verdicts[("sleepy-ref", "params")] == "regressed" and verdicts[("sleepy", "params")] == "ok"
    comparison, verdicts = judge(sleepy.baseline, candidate, accept=["sleepy-ref"])
    assert comparison.failures == [] and verdicts[("sleepy-ref", "params")] == "accepted"


def test_a_uniformly_slower_machine_is_not_a_regression(sleepy, tmp_path):
    def slower_machine(record):
        for key in ("train_throughput", "infer_throughput"):
            record[key] *= 0.6
            record[f"{key}_repeats"] = [v * 0.6 for v in record[f"{key}_repeats"]]
        record["latency_p50_ms"] /= 0.6
        record["latency_p50_ms_repeats"] = [v / 0.6 for v in record["latency_p50_ms_repeats"]]

    comparison, verdicts = judge(sleepy.baseline, edited(sleepy.baseline, tmp_path, slower_machine))
    assert comparison.failures == [], compare.render(comparison)
    assert verdicts[("sleepy", "train_throughput ÷ sleepy-ref")] == "ok"
    assert verdicts[("sleepy-ref", "train_throughput (raw)")] == "reference"  # shown, not judged


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


def test_per_architecture_tolerances_override_the_defaults(sleepy, tmp_path):
    def slower(record):
        if record["architecture"] == "sleepy":
            record["train_throughput_repeats"] = [v * 0.8 for v in record["train_throughput_repeats"]]
            record["train_throughput"] *= 0.8

    candidate = edited(sleepy.baseline, tmp_path, slower)
    assert judge(sleepy.baseline, candidate)[0].failures
    loose = tmp_path / "loose.toml"
    loose.write_text("[architecture.sleepy]\ntrain_throughput = 0.3\n")
    comparison, verdicts = judge(sleepy.baseline, candidate, tolerances=loose)
    assert comparison.failures == [] and verdicts[("sleepy", "train_throughput ÷ sleepy-ref")] == "ok"


SPREAD = (0.99, 1.0, 1.01, 0.995, 1.005)


def hand_record(architecture, accuracy=0.8, speed=100.0, **extra):
    """A record with the keys the gate reads: an ok classifier on dataset "d", its throughput repeats tight around `speed`."""
    return {
        "task": "classify", "dataset": "d", "architecture": architecture, "config_id": "c", "status": "ok", "seed": 0,
        "test_accuracy": accuracy, "train_throughput": speed, "train_throughput_repeats": [speed * f for f in SPREAD],
        "params": 1000, **extra,
    }


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


HAND = {"a": 100.0, "b": 200.0, "c": 300.0}


def hand_run(**changes):
    """One record per architecture of HAND; `changes[name]` edits that architecture's record (None: leave it out)."""
    records = [hand_record(name, speed=speed) for name, speed in HAND.items()]
    for record in records:
        change = changes.get(record["architecture"], lambda r: r)
        if change is None:
            record.clear()
        else:
            change(record)
    return [r for r in records if r]


def test_a_candidate_missing_an_architecture_fails_naming_it(tmp_path, capsys):
    baseline = write(tmp_path / "baseline.jsonl", hand_run())
    candidate = write(tmp_path / "candidate.jsonl", hand_run(b=None))
    code, _, err = run_cli(capsys, "compare", baseline, candidate)
    assert code == 1 and "archbench compare: 1 regression(s): b record (missing)" in err
    comparison = compare.compare(hand_run(), hand_run(b=None), compare.load_tolerances())
    (line,) = [line for line in comparison.lines if line.architecture == "b"]
    assert (line.figure, line.baseline, line.candidate, line.verdict) == ("record", "ok", "absent", "missing")
    assert comparison.failures == [line]
    # An architecture only in the candidate is shown, not judged.
    extra = compare.compare(hand_run(b=None), hand_run(), compare.load_tolerances())
    assert extra.only_in_candidate == ["b"] and extra.failures == []


def test_a_figure_the_candidate_lacks_is_missing():
    def lose_accuracy(record):
        del record["test_accuracy"]

    comparison = compare.compare(hand_run(), hand_run(a=lose_accuracy), compare.load_tolerances())
    verdicts = {(line.architecture, line.figure): line.verdict for line in comparison.lines}
    assert verdicts[("a", "test_accuracy")] == "missing" and verdicts[("b", "test_accuracy")] == "ok"
    assert [(line.architecture, line.figure) for line in comparison.failures] == [("a", "test_accuracy")]
    # A figure the baseline never had is no failure: nothing was lost.
    assert compare.compare(hand_run(a=lose_accuracy), hand_run(), compare.load_tolerances()).failures == []


def test_records_of_different_versions_are_not_comparable(tmp_path, capsys):
    def version_2(record):
        record["record_version"] = 2
        record["test_accuracy"] = 0.1  # not judged: its meaning may have changed with the version

    def version_1(record):
        record["record_version"] = 1  # the same as stating none

    comparison = compare.compare(hand_run(), hand_run(a=version_2, b=version_1), compare.load_tolerances())
    lines = [line for line in comparison.lines if line.architecture == "a"]
    assert [(l.figure, l.baseline, l.candidate, l.verdict) for l in lines] == [("record_version", "1", "2", "not comparable")]
    assert comparison.failures == lines
    assert all(line.verdict == "ok" for line in comparison.lines if line.architecture != "a")
    baseline = write(tmp_path / "baseline.jsonl", hand_run())
    candidate = write(tmp_path / "candidate.jsonl", hand_run(a=version_2))
    code, out, err = run_cli(capsys, "compare", baseline, candidate)
    assert code == 1 and "a record_version (not comparable)" in err and "1 not comparable" in out


def test_a_false_tolerance_shows_a_figure_without_judging_it(tmp_path):
    def halved(record):
        record["train_throughput"] /= 2
        record["train_throughput_repeats"] = [v / 2 for v in record["train_throughput_repeats"]]

    judged = compare.compare(hand_run(), hand_run(a=halved), compare.load_tolerances())
    assert [(l.architecture, l.verdict) for l in judged.failures] == [("a", "regressed")]  # the control
    off = tmp_path / "off.toml"
    off.write_text("[default]\ntrain_throughput = false\n")
    comparison = compare.compare(hand_run(), hand_run(a=halved), compare.load_tolerances(off))
    (line,) = [l for l in comparison.lines if l.architecture == "a" and l.figure.startswith("train_throughput")]
    assert line.verdict == "unjudged" and line.change == "-50.0%" and comparison.failures == []
    assert "1 regressed" not in compare.render(comparison) and "3 unjudged" in compare.render(comparison)
    per_architecture = tmp_path / "per-architecture.toml"
    per_architecture.write_text("[architecture.a]\ntrain_throughput = false\n")
    comparison = compare.compare(hand_run(), hand_run(a=halved), compare.load_tolerances(per_architecture))
    assert {l.architecture: l.verdict for l in comparison.lines if "throughput" in l.figure}["a"] == "unjudged"
    assert comparison.failures == []


@pytest.mark.parametrize("value", ["true", "-0.1", '"fast"'])
def test_tolerances_are_non_negative_numbers_or_false(tmp_path, value):
    path = tmp_path / "bad.toml"
    path.write_text(f"[default]\ntrain_throughput = {value}\n")
    with pytest.raises(UserError, match="non-negative numbers, or false"):
        compare.load_tolerances(path)


def test_the_ci_gate_judges_quality_memory_and_structure_not_speed():
    ci = compare.load_tolerances(Path(__file__).parents[1] / ".ci" / "tolerances.toml")
    speed = [f.key for f in compare.figures() if f.speed]
    assert speed and all(ci.of("any", key) is False for key in speed)
    assert ci.of("any", "test_accuracy") == 5.0 and isinstance(ci.of("any", "peak_memory_mb"), float)


def test_what_a_later_rerun_lacks_is_kept_not_called_noise():
    tolerances = compare.load_tolerances()
    complete, lacking = (compare.compare(hand_run(), run, tolerances) for run in (hand_run(), hand_run(c=None)))
    result = compare.reproduced([complete, lacking])
    assert [(l.architecture, l.figure, l.candidate, l.verdict) for l in result.failures] == [
        ("c", "record", "absent (candidate 2)", "missing")
    ]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_text('{"architecture": "x"\n{}\n'), "corrupt record"),
        (lambda p: p.write_text(json.dumps({"architecture": "other", "task": "classify", "dataset": "d", "status": "ok", "config_id": "c"}) + "\n"), "nothing in common"),
        (lambda p: None, "no run records at"),
    ],
    ids=["corrupt", "nothing-in-common", "missing"],
)
def test_unusable_input_exits_2_with_one_line(tmp_path, capsys, make, message):
    baseline = write(tmp_path / "baseline.jsonl", hand_run())
    candidate = tmp_path / "candidate.jsonl"
    make(candidate)
    code, _, err = run_cli(capsys, "compare", baseline, candidate)
    assert code == 2 and message in err.replace("have no architecture and configuration in common", "nothing in common")
    assert len(err.strip().splitlines()) == 1


def test_baseline_update_copies_the_runs_and_their_commit(sleepy, tmp_path, capsys):
    rerun = sleepy("baseline-rerun")
    assert main(["baseline", "update", str(sleepy.baseline), str(rerun), "--to", str(tmp_path / "baseline")]) == 0
    source = json.loads((tmp_path / "baseline" / "baseline.json").read_text())
    assert source["git_commit"] == read_records(sleepy.baseline)[0]["git_commit"]
    assert source["run_ids"] == [sleepy.baseline.parent.name, rerun.parent.name]
    assert len(read_records(tmp_path / "baseline" / "records.jsonl")) == 4
    comparison, verdicts = judge(tmp_path / "baseline" / "records.jsonl", sleepy.baseline)
    assert comparison.failures == [] and verdicts[("sleepy", "train_throughput ÷ sleepy-ref")] == "ok"
    (tmp_path / "baseline").chmod(0o750)  # a new baseline keeps the folder's mode, and each run counts once
    assert main(["baseline", "update", str(rerun), str(rerun), "--to", str(tmp_path / "baseline")]) == 0
    assert (tmp_path / "baseline").stat().st_mode & 0o777 == 0o750
    assert len(read_records(tmp_path / "baseline" / "records.jsonl")) == 2
