"""The paired A/B speed gate: statistics on known inputs, alternation, worktrees, and real runs on a fake repository."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.measure import timing
from bench import stats
from bench.gate import ab, probes
from bench.cli import main
from bench.errors import UserError

MODEL = '''import time

from torch import nn

import architectures

DELAY = {delay}


class Tiny(nn.Module):
    def __init__(self, input_shape, num_classes, delay):
        super().__init__()
        c, h, w = input_shape
        self.linear, self.delay = nn.Linear(c * h * w, num_classes), delay

    def forward(self, x):
        if self.delay:
            time.sleep(self.delay)
        return self.linear(x.flatten(1))


@architectures.register("tiny-linear", task="classify", family="test")
def tiny_linear(input_shape, num_classes, **overrides):
    return Tiny(input_shape, num_classes, DELAY)


@architectures.register("tiny-steady", task="classify", family="test")
def tiny_steady(input_shape, num_classes, **overrides):
    return Tiny(input_shape, num_classes, 0)
'''

SUITE = """
dataset = "synthetic"
architectures = ["tiny-*"]
limit_train = 64
limit_test = 32

[classify]
batch_size = 16

[measure]
repeats = 5
warmup_time = 0.0
min_repeat_time = 0.02
max_time = 0.0
latency_time = 0.0
latency_min_calls = 5
"""


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """A repository of a tiny architecture module: commit `base`, then `slow`, where each forward of tiny-linear
    sleeps 20 ms (tiny-steady is the same in both)."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    git(root, "config", "user.email", "test@example.com")
    git(root, "config", "user.name", "test")
    (root / "suite.toml").write_text(SUITE)
    (root / "models.py").write_text(MODEL.format(delay=0))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "base")
    git(root, "tag", "base")
    (root / "models.py").write_text(MODEL.format(delay=0.02))
    git(root, "commit", "-qam", "slow")
    git(root, "tag", "slow")
    return root


# --- statistics on known inputs


def test_the_signed_rank_interval_needs_six_values_at_95_percent_and_then_spans_the_walsh_averages():
    assert stats.signed_rank_interval([0.1, 0.2, 0.3, 0.4, 0.5]) == (-math.inf, math.inf)
    assert stats.signed_rank_interval([3, 1, 2, 6, 5, 4]) == (1, 6)  # n = 6: k = 1, the extreme Walsh averages


def test_the_signed_rank_interval_of_ten_values_uses_the_tabulated_critical_value():
    # n = 10, two-sided 5%: the critical value of the signed-rank statistic is 8, so k = 9 of 55 Walsh averages.
    values = [float(v) for v in range(1, 11)]
    walsh = sorted((values[i] + values[j]) / 2 for i in range(10) for j in range(i, 10))
    assert stats.signed_rank_interval(values) == (walsh[8], walsh[-9])
    low, high = stats.signed_rank_interval([v - 5.5 for v in values])
    assert low < 0 < high and low == -high


def test_ratio_intervals_are_taken_on_logs_and_the_median_is_of_the_ratios():
    median, low, high = stats.ratio_interval([0.80, 0.82, 0.85, 0.88, 0.90, 0.91])
    assert median == pytest.approx(0.865) and low == pytest.approx(0.80) and high == pytest.approx(0.91)


def test_a_round_taken_in_turns_is_judged_on_its_windows_side_by_side():
    # The machine slowed down for the last two windows of both sides: window by window the candidate is 0.9.
    base = {"train_throughput": 100.0, "train_throughput_repeats": [100.0, 100.0, 100.0, 50.0, 50.0]}
    candidate = {"train_throughput": 50.0, "train_throughput_repeats": [90.0, 90.0, 90.0, 45.0, 45.0]}
    assert ab.round_ratio(base, candidate, "train_throughput") == pytest.approx(0.5)  # one process after the other
    turns = {"turns": True}
    assert ab.round_ratio({**base, **turns}, {**candidate, **turns}, "train_throughput") == pytest.approx(0.9)
    assert ab.round_ratio({**base, **turns}, {"turns": True, "peak_memory_mb": 3.0}, "peak_memory_mb") is None


@pytest.mark.parametrize(
    "low, high, higher_is_better, expected",
    [
        (0.70, 0.85, True, "regressed"),  # throughput down by more than 10% in the whole interval
        (0.85, 0.95, True, "inconclusive"),  # perhaps down by more than 10%
        (0.95, 1.05, True, "ok"),
        (1.05, 1.15, True, "ok"),  # up, perhaps by more than 10%, but in no case down by more
        (0.85, 1.02, False, "ok"),  # latency likewise
        (1.20, 1.30, True, "improved"),
        (1.15, 1.30, False, "regressed"),  # latency up by more than 10%
        (0.50, 0.85, False, "improved"),
        (0.0, math.inf, True, "inconclusive"),
    ],
)
def test_a_verdict_needs_the_whole_interval_beyond_or_within_the_tolerance(low, high, higher_is_better, expected):
    assert ab.verdict(low, high, 0.10, higher_is_better) == expected


def fake_measurer(figures_of):
    """A measurer returning `figures_of(side, call)` for the one architecture `a`, counting calls."""
    calls = {"n": 0}

    def measure(side):
        calls["n"] += 1
        figures = {"params": 10, "flops_per_sample": 20, **figures_of(side, calls["n"])}
        return {"a": {"architecture": "a", "status": "ok", "bench_file": "/x/bench/probe.py", **figures}}

    return probes.one_after_the_other(measure)


SIDES = (
    ab.Side(label="base", rev="b", commit="1" * 40, path=Path("/base")),
    ab.Side(label="candidate", rev="c", commit=None, path=Path("/cand")),
)


def test_rounds_alternate_a_b_b_a_and_a_settled_result_stops_at_the_minimum():
    result = ab.run(SIDES, fake_measurer(lambda side, n: {"train_throughput": 100.0 + n % 3}), 0.10, ab.Rounds(budget_s=1e9))
    assert result.rounds == ab.MIN_ROUNDS
    assert result.order[:8] == ["base", "candidate", "candidate", "base", "base", "candidate", "candidate", "base"]
    (line,) = [line for line in result.lines if line.figure == "train_throughput"]
    assert line.verdict == "ok" and line.pairs == 6
    assert {l.figure: l.verdict for l in result.lines}["params"] == "ok" and not result.failing


def test_an_inconclusive_figure_buys_more_rounds_up_to_the_limit():
    # Candidate ratios alternate 0.8 and 1.05: the interval straddles the 10% tolerance whatever the rounds.
    candidate_calls = []

    def figures(side, n):
        if side.label == "base":
            return {"train_throughput": 100.0}
        candidate_calls.append(n)
        return {"train_throughput": 80.0 if len(candidate_calls) % 2 else 105.0}

    result = ab.run(SIDES, fake_measurer(figures), 0.10, ab.Rounds(budget_s=1e9, max_rounds=10))
    assert result.rounds == 10
    assert [l.verdict for l in result.lines if l.figure == "train_throughput"] == ["inconclusive"]
    assert not result.failing


def test_rounds_judged_on_one_figure_end_once_it_is_settled_whatever_the_others():
    candidate_calls = []

    def figures(side, n):  # training settled (10% slower); inference straddles the tolerance by turns
        if side.label == "base":
            return {"train_throughput": 100.0, "infer_throughput": 100.0}
        candidate_calls.append(n)
        return {"train_throughput": 90.0, "infer_throughput": 80.0 if len(candidate_calls) % 2 else 105.0}

    plan = ab.Rounds(budget_s=1e9, max_rounds=10, judged=("a", "train_throughput"))
    result = ab.run(SIDES, fake_measurer(figures), 0.05, plan)
    verdicts = {line.figure: line.verdict for line in result.lines}
    assert result.rounds == ab.MIN_ROUNDS and verdicts["train_throughput"] == "regressed"
    assert verdicts["infer_throughput"] == "inconclusive"
    assert ab.run(SIDES, fake_measurer(figures), 0.05, ab.Rounds(budget_s=1e9, max_rounds=10)).rounds == 10


def test_a_changed_parameter_count_and_a_failing_candidate_are_failures():
    def figures(side, n):
        return {"train_throughput": 100.0, "params": 10 if side.label == "base" else 11}

    result = ab.run(SIDES, fake_measurer(figures), 0.10, ab.Rounds(budget_s=1e9))
    assert [(l.figure, l.verdict) for l in result.failing] == [("params", "changed")]
    lines = ab.judge([{"a": {"status": "ok"}}], [{"a": {"status": "failed", "error": "RuntimeError: boom"}}], 0.1)
    assert [(l.figure, l.verdict) for l in lines] == [("status: RuntimeError: boom", "failed")]


# --- worktrees and real runs


def test_checkouts_are_detached_worktrees_of_each_revision_removed_afterwards(repo):
    with ab.checkouts(repo, "base", "slow") as (base, candidate):
        assert "DELAY = 0\n" in (base.path / "models.py").read_text()
        assert "DELAY = 0.02\n" in (candidate.path / "models.py").read_text()
        assert base.commit == git(repo, "rev-parse", "base") and base.path.parent == candidate.path.parent
        made = base.path.parent
    assert not made.exists() and "archbench-ab" not in git(repo, "worktree", "list")
    with ab.checkouts(repo, "base", None) as (_, working):
        assert working.path == repo and working.commit is None
    with pytest.raises(UserError, match="unknown revision 'nope'"), ab.checkouts(repo, "nope", None):
        pass


@pytest.mark.slow
def test_a_slowed_architecture_is_flagged_and_an_unchanged_one_is_not(repo, capsys):
    argv = ["ab", "base", "slow", "--repo", repo, "--suite", repo / "suite.toml", "--arch-module", "models.py",
            "--tolerance", "0.3", "--max-rounds", "6", "--threads", "1", "--repeats", "5"]  # two one-thread probes share 2 cores
    assert main([str(a) for a in argv]) == 1
    out = capsys.readouterr().out
    verdicts = {tuple(cell.strip() for cell in line.split("|")[1:3]): line.split("|")[-2].strip()
                for line in out.splitlines() if line.startswith("| tiny")}
    assert verdicts[("tiny-linear", "train_throughput")] == "regressed"
    assert verdicts[("tiny-linear", "latency_p50_ms")] == "regressed"
    steady = {figure: verdict for (name, figure), verdict in verdicts.items() if name == "tiny-steady"}
    assert steady and "regressed" not in steady.values() and steady["params"] == "ok"
    assert "6 rounds" in out and "base /" in out


def test_an_unknown_revision_is_a_one_line_error(tmp_path, capsys):
    git(tmp_path, "init", "-q")
    assert main(["ab", "HEAD", "--repo", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("archbench: error: unknown revision 'HEAD'") and len(err.splitlines()) == 1


def test_a_revision_without_the_measuring_entry_point_is_a_one_line_error(repo, capsys):
    (repo / "bench").mkdir()  # a harness of its own, from before bench/probe.py existed
    (repo / "bench" / "__init__.py").write_text("")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "old harness")
    assert main(["ab", "HEAD", "--repo", str(repo), "--suite", str(repo / "suite.toml")]) == 2
    err = capsys.readouterr().err
    assert "base (HEAD): this revision has no measuring entry point (bench/probe.py)" in err and len(err.splitlines()) == 1


def test_a_side_that_does_not_compile_is_named_with_its_file_and_line(repo, capsys):
    (repo / "bench").mkdir()  # the candidate's own harness, broken
    (repo / "bench" / "__init__.py").write_text("")
    (repo / "bench" / "probe.py").write_text("PROBE_VERSION = 2\ndef broken(:\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "broken harness")
    argv = ["ab", "HEAD", "HEAD", "--repo", repo, "--suite", repo / "suite.toml", "--arch-module", "models.py", "--threads", "1"]
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("archbench: error: base (HEAD): SyntaxError: ")
    assert err.rstrip().endswith("(bench/probe.py:2)")


@pytest.mark.slow
def test_sigterm_stops_ab_in_one_line_and_leaves_no_worktree_or_scratch_folder(repo, tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    command = [sys.executable, "-m", "bench", "ab", "base", "slow", "--repo", str(repo), "--suite", str(repo / "suite.toml"),
               "--arch-module", "models.py", "--threads", "1"]
    environment = {**os.environ, "TMPDIR": str(scratch), "PYTHONPATH": str(Path(__file__).parents[1])}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    deadline = time.monotonic() + 60
    while not any(scratch.glob("archbench-probe-*")) and time.monotonic() < deadline:  # the probes are measuring
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 143 and err.strip() == "archbench: terminated (SIGTERM)", err
    assert "archbench-ab" not in git(repo, "worktree", "list")
    assert list(scratch.iterdir()) == []


# --- taking turns

TURNS_PROBE = '''import json, sys
name, log = sys.argv[1], sys.argv[2]
for window in range(3):
    print(json.dumps({"turn": True}), flush=True)
    if not sys.stdin.readline():
        sys.exit(3)
    with open(log, "a") as f:
        f.write(f"{name}{window} ")
print(json.dumps({"architecture": "a", "status": "ok", "side": name}), flush=True)
'''


def test_two_probes_take_turns_window_by_window_first_second(tmp_path):
    script, log = tmp_path / "probe.py", tmp_path / "log"
    script.write_text(TURNS_PROBE)
    processes = [
        subprocess.Popen([sys.executable, str(script), name, str(log)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for name in "AB"
    ]
    figures = ({}, {})
    probes._give_turns(processes, figures)
    assert [p.wait() for p in processes] == [0, 0]
    assert log.read_text().split() == ["A0", "B0", "A1", "B1", "A2", "B2"]
    assert figures[0]["a"]["side"] == "A" and figures[1]["a"]["side"] == "B"


def test_timed_windows_wait_for_their_turn():
    turns = []
    timing.take_turns(lambda: turns.append(len(turns)))
    try:
        settings = timing.MeasureSettings(
            repeats=5, warmup_time=0.0, min_repeat_time=0.0, max_time=0.0, latency_time=0.0, latency_min_calls=12
        )
        timing.time_repeats(lambda: None, torch.device("cpu"), settings)
        assert len(turns) == 5  # one before the warm-up and the first repeat, one before each further repeat
        timing.time_each_call(lambda: None, torch.device("cpu"), settings)
        assert len(turns) == 5 + 5  # 12 calls rounded up to 15: as many blocks of 3 as repeats
    finally:
        timing.take_turns(None)


def test_sides_take_turns_only_when_both_probes_can(tmp_path):
    old = tmp_path / "old"
    (old / "bench").mkdir(parents=True)
    (old / "bench" / "probe.py").write_text("PROBE_VERSION = 1\n")
    assert probes.probe_version(ab.Side(label="base", rev="old", commit=None, path=old)) == 1
    plain = ab.Side(label="base", rev="plain", commit=None, path=tmp_path)
    assert probes.probe_version(plain) >= 2  # no harness of its own: this one


def test_threads_reach_the_probe_through_the_environment(tmp_path):
    request = ab.Request(suite="quick", architectures=("cnn-baseline",), threads=1)
    side = ab.Side(label="base", rev="b", commit=None, path=tmp_path)
    environment = probes._environment(side, request.threads)
    assert environment["OMP_NUM_THREADS"] == "1" and environment["PYTHONPATH"].startswith(str(tmp_path))
    done = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=environment,
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "1"


def test_peak_memory_has_a_tolerance_of_its_own():
    base = [{"a": {"status": "ok", "train_throughput": 100.0, "peak_memory_mb": 100.0}}] * 6
    candidate = [{"a": {"status": "ok", "train_throughput": 90.0 + n / 10, "peak_memory_mb": 112.0 + n}} for n in range(6)]
    verdicts = {line.figure: line.verdict for line in ab.judge(base, candidate, ab.TOLERANCE)}
    assert verdicts == {"train_throughput": "regressed", "peak_memory_mb": "ok"}  # 10% slower; 12-17% more memory
    verdicts = {line.figure: line.verdict for line in ab.judge(base, candidate, ab.TOLERANCE, memory_tolerance=0.10)}
    assert verdicts["peak_memory_mb"] == "regressed"
