"""Temporary folders that carry their owner's PID in their name, so that a folder a killed process could not remove
is removed by the next archbench that makes one of its kind."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path


def folder(kind: str) -> Path:
    """A new folder `archbench-<kind>-<pid>-*` under the system's temporary folder, after removing those of
    `kind` whose process is gone."""
    root = Path(tempfile.gettempdir())
    for old in root.glob(f"archbench-{kind}-*"):
        found = re.fullmatch(rf"archbench-{re.escape(kind)}-(\d+)-.*", old.name)
        if found and old.is_dir() and not _alive(int(found[1])):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"archbench-{kind}-{os.getpid()}-", dir=root))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
