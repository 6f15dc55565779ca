"""Every user mistake ends with one line on stderr and exit status 2, before any architecture runs.

CASES is the table: (id, build, expected[, marks]). `build(tmp_path)` makes the bad input out of real files
in their real formats under tmp_path and returns the argv for `bench.cli.main`; `expected` is a substring
the one stderr line must hold, naming the offending thing (a path, flag or key; `{tmp}` stands for
tmp_path) and what is wrong with it. `run` rows pass `--out tmp_path/"runs"`, which must stay empty.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from support.datafiles import write_idx, write_mnist_files

from bench import data
from bench.results import store
from bench.gate import baseline
from bench.data import datasets
from bench.cli import main
from bench.results.records import read_records

AS_ROOT = pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")


@pytest.fixture(autouse=True)
def no_debian_data(tmp_path, monkeypatch):
    """Debian's Fashion-MNIST (if installed) is never read or unpacked by these tests."""
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian-here")


# ---- builders ------------------------------------------------------------------------------------------

RAW = "data/FashionMNIST/raw"


def run_argv(tmp: Path, *extra) -> list:
    return [
        "run", "--dataset", "fashion-mnist", "--data-root", tmp / "data", "--arch", "cnn-baseline", "--epochs", "1",
        "--limit-train", "20", "--limit-test", "10", "--out", tmp / "runs", *extra,
    ]


def fashion(edit=None):
    """A builder: the four Fashion-MNIST IDX files (20 train, 10 test) under tmp/data, `edit(raw)` applied."""

    def build(tmp: Path) -> list:
        raw = tmp / RAW
        write_mnist_files(raw, n_train=20, n_test=10)
        if edit:
            edit(raw)
        return run_argv(tmp)

    return build


def cut(name: str, keep: int):
    return lambda raw: (raw / name).write_bytes((raw / name).read_bytes()[:keep])


def replace_with(name: str, content: bytes):
    return lambda raw: (raw / name).write_bytes(content)


def rewrite(name: str, array):
    return lambda raw: write_idx(raw / name, np.asarray(array))


def header(type_code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, type_code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


def as_folder(name: str):
    def edit(raw):
        (raw / name).unlink()
        (raw / name).mkdir()

    return edit


def bad_gzip(name: str):
    def edit(raw):
        (raw / name).unlink()
        (raw / f"{name}.gz").write_bytes(gzip.compress(bytes(range(256)) * 10)[:40])

    return edit


def record(architecture="a", **extra) -> dict:
    return {
        "architecture": architecture, "task": "classify", "dataset": "d", "status": "ok", "config_id": "c",
        "seed": 0, "test_accuracy": 0.8, "train_throughput": 100.0, "params": 1000, **extra,
    }


def records_file(path: Path, *lines) -> Path:
    """A records file of `lines`: dicts become JSON lines, str and bytes are written as they are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded = [json.dumps(l).encode() if isinstance(l, dict) else (l.encode() if isinstance(l, str) else l) for l in lines]
    path.write_bytes(b"".join(line + b"\n" for line in encoded))
    return path


def good_run(tmp: Path, name: str = "good.jsonl") -> Path:
    return records_file(tmp / name, record("a"), record("b"))


def report_of(*lines):
    return lambda tmp: ["report", records_file(tmp / "r.jsonl", *lines), "--out", tmp / "runs"]


def compare_with(tolerances: str | bytes | None = None, *extra):
    """compare of two good runs of a and b, with a tolerances file of that content and `extra` flags."""

    def build(tmp: Path) -> list:
        argv = ["compare", good_run(tmp, "base.jsonl"), good_run(tmp, "cand.jsonl"), "--out", tmp / "runs", *extra]
        if tolerances is not None:
            path = tmp / "tol.toml"
            path.write_bytes(tolerances if isinstance(tolerances, bytes) else tolerances.encode())
            argv += ["--tolerances", path]
        return argv

    return build


def a_file(tmp: Path) -> Path:
    (tmp / "afile").write_text("not a folder\n")
    return tmp / "afile"


def read_only_folder(tmp: Path) -> Path:
    (tmp / "ro").mkdir()
    (tmp / "ro").chmod(0o500)
    return tmp / "ro"


def unreadable(path: Path) -> Path:
    path.chmod(0)
    return path


def records_folder(tmp: Path) -> list:
    (tmp / "run" / store.RECORDS).mkdir(parents=True)
    return ["report", tmp / "run", "--out", tmp / "runs"]


def suite_with(text: str | bytes, *extra):
    """A builder: `archbench run` on a suite file holding `text` (quick's synthetic data otherwise)."""

    def build(tmp: Path) -> list:
        path = tmp / "suite.toml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["run", "--suite", path, "--arch", "cnn-baseline", "--out", tmp / "runs", *extra]

    return build


def quick_run(*extra):
    return lambda tmp: ["run", "--arch", "cnn-baseline", "--limit-train", "20", "--limit-test", "10",
                        "--out", tmp / "runs", *[a(tmp) if callable(a) else a for a in extra]]


def module_file(text: str, name: str = "mine.py"):
    def build(tmp: Path) -> list:
        (tmp / name).write_text(text)
        return quick_run("--arch-module", tmp / name)(tmp)

    return build


def resumable(tmp: Path) -> Path:
    """A run folder as an interrupted run leaves it: its run.json and no records yet."""
    (tmp / "run").mkdir()
    (tmp / "run" / store.RUN_INFO).write_text(json.dumps({"config": {"suite": "quick"}, "isolation": "process"}))
    (tmp / "run" / store.RECORDS).write_text("")
    return tmp / "run"


def fid_cache_under_a_file(tmp: Path) -> list:
    path = tmp / "suite.toml"
    path.write_text(f'[fid]\ncache_dir = "{a_file(tmp) / "fid"}"\n')
    return ["run", "--suite", path, "--arch", "vae-mlp", "--out", tmp / "runs"]


# ---- the table -----------------------------------------------------------------------------------------

F = "{tmp}/" + RAW
CASES = [
    # data files (IDX) and datasets
    ("idx-empty", fashion(replace_with("train-images-idx3-ubyte", b"")), F + "/train-images-idx3-ubyte: empty file"),
    ("idx-cut-in-header", fashion(cut("train-images-idx3-ubyte", 7)),
     F + "/train-images-idx3-ubyte: cut inside its header (7 of 16 bytes)"),
    ("idx-cut-in-magic", fashion(cut("t10k-labels-idx1-ubyte", 2)),
     F + "/t10k-labels-idx1-ubyte: cut inside its header (2 of 8 bytes)"),
    ("idx-wrong-magic", fashion(replace_with("train-labels-idx1-ubyte", b"hello, world\n" * 4)),
     F + "/train-labels-idx1-ubyte: wrong magic number 0x68656c6c"),
    ("idx-gzip-under-plain-name", fashion(replace_with("t10k-images-idx3-ubyte", gzip.compress(header(8, (1, 28, 28))))),
     F + "/t10k-images-idx3-ubyte: gzip-compressed"),
    ("idx-element-type", fashion(replace_with("train-labels-idx1-ubyte", header(0x0D, (20,)) + bytes(80))),
     F + "/train-labels-idx1-ubyte: element type 0x0d, expected 0x08 (unsigned byte)"),
    ("idx-dimensions", fashion(rewrite("train-labels-idx1-ubyte", np.zeros((20, 1)))),
     F + "/train-labels-idx1-ubyte: 2 dimension(s), expected 1 for labels"),
    ("idx-cut-in-data", fashion(cut("train-images-idx3-ubyte", 16 + 20 * 784 - 100)),
     F + "/train-images-idx3-ubyte: 15596 bytes, but its header (20 x 28 x 28 images) makes 15696: cut short"),
    ("idx-bytes-too-many", fashion(lambda raw: (raw / "t10k-labels-idx1-ubyte").open("ab").write(b"\0\0\0")),
     F + "/t10k-labels-idx1-ubyte: 21 bytes, but its header (10 labels) makes 18: 3 byte(s) too many"),
    ("idx-is-a-folder", fashion(as_folder("train-labels-idx1-ubyte")), F + "/train-labels-idx1-ubyte: not a file (a folder)"),
    ("idx-broken-gz", fashion(bad_gzip("t10k-labels-idx1-ubyte")), F + "/t10k-labels-idx1-ubyte.gz: not a whole gzip file"),
    ("count-mismatch", fashion(rewrite("train-labels-idx1-ubyte", np.arange(19) % 10)),
     "the training split has 20 images (" + F + "/train-images-idx3-ubyte) but 19 labels (" + F + "/train-labels-idx1-ubyte)"),
    ("label-out-of-range", fashion(rewrite("t10k-labels-idx1-ubyte", [0, 1, 2, 3, 4, 5, 6, 7, 8, 12])),
     "fashion-mnist: test label 12 is outside [0, 10) (" + F + "/t10k-labels-idx1-ubyte)"),
    ("shape-mismatch", fashion(rewrite("t10k-images-idx3-ubyte", np.zeros((10, 20, 20)))),
     "training images are 1x28x28 (" + F + "/train-images-idx3-ubyte) but test images are 1x20x20 (" + F + "/t10k-images-idx3-ubyte)"),
    ("empty-split", fashion(lambda raw: (rewrite("t10k-images-idx3-ubyte", np.zeros((0, 28, 28)))(raw),
                                         rewrite("t10k-labels-idx1-ubyte", np.zeros(0))(raw))),
     F + "/t10k-images-idx3-ubyte: holds no images (its header says 0 x 28 x 28)"),
    ("data-root-is-a-file", lambda tmp: run_argv(tmp)[:4] + [a_file(tmp)] + run_argv(tmp)[5:],
     "--data-root {tmp}/afile: is a file, not a folder"),
    # records files given to report, compare and baseline update
    # (a bad last line is torn, set aside with a warning: tests/test_records_safety.py; one before it is an error)
    ("record-not-an-object", report_of(record(), "[1, 2]", record("b")), "{tmp}/r.jsonl:2: a record must be a JSON object, got an array"),
    ("record-a-number", report_of("42", record()), "{tmp}/r.jsonl:1: a record must be a JSON object, got a number"),
    ("records-not-utf8", report_of(record(), b"\xff\xfe{}", record("b")), "{tmp}/r.jsonl:2: not UTF-8 text (byte 0xff at column 1)"),
    ("record-lacks-keys", lambda tmp: ["compare", good_run(tmp), records_file(tmp / "cand.jsonl", {"architecture": "a", "task": "classify", "status": "ok"}), "--out", tmp / "runs"],
     "{tmp}/cand.jsonl:1: record lacks required key(s) dataset, config_id"),
    ("record-null-key", report_of({**record(), "architecture": None}), "{tmp}/r.jsonl:1: record key 'architecture' must be a string, got null"),
    ("record-corrupt-json", lambda tmp: ["baseline", "update", records_file(tmp / "r.jsonl", record(), '{"architecture": ', record("b")), "--to", tmp / "baseline"],
     "{tmp}/r.jsonl:2: corrupt record"),
    ("records-file-is-a-folder", records_folder, "{tmp}/run/records.jsonl: not a file"),
    ("records-unreadable", lambda tmp: ["report", unreadable(good_run(tmp)), "--out", tmp / "runs"],
     "{tmp}/good.jsonl: cannot read: Permission denied", AS_ROOT),
    ("no-run-records-named-once", lambda tmp: ["report", tmp / "nothere", "--out", tmp / "runs"],
     "no run records at {tmp}/nothere (looked for {tmp}/nothere/records.jsonl)"),
    # compare's flags and tolerances file
    ("accept-unknown", compare_with(None, "--accept", "nope"), "--accept nope: no architecture of that name in the runs compared (they hold: a, b)"),
    ("tolerances-unknown-architecture", compare_with("[architecture.ghost]\ntest_accuracy = 2.0\n"),
     "{tmp}/tol.toml: [architecture.ghost]: no architecture 'ghost' in the runs compared"),
    ("tolerances-unknown-figure", compare_with("[default]\nspeed = 0.1\n"), "{tmp}/tol.toml: [default]: unknown figure 'speed'"),
    ("tolerances-unknown-figure-of-architecture", compare_with("[architecture.a]\naccuracy = 0.1\n"),
     "{tmp}/tol.toml: [architecture.a]: unknown figure 'accuracy'"),
    ("tolerances-architecture-not-a-table", compare_with("architecture = 3\n"), "{tmp}/tol.toml: 'architecture' must be tables"),
    ("tolerances-negative", compare_with("[architecture.b]\nparams = -1\n"), "{tmp}/tol.toml: [architecture.b] params = -1: tolerances must be"),
    ("alpha-zero", compare_with("alpha = 0\n"), "{tmp}/tol.toml: alpha must be a number between 0 and 1 (exclusive), got 0"),
    ("alpha-above-one", compare_with("alpha = 1.5\n"), "{tmp}/tol.toml: alpha must be a number between 0 and 1 (exclusive), got 1.5"),
    ("alpha-a-string", compare_with('alpha = "0.05"\n'), "{tmp}/tol.toml: alpha must be a number between 0 and 1 (exclusive), got '0.05'"),
    ("reference-not-a-string", compare_with("reference = 3\n"), "{tmp}/tol.toml: reference must be a string"),
    ("tolerances-not-utf8", compare_with(b"alpha = 0.1 # \xe9t\xe9\n"), "{tmp}/tol.toml: not UTF-8 text (byte 0xe9"),
    ("tolerances-a-folder", lambda tmp: compare_with()(tmp) + ["--tolerances", tmp], "tolerances file {tmp} is a folder"),
    # output paths
    ("report-output-a-file", lambda tmp: report_of(record())(tmp) + ["--output", a_file(tmp)], "--output {tmp}/afile: is a file, not a folder"),
    ("report-output-under-a-file", lambda tmp: report_of(record())(tmp) + ["--output", a_file(tmp) / "sub"],
     "--output {tmp}/afile/sub: {tmp}/afile is a file, not a folder"),
    ("report-output-read-only", lambda tmp: report_of(record())(tmp) + ["--output", read_only_folder(tmp)],
     "--output {tmp}/ro: not writable (Permission denied)", AS_ROOT),
    ("baseline-to-a-file", lambda tmp: ["baseline", "update", good_run(tmp), "--to", a_file(tmp)], "--to {tmp}/afile: is a file, not a folder"),
    ("baseline-to-under-a-file", lambda tmp: ["baseline", "update", good_run(tmp), "--to", a_file(tmp) / "sub"],
     "--to {tmp}/afile/sub: {tmp}/afile is a file, not a folder"),
    ("baseline-to-read-only", lambda tmp: ["baseline", "update", good_run(tmp), "--to", read_only_folder(tmp)],
     "--to {tmp}/ro: not writable (Permission denied)", AS_ROOT),
    # suite values: type, length and range, checked when the suite is loaded
    ("suite-betas-not-numbers", suite_with('[classify]\nbetas = ["x", 2]\n'), "[classify] betas[0] must be a finite number, got 'x'"),
    ("suite-betas-one-value", suite_with("[classify]\nbetas = [0.9]\n"), "[classify] betas must be a list of 2 finite numbers, got [0.9]"),
    ("suite-betas-out-of-range", suite_with("[classify]\nbetas = [0.9, 1.5]\n"), "betas must both be in [0, 1), got [0.9, 1.5]"),
    ("suite-lr-infinite", suite_with("[classify]\nlr = inf\n"), "[classify] lr must be a finite number, got inf"),
    ("suite-momentum-one", suite_with('[classify]\noptimizer = "sgd"\nmomentum = 1.0\n'), "momentum must be in [0, 1), got 1.0"),
    ("suite-weight-decay-negative", suite_with("[vae]\nweight_decay = -0.1\n"), "[vae]: weight_decay must not be negative"),
    ("suite-seed-not-a-number", suite_with('seeds = ["zero"]\n'), "seeds must be a non-empty list of whole numbers, got ['zero']"),
    ("suite-seeds-repeated", suite_with("seeds = [1, 1]\n"), "seeds must be distinct, got [1, 1]"),
    ("suite-limit-a-float", suite_with("limit_train = 2.5\n"), "limit_train must be a whole number, got 2.5"),
    ("suite-arch-timeout-text", suite_with('arch_timeout = "ten"\n'), "arch_timeout must be a number of seconds, got 'ten'"),
    ("suite-measure-repeats", suite_with("[measure]\nrepeats = 2\n"), "[measure]: repeats must be at least 5, got 2"),
    ("suite-window-every-zero", suite_with("[measure]\nwindow_every = 0\n"), "[measure]: window_every must be positive, got 0"),
    ("suite-gan-ema-one", suite_with("[gan]\nema = 1.0\n"), "[gan]: ema must be in [0, 1), got 1.0"),
    ("suite-fid-seed", suite_with("[fid]\nseed = -1\n"), "[fid]: seed must be a whole number from 0 to 2**63 - 1, got -1"),
    ("suite-not-utf8", suite_with(b'description = "\xff\xfe"\n'), "{tmp}/suite.toml: not UTF-8 text (byte 0xff at offset 15); save it as UTF-8"),
    ("seed-flag-too-large", quick_run("--seed", "99999999999999999999999"),
     "seed 99999999999999999999999 is out of range: seeds are whole numbers from 0 to 2**63 - 1"),
    ("arch-timeout-flag-zero", quick_run("--arch-timeout", "0"), "argument --arch-timeout: must be positive, got 0"),
    # modes
    ("mode-unknown-precision", quick_run("--modes", "fp32,bf17"), "mode 'bf17': unknown precision 'bf17' (valid: fp32, bf16, fp16, auto)"),
    ("mode-unknown-part", quick_run("--modes", "bf16+nhwc"), "mode 'bf16+nhwc': unexpected part 'nhwc'"),
    ("modes-repeated", quick_run("--modes", "fp32,bf16,fp32"), "modes must be distinct, got ['fp32', 'bf16', 'fp32']"),
    ("modes-with-mode-flags", quick_run("--modes", "fp32", "--precision", "bf16"),
     "--modes lists every mode; it does not go with --precision, --channels-last or --compile"),
    ("compile-unknown-mode", quick_run("--compile", "fastest"), "argument --compile: invalid choice: 'fastest'"),
    ("compile-unknown-backend", quick_run("--compile", "--compile-backend", "nope"), "unknown compile_backend 'nope' (valid: "),
    ("suite-modes-not-a-list", suite_with('modes = "bf16"\n'), "modes must be a list of modes"),
    ("suite-modes-empty", suite_with("modes = []\n"), "modes must be a non-empty list of modes"),
    ("compile-data-parallel", quick_run("--compile", "--nproc", "2"),
     "compiling modes are not supported in data-parallel runs (--nproc, torchrun); drop compile"),
    ("budget-of-one-architecture-data-parallel", suite_with("[classify.cnn-baseline]\nbudget_s = 5\n", "--nproc", "2"),
     "training budgets are not supported in data-parallel runs (--nproc, torchrun): cnn-baseline has one; use epochs"),
    # where the run writes: checked before any architecture runs
    ("out-a-file", lambda tmp: quick_run()(tmp)[:-2] + ["--out", a_file(tmp)], "--out {tmp}/afile: is a file, not a folder"),
    ("out-under-a-file", lambda tmp: quick_run()(tmp)[:-2] + ["--out", a_file(tmp) / "runs"],
     "--out {tmp}/afile/runs: {tmp}/afile is a file, not a folder"),
    ("fid-cache-under-a-file", fid_cache_under_a_file, "FID cache folder ([fid] cache_dir or $ARCHBENCH_FID_CACHE) {tmp}/afile/fid"),
    # plugin modules
    ("arch-module-exits-on-import", module_file("import sys\nsys.exit(4)\n"), "--arch-module {tmp}/mine.py: exited on import (sys.exit(4))"),
    ("arch-module-raises-on-import", module_file("import nonexistent_package_xyz\n"),
     "--arch-module {tmp}/mine.py: ModuleNotFoundError: No module named 'nonexistent_package_xyz'"),
    ("arch-module-missing", lambda tmp: quick_run("--arch-module", tmp / "nothere.py")(tmp), "--arch-module {tmp}/nothere.py: FileNotFoundError"),
    # isolation and resume
    ("resume-with-a-new-setting", lambda tmp: ["run", "--resume", resumable(tmp), "--epochs", "3"],
     "--epochs cannot change a resumed run; --resume takes the configuration from {tmp}/run/run.json"),
    ("resume-with-new-seeds", lambda tmp: ["run", "--resume", resumable(tmp), "--seed", "3"],
     "--seed cannot change a resumed run"),
    ("resume-with-a-folder-setting", lambda tmp: ["run", "--resume", resumable(tmp), "--no-augment"],
     "--no-augment cannot change a resumed run"),
    ("resume-not-a-run-folder", lambda tmp: ["run", "--resume", tmp / "nothere"], "--resume {tmp}/nothere: not a run folder"),
    ("retry-failed-without-resume", quick_run("--retry-failed"), "--retry-failed goes with --resume RUN_DIR"),
    ("arch-timeout-in-process", quick_run("--isolation", "none", "--arch-timeout", "5"),
     "arch_timeout (--arch-timeout or the suite's) needs each architecture in its own process; drop --isolation none"),
    # data-parallel runs
    ("nproc-zero", quick_run("--nproc", "0"), "argument --nproc: must be at least 1, got 0"),
    ("nproc-nccl-on-cpu", quick_run("--nproc", "2", "--backend", "nccl", "--device", "cpu"), "--backend nccl needs CUDA devices"),
    ("scaling-without-nproc", quick_run("--scaling"), "--scaling applies to data-parallel runs: add --nproc N, or launch with torchrun"),
    ("nproc-more-than-samples", lambda tmp: quick_run("--nproc", "2")(tmp)[:3] + ["--limit-train", "1", "--out", tmp / "runs", "--nproc", "2"],
     "1 training sample(s) cannot be shared among 2 processes"),
    ("nproc-unknown-architecture", lambda tmp: ["run", "--arch", "nope", "--nproc", "2", "--out", tmp / "runs"], "unknown architecture 'nope'"),
    ("nproc-with-isolation", quick_run("--nproc", "2", "--isolation", "none"), "--isolation does not apply to data-parallel runs"),
]


def _out_folder(argv: list[str]) -> Path | None:
    return Path(argv[argv.index("--out") + 1]) if "--out" in argv else None


@pytest.mark.parametrize(
    "build, expected",
    [pytest.param(build, expected, id=id_, marks=marks) for id_, build, expected, *marks in CASES],
)
def test_a_user_mistake_ends_with_one_line_and_exit_2(build, expected, tmp_path, capsys):
    argv = [str(a) for a in build(tmp_path)]
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert code == 2, err
    assert err.endswith("\n") and len(err.splitlines()) == 1, err
    assert err.startswith(("archbench: error: ", "archbench run: error: ")), err  # ours, or argparse's
    assert expected.format(tmp=tmp_path) in err, err
    if argv[0] == "run" and "--resume" not in argv:
        out_dir = _out_folder(argv)
        assert out_dir is not None, "run rows pass --out tmp_path/'runs'"
        assert not out_dir.is_dir() or not any(out_dir.iterdir()), "a run folder was left behind"


def test_case_ids_are_unique():
    ids = [case[0] for case in CASES]
    assert len(ids) == len(set(ids))


# ---- cases that need more than files -------------------------------------------------------------------

def test_a_failed_download_is_one_line(tmp_path, capsys, monkeypatch):
    import torchvision.datasets as tv

    def fail(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://a/, got:\nno network\n"
                           "Tried https://b/, got:\nno network\n")

    monkeypatch.setattr(tv.MNIST, "download", fail)
    argv = ["run", "--dataset", "mnist", "--data-root", tmp_path / "data", "--download", "--arch", "cnn-baseline",
            "--out", tmp_path / "runs"]
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"mnist: downloading into {tmp_path / 'data'} failed: Error downloading train-images-idx3-ubyte.gz: Tried" in err
    assert not (tmp_path / "runs").exists()


def test_permission_denied_is_one_line_also_where_root_ignores_permission_bits(tmp_path, capsys, monkeypatch):
    """The AS_ROOT rows above, with the denial simulated: writing a probe file, reading a records file."""
    import tempfile

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    run = good_run(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(tempfile, "NamedTemporaryFile", deny)
        for argv, message in (
            (["report", run, "--output", tmp_path / "ro"], f"--output {tmp_path / 'ro'}: not writable (Permission denied)"),
            (["baseline", "update", run, "--to", tmp_path / "b"], f"--to {tmp_path / 'b'}: not writable (Permission denied)"),
        ):
            assert main([str(a) for a in argv]) == 2
            err = capsys.readouterr().err
            assert len(err.splitlines()) == 1 and message in err, err
    monkeypatch.setattr(Path, "read_bytes", deny)
    assert main(["report", str(run), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and f"{run}: cannot read: Permission denied" in err, err


def test_gzipped_idx_files_in_the_raw_folder_are_unpacked_and_read(tmp_path):
    write_mnist_files(tmp_path / "MNIST" / "raw", n_train=20, n_test=10, compress=True)
    d = data.load("mnist", root=tmp_path)
    assert len(d.train_x) == 20 and len(d.test_x) == 10 and d.input_shape == (1, 28, 28)


# ---- baseline update is all or nothing -----------------------------------------------------------------

def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def old_baseline(tmp_path):
    """A baseline made by `baseline update` from one run (with its run.json), and a second run to replace it."""
    first = records_file(tmp_path / "first" / store.RECORDS, record("a", run_id="first"), record("b", run_id="first"))
    (first.parent / store.RUN_INFO).write_text('{"config": {"suite": "old"}}\n')
    folder = tmp_path / "results" / "baseline"
    assert main(["baseline", "update", str(first.parent), "--to", str(folder)]) == 0
    (folder / "NOTES.md").write_text("why this baseline\n")
    second = records_file(tmp_path / "second" / store.RECORDS, record("a", run_id="second"))
    (second.parent / store.RUN_INFO).write_text('{"config": {"suite": "new"}}\n')
    return folder, second, _snapshot(folder)


def _fail_on_call(number: int, real, error: Exception):
    calls = []

    def fake(*args, **kwargs):
        calls.append(args)
        if len(calls) == number:
            raise error
        return real(*args, **kwargs)

    return fake


@pytest.mark.parametrize(
    "target, number, error",
    [
        ("json.dumps", 2, RuntimeError("disk on fire")),  # midway through the records
        ("shutil.copyfile", 1, OSError(28, "No space left on device")),  # copying run.json
        ("os.rename", 2, OSError(5, "Input/output error")),  # the swap itself: new -> target
    ],
    ids=["records", "run-info", "swap"],
)
def test_a_failed_baseline_update_leaves_the_old_baseline_whole(old_baseline, monkeypatch, capsys, target, number, error):
    folder, second, before = old_baseline
    module, name = target.split(".")
    owner = {"json": json, "shutil": shutil, "os": os}[module]
    monkeypatch.setattr(owner, name, _fail_on_call(number, getattr(owner, name), error))
    if isinstance(error, OSError):
        assert main(["baseline", "update", str(second.parent), "--to", str(folder)]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and f"--to {folder}: cannot write the baseline, left unchanged" in err
    else:
        with pytest.raises(RuntimeError, match="disk on fire"):
            baseline.update([second], folder)
    monkeypatch.undo()
    assert _snapshot(folder) == before
    assert sorted(p.name for p in folder.parent.iterdir()) == ["baseline"]  # no temporary folder left beside it


def test_a_baseline_update_replaces_the_managed_files_and_keeps_the_others(old_baseline):
    folder, second, before = old_baseline
    assert main(["baseline", "update", str(second.parent), "--to", str(folder)]) == 0
    after = _snapshot(folder)
    assert after["NOTES.md"] == before["NOTES.md"]
    assert [r["run_id"] for r in read_records(folder / store.RECORDS)] == ["second"]
    assert json.loads(after[store.RUN_INFO]) == {"config": {"suite": "new"}}
    assert json.loads(after[baseline.SOURCE])["run_ids"] == ["second"]
    assert sorted(p.name for p in folder.parent.iterdir()) == ["baseline"]
