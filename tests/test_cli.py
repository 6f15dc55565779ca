"""The command line end to end: real runs of tiny suites, real files, and every bad input's one-line error."""

import dataclasses
import json
import subprocess
import sys

import pytest

from bench import configs
from bench.data import datasets
from bench.cli import main
from support.cli import run_cli, run_records

BOMB = """
import torch
from torch import nn
import architectures

@architectures.register("bomb", task="classify", family="test", description="raises on its 3rd training step")
def build(input_shape, num_classes):
    class Bomb(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear, self.steps = nn.Linear(input_shape[0] * input_shape[1] * input_shape[2], num_classes), 0

        def forward(self, x):
            self.steps += self.training
            if self.steps == 3:
                raise {error}("boom at step 3")
            return self.linear(x.flatten(1))

    return Bomb()
"""


@pytest.mark.slow
def test_run_writes_one_record_per_architecture_and_prints_the_table(tiny_suite, tmp_path, capsys):
    suite = tiny_suite("cnn-baseline", "cnn-bn")
    code, out, err = run_cli(capsys, "run", "--suite", suite, "--out", tmp_path / "runs", "--quiet", "--isolation", "none")
    assert code == 0, err
    got = run_records(tmp_path / "runs")
    assert [(r["architecture"], r["status"]) for r in got] == [("cnn-baseline", "ok"), ("cnn-bn", "ok")]
    for key in ("python", "torch", "torchvision", "device_name", "cpu", "git_commit", "command", "run_id"):
        assert key in got[0]
    assert " cnn-baseline " in out and " cnn-bn " in out and "test acc (%)" in out
    run_dir = tmp_path / "runs" / got[0]["run_id"]
    assert (run_dir / "records.csv").is_file() and (run_dir / "REPORT.md").is_file()
    assert f"report: {run_dir / 'REPORT.md'}" in out


def test_flags_override_the_suite(tiny_suite, tmp_path, capsys):
    suite = tiny_suite("cnn-*")
    argv = ["run", "--suite", suite, "--out", tmp_path, "--quiet", "--isolation", "none", "--arch", "cnn-bn", "--epochs", "1"]
    code, _, err = run_cli(capsys, *argv, "--batch-size", "8", "--seed", "3", "4", "--limit-train", "40")
    assert code == 0, err
    got = run_records(tmp_path)
    assert [(r["architecture"], r["seed"]) for r in got] == [("cnn-bn", 3), ("cnn-bn", 4)]
    assert {(r["epochs"], r["batch_size"], r["train_samples"]) for r in got} == {(1, 8, 40)}


def test_a_per_architecture_table_changes_that_architecture_only_and_a_resume_keeps_it(tiny_suite, tmp_path, capsys):
    suite = tiny_suite("cnn-baseline", "cnn-bn", extra='[classify.cnn-bn]\nepochs = 1\n[classify."cnn-b*"]\nlr = 0.002\n')
    config = configs.load(str(suite), out=tmp_path)
    assert (config.settings_of("cnn-baseline").epochs, config.settings_of("cnn-baseline").lr) == (2, 0.002)
    assert (config.settings_of("cnn-bn").epochs, config.settings_of("cnn-bn").lr) == (1, 0.002)
    assert configs.from_dict(dataclasses.asdict(config)).settings_of("cnn-bn") == config.settings_of("cnn-bn")
    assert configs.load(str(suite), out=tmp_path, epochs=3).settings_of("cnn-bn").epochs == 3  # the flag wins

    argv = ["run", "--suite", suite, "--out", tmp_path / "runs", "--quiet", "--isolation", "none", "--limit-train", "32"]
    code, _, err = run_cli(capsys, *argv, "--arch", "cnn-bn")
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    info = json.loads((run_dir / "run.json").read_text())
    info["config"]["architectures"] = ["cnn-baseline", "cnn-bn"]  # the resume adds the pair the first run left out
    (run_dir / "run.json").write_text(json.dumps(info))
    code, _, err = run_cli(capsys, "run", "--resume", run_dir, "--quiet", "--isolation", "none")
    assert code == 0, err
    got = {r["architecture"]: r for r in run_records(tmp_path / "runs")}
    assert {name: (r["epochs"], r["lr"], r["steps_trained"]) for name, r in got.items()} == {
        "cnn-bn": (1, 0.002, 2), "cnn-baseline": (2, 0.002, 4),
    }


@pytest.mark.slow
def test_a_model_that_raises_mid_training_leaves_a_failed_record_and_the_suite_goes_on(tiny_suite, tmp_path, capsys):
    (tmp_path / "bomb.py").write_text(BOMB.format(error="RuntimeError"))
    suite = tiny_suite("bomb", "cnn-baseline")
    argv = ["run", "--suite", suite, "--out", tmp_path / "runs", "--quiet", "--isolation", "none", "--arch-module", tmp_path / "bomb.py"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0
    bomb, baseline = run_records(tmp_path / "runs")
    assert bomb["status"] == "failed" and bomb["error"] == "RuntimeError: boom at step 3"
    assert "Traceback" in bomb["traceback"]
    assert baseline["status"] == "ok" and baseline["test_accuracy"] is not None
    assert "failed: RuntimeError: boom at step 3" in out and "did not finish: bomb" in err
    assert run_cli(capsys, *argv, "--strict")[0] == 1


def test_an_outside_module_registers_models_that_list_and_run(tmp_path, tiny_suite, capsys, monkeypatch):
    (tmp_path / "my_nets.py").write_text(
        "from torch import nn\nimport architectures\n"
        "@architectures.register('my-mlp', task='classify', family='mlp', description='two-layer perceptron')\n"
        "def build(input_shape, num_classes, hidden=32):\n"
        "    c, h, w = input_shape\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))\n"
    )
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(capsys, "list", "--arch-module", "my_nets")
    assert code == 0 and "my-mlp" in out and "two-layer perceptron" in out and "cnn-baseline" in out
    code, _, err = run_cli(capsys, "run", "--suite", tiny_suite("my-mlp"), "--out", "runs", "--quiet", "--isolation", "none", "--arch-module", "my_nets")
    assert code == 0, err
    assert run_records(tmp_path / "runs")[0]["status"] == "ok"
    sys.modules.pop("my_nets", None)


def test_list_filters_by_pattern_and_task(capsys):
    code, out, _ = run_cli(capsys, "list", "cnn-*")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["cnn-baseline", "cnn-bn", "cnn-deep", "cnn-wide"]
    code, out, _ = run_cli(capsys, "list", "--task", "classify")
    assert "resnet18" in out


def test_report_prints_the_newest_run_and_writes_a_csv(tiny_suite, tmp_path, capsys):
    assert run_cli(capsys, "run", "--suite", tiny_suite("cnn-baseline"), "--out", tmp_path, "--quiet", "--isolation", "none")[0] == 0
    code, out, _ = run_cli(capsys, "report", "--out", tmp_path)
    assert code == 0 and " cnn-baseline " in out
    (csv,) = tmp_path.glob("*/records.csv")
    assert csv.read_text().startswith("record_version,record_id,run_id,")


BAD_INPUTS = [
    (["run", "--arch", "nope"], "unknown architecture 'nope' (valid: cnn-baseline, cnn-bn"),
    (["run", "--dataset", "imagenet"], "unknown dataset 'imagenet' (valid: synthetic, fashion-mnist, mnist, cifar10, or folder:PATH"),
    (["run", "--suite", "nope"], "unknown suite 'nope' (valid: cifar10, folder, imagenet, quick, speed, standard"),
    (["run", "--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
    (["run", "--batch-size", "-4"], "argument --batch-size: must be at least 1, got -4"),
    (["run", "--epochs", "many"], "argument --epochs: expected a whole number, got 'many'"),
    (["list", "--arch-module", "no_such_module_xyz"], "--arch-module no_such_module_xyz: ModuleNotFoundError"),
    (["report", "no-such-run"], "no run records at no-such-run"),
]


@pytest.mark.parametrize("argv, message", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_gives_one_line_and_exit_2(argv, message, capsys):
    with_out = argv + (["--out", "/nonexistent-archbench"] if argv[0] == "report" else [])
    try:
        code = main(with_out)
    except SystemExit as exit:
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_missing_data_files_say_where_and_how(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", tmp_path / "none")
    code, _, err = run_cli(capsys, "run", "--dataset", "fashion-mnist", "--data-root", tmp_path, "--out", tmp_path)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{tmp_path}/FashionMNIST/raw" in err and "dataset-fashion-mnist" in err and "--download" in err


@pytest.mark.parametrize(
    "text, message",
    [
        ('dataset = "synthetic"\nepochs = = 1\n', "invalid TOML: .*line 2, column 10"),
        ('dataset = "synthetic"\nfoo = 1\n', "unknown key 'foo'"),
        ('[classify]\nepochs = 0\n', r"\[classify\]: epochs must be at least 1, got 0"),
        ('[classify]\nlr = "fast"\n', r"\[classify\] lr must be a finite number, got 'fast'"),
        ('[classify]\noptimizer = "lion"\n', "unknown optimizer 'lion' \\(valid: sgd, adam, adamw\\)"),
        ('[measure]\nrepeats = 2\n', "repeats must be at least 5"),
        ('architectures = "cnn-*"\n', "architectures must be a list"),
        ('[classify.resnt18]\nepochs = 2\n', r"\[classify.resnt18\]: 'resnt18' matches no classify architecture \(valid: .*resnet18"),
        ('[classify.resnet18]\nepoch = 2\n', r"\[classify.resnet18\]: unknown key 'epoch'"),
        ('[vae."vae-*"]\nlr = 0\n', r"\[vae.vae-\*\]: lr must be positive, got 0"),
    ],
)
def test_malformed_suites_give_one_line_naming_the_file(text, message, tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    code, _, err = run_cli(capsys, "run", "--suite", path, "--out", tmp_path)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert str(path) in err
    assert pytest.importorskip("re").search(message, err), err


@pytest.mark.slow
def test_python_dash_m_bench_is_the_same_command():
    result = subprocess.run([sys.executable, "-m", "bench", "list", "resnet*"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("resnet18")
