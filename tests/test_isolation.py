"""Each (architecture, seed) in its own process: faults become records, Ctrl-C and SIGTERM stop cleanly,
and --resume finishes an interrupted run. The faulty models live in tests/support/faulty_archs.py."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.results import schema
from bench.cli import main
from support.cli import run_records

FAULTY = Path(__file__).parent / "support" / "faulty_archs.py"
PROJECT = Path(__file__).parent.parent

pytestmark = pytest.mark.slow


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_every_kind_of_fault_is_a_record_and_the_suite_goes_on(tiny_suite, tmp_path, capsys):
    faults = [
        "raises-in-builder", "raises", "sys-exit", "os-exit", "killed", "segfaults", "nan-loss", "nan-at-evaluation",
        "twenty-scores", "cnn-baseline",
    ]
    argv = ["run", "--suite", tiny_suite(*faults), "--out", tmp_path, "--quiet", "--arch-module", FAULTY, "--epochs", "1"]
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    got = {r["architecture"]: r for r in run_records(tmp_path)}
    assert list(got) == faults
    errors = {name: (r["status"], r["error"]) for name, r in got.items()}
    assert errors["raises-in-builder"] == ("failed", "ValueError: no such layer")
    assert errors["raises"] == ("failed", "RuntimeError: boom at step 3")
    assert errors["sys-exit"] == ("failed", "exited with code 3 before its record was written")
    assert errors["os-exit"] == ("failed", "exited with code 7 before its record was written (last stderr: about to os._exit)")
    assert got["os-exit"]["stderr_tail"] == ["about to os._exit"]
    assert errors["killed"] == ("failed", "killed by signal SIGKILL")
    assert errors["segfaults"][0] == "failed" and errors["segfaults"][1].startswith("killed by signal SIGSEGV")
    assert errors["segfaults"][1].startswith("killed by signal SIGSEGV (Fatal Python error: Segmentation fault; File ")
    assert any("faulty_archs.py" in line and "_segfault" in line for line in got["segfaults"]["stderr_tail"])
    assert errors["nan-loss"] == ("diverged", "non-finite training loss at step 3 (epoch 1)")
    assert errors["nan-at-evaluation"] == ("diverged", "non-finite outputs at evaluation after epoch 1 (step 6)")
    assert errors["twenty-scores"] == (
        "failed", "ValueError: the model's output has shape (2, 20); a classifier must return (batch, classes) = (2, 10)"
    )
    assert got["cnn-baseline"]["status"] == "ok" and got["cnn-baseline"]["isolation"] == "process"
    assert all(r["record_version"] == schema.RECORD_VERSION and r["architecture_source"] for r in got.values())
    assert f"did not finish: {', '.join(faults[:-1])}" in err


def test_a_hung_architecture_times_out_and_the_next_one_runs(tiny_suite, tmp_path, capsys):
    argv = ["run", "--suite", tiny_suite("hangs", "cnn-baseline"), "--out", tmp_path, "--quiet", "--arch-module", FAULTY]
    code, _, err = run(capsys, *argv, "--arch-timeout", "3", "--epochs", "1")  # cnn-baseline takes 0.3 s here
    assert code == 0, err
    hung, baseline = run_records(tmp_path)
    assert (hung["status"], hung["error"]) == ("failed", "timed out after 3 s")
    assert 3 <= hung["wall_time_s"] < 15
    assert baseline["status"] == "ok"


def test_quality_is_the_same_with_and_without_isolation(tiny_suite, tmp_path, capsys):
    suite = tiny_suite("cnn-baseline", "cnn-bn")
    for isolation in ("process", "none"):
        code, _, err = run(capsys, "run", "--suite", suite, "--out", tmp_path / isolation, "--quiet", "--isolation", isolation)
        assert code == 0, err
    isolated, inline = run_records(tmp_path / "process"), run_records(tmp_path / "none")
    for key in ("test_accuracy", "test_loss", "curve_train_loss", "train_accuracy", "config_id", "params", "flops_per_sample"):
        assert [r[key] for r in isolated] == [r[key] for r in inline], key
    assert [r["isolation"] for r in isolated + inline] == ["process", "process", "none", "none"]


def test_an_exception_that_escapes_in_process_is_an_interruption_with_its_resume_line(tiny_suite, tmp_path, capsys):
    """--isolation none: a KeyboardInterrupt raised by the model itself stops the suite as Ctrl-C would."""
    (tmp_path / "bomb.py").write_text(
        "import architectures, torch\nfrom torch import nn\n"
        "@architectures.register('ctrl-c', task='classify', family='test')\n"
        "def build(input_shape, num_classes):\n"
        "    class M(nn.Linear):\n"
        "        def forward(self, x):\n"
        "            raise KeyboardInterrupt\n"
        "    return M(1, num_classes)\n"
    )
    suite = tiny_suite("cnn-baseline", "ctrl-c")
    code, _, err = run(capsys, "run", "--suite", suite, "--out", tmp_path / "runs", "--quiet", "--isolation", "none",
                       "--arch-module", tmp_path / "bomb.py")
    assert code == 130
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert err == f"archbench: interrupted (SIGINT) after 1 of 2 runs; resume with: archbench run --resume {run_dir}\n"
    assert [r["architecture"] for r in run_records(tmp_path / "runs")] == ["cnn-baseline"]


def _start(argv, env) -> subprocess.Popen:
    """archbench in its own process group, with Ctrl-C's default meaning even where this test process was started
    with SIGINT ignored (a background job of a non-interactive shell, as CI may be): Python only turns SIGINT into
    KeyboardInterrupt when it is not ignored at start."""
    command = [sys.executable, "-m", "bench", *map(str, argv)]
    return subprocess.Popen(command, cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.parametrize("signal_number, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_suite_cleanly_and_resume_completes_it(signal_number, code, tiny_suite, tmp_path, capsys, monkeypatch):
    """Ctrl-C reaches the whole process group (SIGTERM only the parent): the running child is stopped, one line
    says how to resume, and the resumed run's records equal those of an uninterrupted run. The resumed and the
    uninterrupted run are this process's: only the interrupted one needs a process group of its own."""
    suite = tiny_suite("cnn-baseline", "pauses-once", "cnn-bn")
    env = {**os.environ, "FAULTY_PAUSE_FILE": str(tmp_path / "paused")}
    argv = ["run", "--suite", suite, "--arch-module", FAULTY, "--quiet", "--seed", "0", "1"]
    process = _start([*argv, "--out", tmp_path / "interrupted"], env)
    deadline = time.monotonic() + 60
    while not (tmp_path / "paused").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.1)
    if signal_number == signal.SIGINT:
        os.killpg(process.pid, signal_number)
    else:
        process.send_signal(signal_number)
    out, err = process.communicate(timeout=60)
    (run_dir,) = (tmp_path / "interrupted").iterdir()
    assert process.returncode == code, err
    name = signal.Signals(signal_number).name
    assert err == f"archbench: interrupted ({name}) after 2 of 6 runs; resume with: archbench run --resume {run_dir}\n"
    assert "Traceback" not in out + err
    assert [(r["architecture"], r["seed"]) for r in run_records(tmp_path / "interrupted")] == [("cnn-baseline", 0), ("cnn-baseline", 1)]
    if signal_number != signal.SIGINT:
        return

    assert main(["run", "--resume", str(run_dir), "--epochs", "3"]) == 2
    assert capsys.readouterr().err.startswith("archbench: error: --epochs cannot change a resumed run")

    monkeypatch.setenv("FAULTY_PAUSE_FILE", env["FAULTY_PAUSE_FILE"])  # it exists by now: pauses-once runs through
    resumed = run(capsys, "run", "--resume", run_dir, "--quiet")
    assert resumed[0] == 0, resumed
    uninterrupted = run(capsys, *argv, "--out", tmp_path / "whole", "--isolation", "none")  # same figures (see below)
    assert uninterrupted[0] == 0, uninterrupted
    quality = lambda rs: sorted((r["architecture"], r["seed"], r["status"], r["test_accuracy"], r["test_loss"]) for r in rs)
    assert quality(run_records(tmp_path / "interrupted")) == quality(run_records(tmp_path / "whole"))
    assert len(run_records(tmp_path / "interrupted")) == 6


def test_retry_failed_reruns_failed_pairs_and_replaces_their_records(tiny_suite, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FAULTY_PAUSE_FILE", str(tmp_path / "paused"))
    (tmp_path / "paused").write_text("")  # pauses-once never pauses: it trains like a linear model
    suite = tiny_suite("cnn-baseline", "pauses-once")
    code, _, _ = run(capsys, "run", "--suite", suite, "--out", tmp_path / "runs", "--quiet", "--arch-module", FAULTY)
    (run_dir,) = (tmp_path / "runs").iterdir()
    lines = (run_dir / "records.jsonl").read_text().splitlines()
    failed = json.loads(lines[1]) | {"status": "failed", "error": "RuntimeError: flaky"}
    (run_dir / "records.jsonl").write_text(lines[0] + "\n" + json.dumps(failed) + "\n")
    assert run(capsys, "run", "--resume", run_dir, "--quiet")[0] == 0
    assert [r["status"] for r in run_records(tmp_path / "runs")] == ["ok", "failed"]
    assert run(capsys, "run", "--resume", run_dir, "--quiet", "--retry-failed")[0] == 0
    assert [(r["architecture"], r["status"]) for r in run_records(tmp_path / "runs")] == [("cnn-baseline", "ok"), ("pauses-once", "ok")]
