"""The record as a contract: every key a run writes is documented in bench/results/schema.py, with version and provenance;
the versions are data (bench.results.records), and records of different versions are never compared."""

import json

import pytest
import torch

from bench.run import environment
from bench.results import schema
from bench.cli import main
from bench.results.records import REQUIRED_KEYS, VERSIONS, comparable, version
from support.records import documented_keys
from support.settings import FLAT_NET


def test_every_key_of_a_classify_record_is_documented_and_it_says_where_its_model_came_from(tiny_suite, tmp_path):
    (tmp_path / "nets.py").write_text(FLAT_NET)
    argv = ["run", "--suite", tiny_suite("flat", "cnn-baseline"), "--out", tmp_path / "runs", "--quiet",
            "--isolation", "none", "--arch-module", tmp_path / "nets.py"]
    assert main([str(a) for a in argv]) == 0
    (path,) = (tmp_path / "runs").glob("*/records.jsonl")
    flat, baseline = [json.loads(line) for line in path.read_text().splitlines()]
    assert flat["status"] == baseline["status"] == "ok"
    for written in (flat, baseline):
        assert set(written) - documented_keys("classify") == set()
        assert written["record_version"] == schema.RECORD_VERSION
        assert set(REQUIRED_KEYS) <= set(written)
    times = baseline["curve_train_time_s"]  # 2 epochs of the tiny suite
    assert baseline["train_loop_throughput"] == pytest.approx(baseline["train_samples"] / (times[1] - times[0]))
    assert flat["architecture_source"].startswith(str(tmp_path / "nets.py") + ":")
    assert baseline["architecture_source"].endswith(tuple(f"cnn.py:{n}" for n in range(1, 200)))
    assert len(flat["architecture_source_hash"]) == 12 and flat["architecture_source_hash"] != baseline["architecture_source_hash"]


def test_config_id_depends_on_settings_not_on_seed_or_isolation():
    base = {"task": "classify", "dataset": "synthetic", "input_shape": [1, 28, 28], "epochs": 2, "seed": 0, "isolation": "none"}
    same = schema.config_id({**base, "seed": 5, "isolation": "process"}, ["epochs"])
    assert schema.config_id(base, ["epochs"]) == same
    assert schema.config_id({**base, "epochs": 3}, ["epochs"]) != same


def test_the_loop_throughput_counts_the_epochs_after_the_first():
    assert schema.loop_throughput({"train_samples": 1000, "curve_train_time_s": [3.0, 5.0, 7.0]}) == 500.0  # 2 epochs in 4 s
    assert schema.loop_throughput({"train_samples": 1000, "curve_train_time_s": [3.0]}) is None


def test_a_one_epoch_runs_loop_throughput_is_its_second_halfs():
    one_epoch = {"train_samples": 1000, "curve_train_time_s": [4.0], "loop_start_s": 2.5, "loop_start_samples": 500}
    assert schema.loop_throughput(one_epoch) == pytest.approx(500 / 1.5)
    assert schema.loop_throughput({**one_epoch, "loop_start_s": None}) is None


def test_the_cpu_is_named_with_family_model_stepping_and_its_bf16_instructions():
    cpuinfo = (
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n"
        "stepping\t: 1\nflags\t\t: fpu avx2 avx512f avx512_bf16 sha_ni\n\n"
        "processor\t: 1\ncpu family\t: 99\nmodel name\t: Other\n"
    )
    capability = torch.backends.cpu.get_cpu_capability()
    assert environment.cpu_model(cpuinfo) == f"AMD EPYC (family 25 model 17 stepping 1; {capability}, avx512_bf16)"
    assert environment.cpu_model("model name\t: Intel Xeon\nflags\t: avx2\n") == f"Intel Xeon ({capability})"


def test_torchvision_is_recorded_by_its_own_version_string_read_without_importing_it():
    torchvision = pytest.importorskip("torchvision")
    assert environment.torchvision_version() == torchvision.__version__


def test_the_record_versions_are_data_and_a_run_writes_the_newest():
    assert [v.number for v in VERSIONS] == list(range(1, len(VERSIONS) + 1))
    assert all(v.what_changed.strip() for v in VERSIONS)
    assert schema.RECORD_VERSION == VERSIONS[-1].number


def test_records_compare_only_with_records_of_the_same_versions():
    old, new, unstamped = {"record_version": 7}, {"record_version": 8}, {}
    assert comparable([new, new], [new]) and comparable([unstamped], [{"record_version": 1}])
    assert not comparable([old], [new]) and not comparable([old, new], [new])
    assert version(unstamped) == version({"record_version": True}) == version({"record_version": "8"}) == 1
