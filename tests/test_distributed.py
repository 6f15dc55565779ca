"""Data-parallel runs for real: torch.distributed groups of 2 CPU processes (gloo) launched by torchrun's
launcher API, training tiny models, and ranks that die or hang mid-run."""

from datetime import datetime

import pytest
import torch
from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from bench import data
from bench.run import isolation
from bench.results import report
from bench.run.parallel import launcher
from bench.results.aggregate import aggregate
from bench.cli import main
from support.cli import run_records
from support.records import documented_keys

pytestmark = pytest.mark.slow  # torch.distributed groups of real processes

TEST_ARCHS = '''
import os
import signal
import time

from torch import nn

import architectures


@architectures.register("cnn-baseline-no-dropout", task="classify", family="test")
def no_dropout(input_shape, num_classes):
    """cnn-baseline with dropout off: nothing random in its training but the seed's weights and order."""
    return architectures.create("cnn-baseline", input_shape, num_classes, dropout=0.0)


def faulty(input_shape, num_classes, fault):
    class Faulty(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear, self.calls = nn.Linear(input_shape[0] * input_shape[1] * input_shape[2], num_classes), 0

        def forward(self, x):
            self.calls += self.training
            if self.calls == 3 and os.environ.get("RANK") == "1":
                fault()
            return self.linear(x.flatten(1))

    return Faulty()


def kill():
    with open(KILLED_AT, "w") as f:
        f.write(str(time.time()))
    os.kill(os.getpid(), signal.SIGKILL)


@architectures.register("rank1-killed", task="classify", family="test", description="SIGKILL on rank 1, step 3")
def killed(input_shape, num_classes):
    return faulty(input_shape, num_classes, kill)


@architectures.register("rank1-hangs", task="classify", family="test", description="rank 1 sleeps at step 3")
def hangs(input_shape, num_classes):
    return faulty(input_shape, num_classes, lambda: time.sleep(3600))


@architectures.register("linear", task="classify", family="test", description="one linear layer")
def linear(input_shape, num_classes):
    return faulty(input_shape, num_classes, lambda: None)
'''

# Ranks draw their own dropout masks, so cnn-baseline's accuracy may differ from the single process's by
# dropout noise; without dropout only floating-point rounding differs.
ACCURACY_TOLERANCE = 0.05
NO_DROPOUT_LOSS_TOLERANCE = 1e-4


@pytest.fixture
def dist_arch_module(tmp_path):
    path = tmp_path / "dist_arch_module.py"
    path.write_text(f"KILLED_AT = {str(tmp_path / 'killed_at')!r}\n" + TEST_ARCHS)
    return path


def records(out_dir):
    return {r["architecture"]: r for r in run_records(out_dir)}


@pytest.mark.parametrize("n, world_size", [(40, 2), (50, 3)])
def test_ranks_take_disjoint_shards_whose_batches_together_are_the_single_process_batches(n, world_size):
    x, y, batch = torch.arange(n).float(), torch.arange(n), 4
    shards = [
        list(data.batches(x, y, batch, torch.Generator().manual_seed(7), rank, world_size))
        for rank in range(world_size)
    ]
    single = list(data.batches(x, y, batch * world_size, torch.Generator().manual_seed(7)))
    used = torch.cat([yb for shard in shards for _, yb in shard])
    assert len(used) == len(set(used.tolist())) == n - n % world_size
    assert {len(shard) for shard in shards} == {data.batch_count(n, batch, world_size)}
    for k, together in enumerate(zip(*shards)):
        if len(single[k][1]) == batch * world_size:
            assert sorted(torch.cat([yb for _, yb in together]).tolist()) == sorted(single[k][1].tolist())
    with pytest.raises(ValueError, match="generator"):
        next(data.batches(x, y, batch, None, 0, world_size))


def test_two_processes_train_like_one_at_the_same_global_batch(tiny_suite, dist_arch_module, tmp_path, capsys):
    suite = tiny_suite("cnn-baseline", "cnn-baseline-no-dropout")
    common = ["run", "--suite", suite, "--arch-module", dist_arch_module, "--limit-train", "128", "--limit-test", "100"]
    assert main([str(a) for a in [*common, "--batch-size", "32", "--out", tmp_path / "one", "--quiet"]]) == 0
    capsys.readouterr()
    two = [*common, "--batch-size", "16", "--nproc", "2", "--scaling", "--out", tmp_path / "two"]
    assert main([str(a) for a in two]) == 0
    table = capsys.readouterr().out
    one, two = records(tmp_path / "one"), records(tmp_path / "two")

    exact_one, exact_two = one["cnn-baseline-no-dropout"], two["cnn-baseline-no-dropout"]
    assert exact_two["curve_test_accuracy"] == exact_one["curve_test_accuracy"]
    assert exact_two["curve_train_loss"] == pytest.approx(exact_one["curve_train_loss"], rel=NO_DROPOUT_LOSS_TOLERANCE)
    assert abs(two["cnn-baseline"]["test_accuracy"] - one["cnn-baseline"]["test_accuracy"]) <= ACCURACY_TOLERANCE

    record = two["cnn-baseline"]
    assert record["status"] == "ok" and record["world_size"] == 2 and record["backend"] == "gloo"
    assert record["batch_size"] == 16 and record["global_batch_size"] == one["cnn-baseline"]["batch_size"] == 32
    assert record["per_rank_throughput"] == pytest.approx(record["train_throughput"] / 2)
    assert record["single_process_throughput"] > 0
    assert record["scaling_efficiency"] == pytest.approx(record["train_throughput"] / (2 * record["single_process_throughput"]))
    assert 0 <= record["allreduce_wait_share"] <= 1 and record["ddp_step_ms"] > 0
    assert record["threads_per_rank"] >= 1 and record["latency_p50_ms"] > 0 and record["peak_memory_mb"] > 0
    assert set(record) - documented_keys("classify", data_parallel=True) == set()
    (row,) = [line for line in table.splitlines() if line.startswith("| ") and " cnn-baseline " in line]
    assert "| ranks" in table and "scaling eff (%)" in table and f"| {record['scaling_efficiency'] * 100:.0f} " in row


def test_a_killed_rank_fails_its_architecture_at_once_and_the_suite_goes_on(tiny_suite, dist_arch_module, tmp_path, capsys):
    suite = tiny_suite("rank1-killed", "linear")
    argv = ["run", "--suite", suite, "--arch-module", dist_arch_module, "--nproc", "2", "--dist-timeout", "60", "--out", tmp_path]
    assert main([str(a) for a in argv]) == 0
    out, err = capsys.readouterr()
    got = records(tmp_path)
    assert list(got) == ["rank1-killed", "linear"]
    killed = got["rank1-killed"]
    assert killed["status"] == "failed" and killed["failed_rank"] == 1
    assert killed["error"] == "rank 1 of 2: killed by signal SIGKILL"
    assert {e["rank"] for e in killed["rank_errors"]} == {0, 1}
    assert set(killed) - documented_keys("classify", data_parallel=True) == set()
    ended = datetime.fromisoformat(killed["started_at"]).timestamp() + killed["wall_time_s"]
    assert ended - float((tmp_path / "killed_at").read_text()) < 10  # the agent's doing, not the 60 s timeout
    assert got["linear"]["status"] == "ok" and got["linear"]["world_size"] == 2
    assert "failed: rank 1 of 2: killed by signal SIGKILL" in out and "did not finish: rank1-killed" in err


def test_a_hung_rank_fails_its_architecture_when_the_collective_times_out(tiny_suite, dist_arch_module, tmp_path):
    suite = tiny_suite("rank1-hangs")
    argv = ["run", "--suite", suite, "--arch-module", dist_arch_module, "--nproc", "2", "--dist-timeout", "5", "--out", tmp_path]
    assert main([str(a) for a in [*argv, "--quiet"]]) == 0
    hung = records(tmp_path)["rank1-hangs"]
    assert hung["status"] == "failed" and hung["failed_rank"] == 1 and hung["dist_timeout_s"] == 5
    assert hung["error"].startswith("rank 1 of 2: ended without an error of its own (stuck, or killed); rank 0: ")
    assert "Timed out waiting 5000ms" in hung["error"]
    assert 5 < hung["wall_time_s"] < 60


def test_every_rank_of_a_torchrun_group_runs_the_suite_and_rank_0_writes_the_records(tiny_suite, dist_arch_module, tmp_path):
    launch = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=2, run_id="test", rdzv_backend="c10d", rdzv_endpoint="localhost:0",
        max_restarts=0, start_method=isolation.start_method(), logs_specs=DefaultLogsSpecs(str(tmp_path / "logs")),
    )
    argv = ["run", "--suite", str(tiny_suite("linear")), "--arch-module", str(dist_arch_module), "--epochs", "1"]
    with launcher._launcher_signals():
        codes = elastic_launch(launch, main)([*argv, "--out", str(tmp_path), "--quiet"])
    assert codes == {0: 0, 1: 0}
    record = records(tmp_path)["linear"]
    assert record["status"] == "ok" and record["world_size"] == 2 and record["global_batch_size"] == 32


def test_nproc_under_torchrun_is_a_user_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "outer")
    assert main(["run", "--nproc", "2", "--out", str(tmp_path)]) == 2
    assert "--nproc starts torchrun itself" in capsys.readouterr().err


def test_the_classify_table_has_data_parallel_columns_only_when_a_record_is_data_parallel():
    single = {"task": "classify", "architecture": "a", "status": "ok", "world_size": 1, "config_id": "one"}
    headers, _ = report.table_cells(aggregate([single]))
    assert "ranks" not in headers
    parallel = {**single, "world_size": 2, "scaling_efficiency": 0.875, "config_id": "two"}
    headers, body = report.table_cells(aggregate([single, parallel]))
    assert body[1][headers.index("ranks")] == "2" and body[1][headers.index("scaling eff (%)")] == "88"
