"""The committed baseline of the regression gate: a copy of one run's records, and where it came from."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

from . import store
from .errors import UserError

DEFAULT_DIR = Path("results") / "baseline"
SOURCE = "baseline.json"


def update(records_file: Path, folder: Path = DEFAULT_DIR) -> Path:
    """Replace the baseline in `folder` with the run of `records_file`; returns the new records file.

    `baseline.json` says which run and which commit (the records' git_commit) produced it.
    """
    records = store.read_records(records_file)
    if not records:
        raise UserError(f"{records_file} holds no records")
    commits = sorted({str(r.get("git_commit")) for r in records})
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / store.RECORDS
    shutil.copyfile(records_file, target)
    run_info = records_file.parent / store.RUN_INFO
    if run_info.is_file():
        shutil.copyfile(run_info, folder / store.RUN_INFO)
    source = {
        "run_id": records[0].get("run_id"),
        "suite": records[0].get("suite"),
        "git_commit": commits[0] if len(commits) == 1 else commits,
        "command": records[0].get("command"),
        "device_name": records[0].get("device_name"),
        "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (folder / SOURCE).write_text(json.dumps(source, indent=2) + "\n")
    return target
