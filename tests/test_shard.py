"""Sharding a sweep: the split, the scheduler's variables, concurrent appends, --devices, and merging the shards."""

from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path

import pandas as pd
import pytest

from bench.run import devices, shards
from bench.results import aggregate, store
from bench.results import runs
from bench.results.records import read_records
from bench.errors import UserError
from support.settings import TINY_SUITE
from support.cli import run_cli


# ---- concurrent appends -------------------------------------------------------------------------------

def _append_many(run_dir: str, writer: int, count: int, replace_every: int) -> None:
    for i in range(count):
        record = {
            "architecture": f"w{writer}", "task": "classify", "dataset": "synthetic", "status": "ok",
            "config_id": "x", "seed": i, "padding": "x" * (i % 7 * 1500),  # some lines longer than PIPE_BUF
        }
        replacing = (lambda r: False) if replace_every and i % replace_every == 0 else None
        store.append_record(Path(run_dir), record, replacing=replacing)


def test_concurrent_writers_leave_every_line_a_whole_record(tmp_path):
    writers, count = 4, 150
    context = multiprocessing.get_context("fork")
    processes = [
        context.Process(target=_append_many, args=(str(tmp_path), w, count, 25 if w == 0 else 0)) for w in range(writers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    lines = (tmp_path / store.RECORDS).read_text().splitlines()
    assert len(lines) == writers * count
    got = [json.loads(line) for line in lines]
    for w in range(writers):
        assert sorted(r["seed"] for r in got if r["architecture"] == f"w{w}") == list(range(count))


# ---- the split ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["0/3", "4/3", "x", "3", "1/0", "-1/3", "a/b"])
def test_a_bad_shard_is_one_line_naming_it(text, tiny_suite, tmp_path, capsys):
    code, out, err = run_cli(capsys, "run", "--suite", tiny_suite("cnn-baseline"), "--out", tmp_path / "runs", f"--shard={text}")
    assert code == 2 and err.count("\n") == 1 and f"--shard {text!r}" in err and "from 1" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_three_shards_cover_every_pair_once_with_costs_within_2x(tmp_path):
    from bench import configs
    from bench.run import runner

    suite = tmp_path / "unequal.toml"

    names = ["cnn-baseline", "cnn-bn", "cnn-deep", "cnn-wide"]
    suite.write_text(TINY_SUITE.format(architectures=json.dumps(names)).replace("seeds = [0]", "seeds = [0, 1, 2]"))
    config = configs.load(str(suite), out=tmp_path)
    data = runner.load_data(config)
    pairs = [(name, "fp32", seed) for name in names for seed in config.seeds]
    costs = shards.estimate_costs(pairs, config, data)
    per_arch = {name: costs[(name, "fp32", 0)] for name in names}
    assert max(per_arch.values()) > 2 * min(per_arch.values())  # unequal: a split by count alone would not balance

    plans = [shards.plan(pairs, shards.Shard(k, 3), config, data) for k in (1, 2, 3)]
    assigned = [tuple(p) for plan in plans for p in plan["pairs"]]
    assert sorted(assigned) == sorted(pairs) and len(set(assigned)) == len(pairs)
    loads = [sum(costs[tuple(p)] for p in plan["pairs"]) for plan in plans]
    assert max(loads) < 2 * min(loads), loads
    assert len({plan["sweep"] for plan in plans}) == 1
    assert plans == [shards.plan(pairs, shards.Shard(k, 3), config, data) for k in (1, 2, 3)]  # deterministic


def test_the_split_is_by_cost_not_by_name():
    costs = {("a", "fp32", 0): 10.0, ("b", "fp32", 0): 1.0, ("c", "fp32", 0): 9.0, ("d", "fp32", 0): 2.0}
    first, second = shards.assign(costs, 2)
    assert (first, second) == ([("a", "fp32", 0), ("b", "fp32", 0)], [("c", "fp32", 0), ("d", "fp32", 0)])


# ---- the scheduler's variables ------------------------------------------------------------------------

def test_slurm_array_variables_give_the_shard():
    env = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert str(shards.from_environment(env)) == "3/4"
    assert str(shards.from_environment({**env, "SLURM_ARRAY_TASK_ID": "5"})) == "1/4"
    assert shards.from_environment({"SLURM_JOB_ID": "12"}) is None  # a plain job: the whole suite


def test_kubernetes_completion_index_needs_a_count():
    assert str(shards.from_environment({"JOB_COMPLETION_INDEX": "0", shards.SHARD_COUNT_ENV: "3"})) == "1/3"
    assert str(shards.from_environment({"JOB_COMPLETION_INDEX": "2"}, count=3)) == "3/3"
    with pytest.raises(UserError, match="--shard-count"):
        shards.from_environment({"JOB_COMPLETION_INDEX": "2"})
    with pytest.raises(UserError, match="outside 0..2"):
        shards.from_environment({"JOB_COMPLETION_INDEX": "3"}, count=3)


def test_a_run_takes_its_shard_from_slurm_and_records_it(tiny_suite, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    monkeypatch.delenv("SLURM_ARRAY_TASK_MIN", raising=False)
    suite = tiny_suite("cnn-baseline", "cnn-bn")
    argv = ["run", "--suite", suite, "--out", tmp_path / "runs", "--quiet", "--isolation", "none", "--epochs", "1"]
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    got = read_records(run_dir / store.RECORDS)
    assert len(got) == 1 and got[0]["shard"] == "2/2"
    info = store.read_run_info(run_dir)["shard"]
    assert info["shard"] == "2/2" and info["source"] == "SLURM_ARRAY_TASK_ID" and len(info["planned"]) == 2


# ---- merging the shards -------------------------------------------------------------------------------

def _quality(records):
    return {(row.architecture, row.mode): row.mean("test_accuracy") for row in aggregate.aggregate(records)}


@pytest.mark.slow
def test_three_shards_merge_into_the_report_of_one_run(tiny_suite, tmp_path, capsys):
    suite = tiny_suite("cnn-baseline", "cnn-bn")
    common = ["run", "--suite", suite, "--quiet", "--isolation", "none", "--epochs", "1", "--seed", "0", "1", "--limit-train", "32",
              "--batch-size", "8"]
    code, _, err = run_cli(capsys, *common, "--out", tmp_path / "whole")
    assert code == 0, err
    for k in (1, 2, 3):
        code, _, err = run_cli(capsys, *common, "--out", tmp_path / f"shard{k}", "--shard", f"{k}/3")
        assert code == 0, err
    folders = [next((tmp_path / f"shard{k}").iterdir()) for k in (1, 2, 3)]
    sharded = [r for folder in folders for r in read_records(folder / store.RECORDS)]
    assert sorted(sorted(r["shard"] for r in sharded).count(k) for k in ("1/3", "2/3", "3/3")) == [1, 1, 2]
    whole = read_records(next((tmp_path / "whole").iterdir()) / store.RECORDS)
    assert _quality(sharded) == _quality(whole) and len(_quality(whole)) == 2

    code, out, err = run_cli(capsys, "report", *folders, "--output", tmp_path / "merged")
    assert code == 0 and err == "", err
    assert " cnn-baseline " in out and " cnn-bn " in out and (tmp_path / "merged" / "REPORT.md").is_file()
    assert len(pd.read_csv(tmp_path / "merged" / "records.csv")) == 4

    code, _, err = run_cli(capsys, "report", *folders[:2], "--output", tmp_path / "partial")
    assert code == 0 and err.count("\n") == 1 and "missing from every shard" in err
    missing = [tuple(p) for p in store.read_run_info(folders[2])["shard"]["pairs"]]
    assert all(f"{name} {mode} seed {seed}" in err for name, mode, seed in missing)


def _shard_folder(path: Path, pairs, sweep="s1", planned=None) -> Path:
    path.mkdir(parents=True)
    planned = planned or pairs
    store.write_run_info(path, {"shard": {"sweep": sweep, "planned": planned, "pairs": pairs, "shard": "1/2"}})
    for name, mode, seed in pairs:
        record = {"architecture": name, "mode": mode, "seed": seed, "task": "classify", "dataset": "synthetic",
                  "status": "ok", "config_id": "c"}
        store.append_record(path, record)
    return path / store.RECORDS


def test_a_pair_in_two_shards_is_an_error_naming_both(tmp_path, capsys):
    one = _shard_folder(tmp_path / "one", [["a", "fp32", 0], ["b", "fp32", 0]])
    two = _shard_folder(tmp_path / "two", [["b", "fp32", 0]])
    code, _, err = run_cli(capsys, "report", one.parent, two.parent, "--output", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1
    assert "b fp32 seed 0" in err and str(one) in err and str(two) in err


def test_unsharded_reruns_are_still_separate_runs(tmp_path):
    one = _shard_folder(tmp_path / "one", [["a", "fp32", 0]], sweep="s1")
    two = _shard_folder(tmp_path / "two", [["a", "fp32", 0]], sweep="s2")
    plain = tmp_path / "plain"
    plain.mkdir()
    store.append_record(plain, {"architecture": "a", "seed": 0, "task": "classify", "dataset": "d", "status": "ok",
                                "config_id": "c"})
    merged = runs.merge([one, two, plain / store.RECORDS, plain / store.RECORDS])
    assert [len(run.records) for run in merged] == [1, 1, 1, 1]


# ---- --devices ----------------------------------------------------------------------------------------

def test_devices_on_a_cpu_machine_is_a_one_line_error(tiny_suite, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    for given in ("all", "cuda:0,cuda:1", "cpu,cpu"):
        code, _, err = run_cli(capsys, "run", "--suite", tiny_suite("cnn-baseline"), "--out", tmp_path, "--devices", given)
        assert code == 2 and err.count("\n") == 1 and "corrupt each other's timings" in err, err
    assert not any(tmp_path.glob("*/records.jsonl"))


def test_devices_names_gpus_of_this_machine():
    assert devices.parse("all", available=2) == ["cuda:0", "cuda:1"]
    assert devices.parse("cuda:1, cuda:0", available=2) == ["cuda:1", "cuda:0"]
    for bad, message in (("cuda:2", "not a GPU of this machine"), ("cuda:0,cuda:0", "distinct"), ("cuda:0,cpu", "cpu")):
        with pytest.raises(UserError, match=message):
            devices.parse(bad, available=2)
    assert devices.visible_device("cuda:1", {"CUDA_VISIBLE_DEVICES": "4,6"}) == "6"
    assert devices.visible_device("cuda:1", {}) == "1"


def test_devices_run_every_job_once_each_on_the_first_free_gpu():
    from bench.run import runner

    ran, running, peak = [], [0], [0]
    guard = threading.Lock()

    class Fake(runner.Strategy):
        def __init__(self, device):
            self.device_name = device

        def execute(self, job):
            with guard:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            threading.Event().wait(0.01)
            with guard:
                running[0] -= 1
            return {"job": job, "device": self.device_name}

    strategy = devices.Devices(["cuda:0", "cuda:1", "cuda:2"], worker=Fake)
    strategy.run_all(list(range(20)), lambda job, record: ran.append((job, record["device"])))
    assert sorted(job for job, _ in ran) == list(range(20))
    assert peak[0] == 3 and {device for _, device in ran} == {"cuda:0", "cuda:1", "cuda:2"}


def test_a_resumed_shard_runs_only_its_own_pairs(tiny_suite, tmp_path, capsys):
    suite = tiny_suite("cnn-baseline", "cnn-bn")
    argv = ["run", "--suite", suite, "--out", tmp_path, "--quiet", "--isolation", "none", "--epochs", "1", "--shard", "1/2"]
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    (run_dir,) = tmp_path.glob("*/records.jsonl")
    first = read_records(run_dir)
    run_dir.write_text("")  # as if interrupted before its pair ended
    code, _, err = run_cli(capsys, "run", "--resume", run_dir.parent, "--quiet")
    assert code == 0, err
    again = read_records(run_dir)
    assert [(r["architecture"], r["shard"]) for r in again] == [(r["architecture"], "1/2") for r in first]
    assert len(again) == 1
    code, _, err = run_cli(capsys, "run", "--resume", run_dir.parent, "--shard", "2/2")
    assert code == 2 and "--shard cannot change a resumed run" in err
