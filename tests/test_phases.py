"""Where a run's time goes: each pair's `phase_s` (every second charged to one phase) and `run --profile`."""

import os
import time

import pytest

import bench
from bench.cli import main
from bench.measure import phases
from support.cli import run_records


def test_a_phase_inside_another_is_charged_to_the_inner_one_and_the_phases_add_up_to_the_block():
    started = time.perf_counter()
    with phases.recording() as clock:
        time.sleep(0.02)
        with phases.phase("train"):
            time.sleep(0.03)
            with phases.phase("windows"):
                time.sleep(0.04)
        with phases.phase("fid_reference", absorb=True):
            with phases.phase("train"):  # the reference classifier's own training
                time.sleep(0.05)
    elapsed = time.perf_counter() - started
    totals = clock.totals()
    assert list(totals) == ["windows", "train", "fid_reference", "other"]  # PHASES' order
    assert totals["windows"] >= 0.04 and 0.03 <= totals["train"] < 0.07 and totals["fid_reference"] >= 0.05
    assert totals["other"] >= 0.02 and sum(totals.values()) == pytest.approx(elapsed, abs=0.005)


def test_phases_outside_a_recording_are_not_counted_anywhere():
    with phases.phase("train"):
        pass
    with phases.recording() as clock:
        pass
    assert list(clock.totals()) == ["other"]


def test_each_record_says_where_its_time_went_and_the_phases_add_up_to_the_pair(tiny_suite, tmp_path, capsys):
    suite = tiny_suite("cnn-baseline", "vae-mlp", extra="[vae]\nepochs = 1\nbatch_size = 16\n")
    assert main(["run", "--suite", str(suite), "--out", str(tmp_path), "--quiet"]) == 0
    capsys.readouterr()
    for record in run_records(tmp_path):
        spent = record["phase_s"]
        assert {"startup", "build", "flops", "warmup", "windows", "memory", "train", "evaluate", "latency", "other"} <= set(spent)
        assert all(seconds >= 0 for seconds in spent.values()) and spent["startup"] > 0  # a process of its own
        assert sum(spent.values()) == pytest.approx(record["pair_wall_s"], rel=0.05), spent
    vae = run_records(tmp_path)[1]
    assert {"fid_reference", "fid_features", "fid_calibration"} <= set(vae["phase_s"])


def test_profile_prints_the_phases_summed_over_the_pairs_and_the_time_around_them(tiny_suite, tmp_path, capsys):
    argv = ["run", "--suite", str(tiny_suite("cnn-baseline", "cnn-bn")), "--out", str(tmp_path), "--isolation", "none"]
    assert main([*argv, "--profile"]) == 0
    out = capsys.readouterr().out
    assert "; started in " in out.splitlines()[0]
    table = out[out.index("where the time went (2 pairs"):].splitlines()[1:]
    rows = {line.rsplit(None, 3)[0].strip(): float(line.split()[-3]) for line in table if line.endswith("%")}
    assert {"before the first pair (imports, data)", "train", "windows", "between and after the pairs (records, report, plots)"} <= set(rows)
    total = float(table[-1].split()[-2])
    assert table[-1].startswith("total") and sum(rows.values()) == pytest.approx(total, abs=0.1 * len(rows))
    records = run_records(tmp_path)
    assert rows["train"] == pytest.approx(sum(r["phase_s"]["train"] for r in records), abs=0.05)


@pytest.fixture
def aged(monkeypatch):
    """Fakes the process's clocks: `aged(inside, proc)` makes `bench` imported `inside` seconds ago and /proc's
    start time `proc` seconds ago on the boot clock (None: no /proc)."""

    def fake(inside: float, proc: float | None) -> None:
        monkeypatch.setattr(bench, "IMPORTED_AT", time.monotonic() - inside)
        monkeypatch.setattr(phases, "_boot_clock_s", lambda: 1000.0)
        monkeypatch.setattr(phases, "_proc_start_s", lambda: None if proc is None else 1000.0 - proc)

    return fake


def test_a_proc_start_time_far_before_the_first_import_is_not_believed(aged):
    aged(6.0, 129.1)  # a freshly booted VM: the run folder made 6 s in, /proc saying 129 s
    assert 6.0 <= phases.process_age_s() < 6.0 + 0.5


def test_a_proc_start_time_a_plausible_interpreter_start_before_the_first_import_is_used(aged):
    aged(6.0, 6.8)
    assert phases.process_age_s() == pytest.approx(6.8)
    aged(6.0, 6.0 + phases.INTERPRETER_START_S + 0.5)
    assert phases.process_age_s() < 6.5


def test_without_proc_or_with_a_proc_age_below_the_in_process_one_the_age_is_the_in_process_one(aged, monkeypatch):
    aged(3.0, None)
    assert phases.process_age_s() == pytest.approx(3.0, abs=0.5)
    aged(3.0, 1.0)
    assert phases.process_age_s() == pytest.approx(3.0, abs=0.5)
    aged(3.0, 5.0)
    monkeypatch.setattr(phases, "_boot_clock_s", lambda: None)  # no CLOCK_BOOTTIME (not Linux)
    assert phases.process_age_s() == pytest.approx(3.0, abs=0.5)


def test_the_age_is_never_negative(aged):
    aged(-2.0, -5.0)  # a clock read after the question
    assert phases.process_age_s() == 0.0
    aged(0.0, None)
    assert 0.0 <= phases.process_age_s() < 0.5


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_counts_its_age_from_the_fork(aged):
    aged(100.0, None)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, repr(phases.process_age_s()).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    assert 0.0 <= float(os.read(read, 64)) < 5.0


def test_the_real_clocks_keep_the_promise():
    inside = time.monotonic() - bench.IMPORTED_AT
    assert inside <= phases.process_age_s() <= inside + phases.INTERPRETER_START_S + 1.0
