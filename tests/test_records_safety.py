"""Records are never torn, lost or counted twice: a full disk, a torn or unterminated last line, two writers of
one run folder, records given twice, an interruption before the first record. Each fault is made for real on
tiny runs, and each test checks what a user needs after it: one line on stderr, the documented exit code, no
finished record lost or counted twice, and a `report` and a `--resume` that work."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from bench import scratch
from bench.results import store
from bench.results.records import RECORDS, read_records
from bench.cli import main
from bench.run import runner
from support.cli import run_cli
from support.settings import FLAT_NET, TINY_SUITE

TINY = ("--quiet", "--isolation", "none", "--limit-train", "32", "--epochs", "1")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished run of cnn-baseline and cnn-bn, made once for the module."""
    folder = tmp_path_factory.mktemp("finished")
    (folder / "tiny.toml").write_text(TINY_SUITE.format(architectures='["cnn-baseline", "cnn-bn"]'))
    assert main([str(a) for a in ("run", "--suite", folder / "tiny.toml", "--out", folder / "runs", *TINY)]) == 0
    (run_dir,) = (folder / "runs").iterdir()
    return run_dir


@pytest.fixture
def two_pairs(finished_run, tmp_path, capsys):
    """A copy of the finished run for one test to damage; returns its folder."""
    capsys.readouterr()
    return Path(shutil.copytree(finished_run, tmp_path / "runs" / finished_run.name))


def lines(run_dir: Path) -> list[bytes]:
    return (run_dir / RECORDS).read_bytes().splitlines(keepends=True)


def pairs(run_dir: Path) -> list[str]:
    return sorted(r["architecture"] for r in read_records(run_dir / RECORDS))


def one_line(err: str) -> str:
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_a_full_disk_undoes_the_half_written_record_and_says_so_in_one_line(tiny_suite, tmp_path, capsys, monkeypatch):
    real_write, appends = os.write, []

    def disk_full_on_the_second_record(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(RECORDS):
            appends.append(data)
            if len(appends) == 2:  # half the line goes down, then the disk is full
                real_write(fd, data[: len(data) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", disk_full_on_the_second_record)
    argv = ["run", "--suite", tiny_suite("cnn-baseline", "cnn-bn"), "--out", tmp_path / "runs", *TINY]
    code, _, err = run_cli(capsys, *argv)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert code == 2
    assert one_line(err) == (
        f"archbench: error: {run_dir}: a record could not be written (No space left on device); the records before it are whole"
    )
    assert len(lines(run_dir)) == 1 and lines(run_dir)[0].endswith(b"\n") and pairs(run_dir) == ["cnn-baseline"]

    monkeypatch.setattr(os, "write", real_write)
    assert run_cli(capsys, "report", run_dir)[0] == 0
    code, _, err = run_cli(capsys, "run", "--resume", run_dir, "--quiet", "--isolation", "none")
    assert code == 0, err
    assert pairs(run_dir) == ["cnn-baseline", "cnn-bn"]


def test_a_file_that_cannot_be_written_whole_leaves_the_old_one_and_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "run.json"
    store.write_whole(path, "old\n")

    def fsync_fails(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync_fails)
    with pytest.raises(store.UserError, match=f"^cannot write {path}: No space left on device$"):
        store.write_whole(path, "new\n")
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_a_torn_last_line_is_left_out_with_a_warning_and_resume_sets_it_aside_and_reruns_its_pair(two_pairs, capsys):
    first, second = lines(two_pairs)
    (two_pairs / RECORDS).write_bytes(first + second[:100])  # a crash in the middle of the second write

    code, out, err = run_cli(capsys, "report", two_pairs)
    assert code == 0 and " cnn-baseline " in out and " cnn-bn " not in out
    assert one_line(err).startswith(f"archbench: warning: {two_pairs / RECORDS}:2: torn last line (100 bytes) left out")
    assert run_cli(capsys, "compare", two_pairs, two_pairs)[0] == 0

    code, _, err = run_cli(capsys, "run", "--resume", two_pairs, "--quiet", "--isolation", "none")
    assert code == 0, err
    assert f"{two_pairs / RECORDS}:2: torn last line (100 bytes) moved to {two_pairs / store.TORN}" in err
    assert pairs(two_pairs) == ["cnn-baseline", "cnn-bn"] and lines(two_pairs)[0] == first
    assert (two_pairs / store.TORN).read_bytes() == second[:100] + b"\n"


def test_a_last_record_without_its_newline_is_kept_and_nothing_is_appended_onto_it(two_pairs, capsys):
    first, second = lines(two_pairs)
    (two_pairs / RECORDS).write_bytes(first)
    store.append_record(two_pairs, json.loads(second))  # the one before has its newline: a plain append
    (two_pairs / RECORDS).write_bytes(first.rstrip(b"\n"))  # a power cut between the record and its newline
    assert pairs(two_pairs) == ["cnn-baseline"]
    code, _, err = run_cli(capsys, "run", "--resume", two_pairs, "--quiet", "--isolation", "none")
    assert code == 0, err
    assert pairs(two_pairs) == ["cnn-baseline", "cnn-bn"] and lines(two_pairs)[0] == first
    assert not (two_pairs / store.TORN).exists()


def test_a_bad_line_before_the_last_is_still_an_error_naming_it(two_pairs, capsys):
    first, second = lines(two_pairs)
    (two_pairs / RECORDS).write_bytes(first[:50] + b"\n" + second)
    code, _, err = run_cli(capsys, "report", two_pairs)
    assert code == 2 and f"{two_pairs / RECORDS}:1: corrupt record" in one_line(err)


def test_a_second_writer_of_a_run_folder_exits_at_once_naming_the_first(two_pairs, capsys):
    (two_pairs / RECORDS).write_bytes(lines(two_pairs)[0])
    with store.writing(two_pairs):  # a resume of this folder in progress, in this process
        code, _, err = run_cli(capsys, "run", "--resume", two_pairs, "--quiet", "--isolation", "none")
        assert code == 2
        assert one_line(err) == (
            f"archbench: error: {two_pairs}: another archbench (PID {os.getpid()}) is writing this run folder; "
            "wait for it to end or stop it"
        )
    assert pairs(two_pairs) == ["cnn-baseline"]
    assert run_cli(capsys, "run", "--resume", two_pairs, "--quiet", "--isolation", "none")[0] == 0
    assert pairs(two_pairs) == ["cnn-baseline", "cnn-bn"]


def test_records_given_twice_are_counted_once_and_two_records_of_a_pair_are_an_error(two_pairs, tmp_path, capsys):
    code, out, err = run_cli(capsys, "report", two_pairs, two_pairs, "--output", tmp_path / "twice")
    assert code == 0 and "2 record(s) from" in one_line(err) and "each counted once" in err
    assert all(" 1 " in line for line in out.splitlines() if line.startswith("| cnn-"))  # one seed each, not two
    concatenated = tmp_path / "concatenated.jsonl"
    concatenated.write_bytes((two_pairs / RECORDS).read_bytes() * 2)
    assert len(read_records(concatenated)) == 2
    assert "2 record(s) found twice in it, each read once" in capsys.readouterr().err

    code, _, err = run_cli(capsys, "compare", two_pairs, two_pairs, two_pairs)
    assert code == 2 and "hold the same records: a run given twice does not reproduce itself" in one_line(err)

    first, second = lines(two_pairs)
    again = {**json.loads(second), "record_id": "another"}
    (two_pairs / RECORDS).write_bytes(first + second + (json.dumps(again) + "\n").encode())
    code, _, err = run_cli(capsys, "report", two_pairs)
    assert code == 2
    assert f"{two_pairs / RECORDS}:2 and {two_pairs / RECORDS}:3: two records of cnn-bn seed 0 in one run" in one_line(err)


def test_a_run_stopped_before_its_first_record_resumes(tiny_suite, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_pair", interrupted)
    argv = ["run", "--suite", tiny_suite("cnn-baseline"), "--out", tmp_path / "runs", *TINY]
    code, _, err = run_cli(capsys, *argv)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert code == 130 and one_line(err).endswith(f"after 0 of 1 runs; resume with: archbench run --resume {run_dir}")
    assert not (run_dir / RECORDS).exists()

    monkeypatch.undo()
    code, _, err = run_cli(capsys, "run", "--resume", run_dir, "--quiet", "--isolation", "none")
    assert code == 0, err
    assert pairs(run_dir) == ["cnn-baseline"]


def test_every_record_has_its_own_id(two_pairs):
    ids = [r["record_id"] for r in read_records(two_pairs / RECORDS)]
    assert len(set(ids)) == 2 and all(len(i) == 32 for i in ids)


@pytest.fixture
def small_disk(tmp_path):
    """A 300 KB tmpfs at tmp_path/disk, where the test may mount one (root with the capability); else skipped."""
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(disk)], capture_output=True)
    except OSError:  # no mount command
        pytest.skip("cannot mount a tmpfs here")
    if mounted.returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_real_full_disk_ends_in_one_line_with_whole_records_and_resumes_once_freed(small_disk, tiny_suite, tmp_path, capsys):
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    fill = small_disk / "fill"
    fill.write_bytes(bytes(free - 8 * 1024))  # room for run.json, not for its record
    argv = ["run", "--suite", tiny_suite("cnn-baseline"), "--out", small_disk / "runs", *TINY]
    code, _, err = run_cli(capsys, *argv)
    (run_dir,) = (small_disk / "runs").iterdir()
    assert code == 2 and one_line(err) == (
        f"archbench: error: {run_dir}: a record could not be written (No space left on device); the records before it are whole"
    )
    assert (run_dir / RECORDS).read_bytes() == b""  # cut back to where it was

    fill.unlink()
    code, _, err = run_cli(capsys, "run", "--resume", run_dir, "--quiet", "--isolation", "none")
    assert code == 0, err
    assert pairs(run_dir) == ["cnn-baseline"] and run_cli(capsys, "report", run_dir)[0] == 0


def test_a_resume_from_another_folder_finds_the_plugin_given_as_a_relative_path(tiny_suite, tmp_path, capsys, monkeypatch):
    (tmp_path / "nets.py").write_text(FLAT_NET)
    monkeypatch.chdir(tmp_path)
    argv = ["run", "--suite", tiny_suite("flat"), "--out", tmp_path / "runs", *TINY, "--arch-module", "nets.py"]
    monkeypatch.setattr(runner, "run_pair", lambda *args, **kwargs: (_ for _ in ()).throw(KeyboardInterrupt))
    assert run_cli(capsys, *argv)[0] == 130
    monkeypatch.undo()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (run_dir,) = (tmp_path / "runs").iterdir()
    code, _, err = run_cli(capsys, "run", "--resume", run_dir, "--quiet", "--isolation", "none")
    assert code == 0, err
    assert pairs(run_dir) == ["flat"]


def test_a_temporary_folder_left_by_a_killed_process_is_removed_by_the_next(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen(["true"])
    gone.wait()  # a PID no process has now
    left = tmp_path / f"archbench-children-{gone.pid}-abc"
    left.mkdir()
    (left / "x.stderr").write_text("")
    mine = tmp_path / f"archbench-children-{os.getpid()}-def"
    mine.mkdir()
    made = scratch.folder("children")
    assert not left.exists() and mine.exists() and made.name.startswith(f"archbench-children-{os.getpid()}-")
