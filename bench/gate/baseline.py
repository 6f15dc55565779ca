"""The committed baseline of the regression gate: a copy of one or more runs' records, and where they came from.

Several reruns of the same code make a steadier baseline: the gate pools their repeats, so the baseline's
speed is their median and its measured spread includes the machine's variation from run to run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from ..results import store
from ..errors import UserError
from ..results.records import RECORDS, distinct, read_records

DEFAULT_DIR = Path("results") / "baseline"
SOURCE = "baseline.json"
MANAGED = (RECORDS, store.RUN_INFO, SOURCE)  # what `update` writes; anything else in the folder is kept


def update(records_files: list[Path], folder: Path = DEFAULT_DIR) -> Path:
    """Replace the baseline in `folder` with the records of the runs `records_files`; returns the new records file.

    `baseline.json` says which runs and which commits (the records' git_commit) produced it. The new baseline
    is written whole into a temporary folder beside `folder` and then swapped in by renames, so a failure at
    any point leaves the old baseline as it was. Other files in `folder` are carried over.
    """
    runs = [read_records(path) for path in records_files]
    for path, records in zip(records_files, runs):
        if not records:
            raise UserError(f"{path} holds no records")
    records = distinct([(str(path), run) for path, run in zip(records_files, runs)])
    commits = sorted({str(r.get("git_commit")) for r in records})
    folder = Path(folder)
    store.writable_folder(folder, "--to", create=False)
    parent = store.writable_folder(folder.absolute().parent, f"--to {folder}: its parent folder")
    source = {
        "run_ids": [run[0].get("run_id") for run in runs],
        "suite": records[0].get("suite"),
        "git_commit": commits[0] if len(commits) == 1 else commits,
        "commands": [run[0].get("command") for run in runs],
        "device_name": records[0].get("device_name"),
        "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.new-", dir=parent))
        try:
            os.chmod(staging, _mode(folder))
            _write(staging, folder, records, records_files[-1].parent / store.RUN_INFO, source)
            interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C now would not know what it stopped
            try:
                _swap(staging, folder.absolute())
            finally:
                signal.signal(signal.SIGINT, interrupt)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as error:
        raise UserError(f"--to {folder}: cannot write the baseline, left unchanged: {error.strerror or error}") from None
    return folder / RECORDS


def _mode(folder: Path) -> int:
    """The permissions the baseline folder keeps: its own, or a new folder's under this process's umask."""
    if folder.is_dir():
        return stat.S_IMODE(folder.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


def _write(staging: Path, old: Path, records: list[dict], run_info: Path, source: dict) -> None:
    """The new baseline's files in `staging`: records, run.json, baseline.json, and the old folder's other files."""
    (staging / RECORDS).write_text("".join(json.dumps(record) + "\n" for record in records))
    if run_info.is_file():
        shutil.copyfile(run_info, staging / store.RUN_INFO)
    (staging / SOURCE).write_text(json.dumps(source, indent=2) + "\n")
    if old.is_dir():
        for entry in old.iterdir():
            if entry.name in MANAGED:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.copytree(entry, staging / entry.name, symlinks=True)
            else:
                shutil.copy2(entry, staging / entry.name, follow_symlinks=False)


def _swap(staging: Path, folder: Path) -> None:
    """Put `staging` in the place of `folder`: old -> backup, new -> folder, backup removed; undone on failure."""
    if not folder.exists():
        os.rename(staging, folder)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
    backup.rmdir()  # only the unique name is wanted: a rename needs the target absent
    os.rename(folder, backup)
    try:
        os.rename(staging, folder)
    except BaseException:
        os.rename(backup, folder)
        raise
    shutil.rmtree(backup, ignore_errors=True)
