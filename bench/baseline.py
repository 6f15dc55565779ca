"""The committed baseline of the regression gate: a copy of one or more runs' records, and where they came from.

Several reruns of the same code make a steadier baseline: the gate pools their repeats, so the baseline's
speed is their median and its measured spread includes the machine's variation from run to run.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

from . import store
from .errors import UserError

DEFAULT_DIR = Path("results") / "baseline"
SOURCE = "baseline.json"


def update(records_files: list[Path], folder: Path = DEFAULT_DIR) -> Path:
    """Replace the baseline in `folder` with the records of the runs `records_files`; returns the new records file.

    `baseline.json` says which runs and which commits (the records' git_commit) produced it.
    """
    runs = [store.read_records(path) for path in records_files]
    for path, records in zip(records_files, runs):
        if not records:
            raise UserError(f"{path} holds no records")
    records = [record for run in runs for record in run]
    commits = sorted({str(r.get("git_commit")) for r in records})
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / store.RECORDS
    target.write_text("".join(json.dumps(record) + "\n" for record in records))
    run_info = records_files[-1].parent / store.RUN_INFO
    if run_info.is_file():
        shutil.copyfile(run_info, folder / store.RUN_INFO)
    source = {
        "run_ids": [run[0].get("run_id") for run in runs],
        "suite": records[0].get("suite"),
        "git_commit": commits[0] if len(commits) == 1 else commits,
        "commands": [run[0].get("command") for run in runs],
        "device_name": records[0].get("device_name"),
        "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (folder / SOURCE).write_text(json.dumps(source, indent=2) + "\n")
    return target
