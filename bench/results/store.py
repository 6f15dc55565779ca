"""Run folders on disk: one folder per run, one JSON line per (architecture, seed), appended as each ends.

A run folder `<out>/<run-id>/` holds `run.json` (the configuration, the environment and the command) and
`records.jsonl`. Readers take a run folder, a records file, or a run id under the default results folder;
bench.results.records reads the records file itself.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

try:
    import fcntl
except ImportError:  # not POSIX: records are appended without a lock
    fcntl = None

from ..errors import UserError, json_kind
from .records import RECORDS, read_records

RUN_INFO = "run.json"
LOCK = ".records.lock"  # what concurrent writers of one run folder lock
DEFAULT_OUT = Path("results") / "runs"  # where run folders go unless told


def new_run_dir(out: Path, suite: str) -> Path:
    """A fresh folder `<out>/<UTC timestamp>-<suite>` (suffixed when taken), created."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        path = out / (f"{stamp}-{suite}" + (f"-{attempt}" if attempt > 1 else ""))
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot create a run folder under {out}")


def write_run_info(run_dir: Path, info: dict[str, Any]) -> None:
    (run_dir / RUN_INFO).write_text(json.dumps(_jsonable(info), indent=2) + "\n")


def append_record(
    run_dir: Path, record: dict[str, Any], replacing: Callable[[dict[str, Any]], bool] | None = None
) -> None:
    """Append one record as a JSON line and flush it to disk, so an interrupted run keeps it.

    Safe with concurrent writers (processes or threads) on one run folder: each line goes down in one write
    on a file opened for appending, under an exclusive lock on the folder's lock file, so lines never
    interleave or tear. With `replacing`, the records it selects are dropped in the same step, under the same
    lock: the file is rewritten beside the old one and renamed over it, so an interruption leaves either the
    old records or the new ones.
    """
    path = run_dir / RECORDS
    line = (json.dumps(_jsonable(record)) + "\n").encode()
    with _locked(run_dir):
        if replacing is None:
            handle = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                written = os.write(handle, line)
                while written < len(line):  # a short write (a full disk, a signal) is finished, not torn
                    written += os.write(handle, line[written:])
                os.fsync(handle)
            finally:
                os.close(handle)
            return
        kept = [r for r in read_records(path) if not replacing(r)] if path.exists() else []
        temporary = path.with_name(f".{RECORDS}.tmp")
        with open(temporary, "wb") as f:
            f.write("".join(json.dumps(_jsonable(r)) + "\n" for r in kept).encode() + line)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)


@contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """An exclusive lock on the run folder's records, held by one writer at a time (POSIX; elsewhere a no-op).

    The lock is on a file of its own: the records file is replaced by renaming, which a lock on it would not survive.
    """
    if fcntl is None:
        yield
        return
    handle = os.open(run_dir / LOCK, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # closing releases the lock


def records_path(run: str | Path | None, out: Path) -> Path:
    """The records file of `run` (a run folder, a records file or a run id under `out`), or of the newest run."""
    if run is None:
        runs = sorted(p for p in out.glob(f"*/{RECORDS}")) if out.is_dir() else []
        if not runs:
            raise UserError(f"no runs under {out}; start one with `archbench run`")
        return max(runs, key=lambda p: p.stat().st_mtime)
    path = Path(run)
    candidates = list(dict.fromkeys((path, path / RECORDS, out / str(run) / RECORDS)))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    for candidate in candidates:
        if candidate.name == RECORDS and candidate.exists():
            raise UserError(f"{candidate}: not a file, cannot read run records from it")
    looked = " and ".join(str(c) for c in candidates[1:])
    raise UserError(f"no run records at {run} (looked for {looked})")


def read_run_info(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_INFO
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as error:
        raise UserError(f"{path}: cannot read: {error.strerror or error}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        reason = error.msg if isinstance(error, json.JSONDecodeError) else "not UTF-8 text"
        raise UserError(f"{path}: corrupt run information: {reason}") from None
    if not isinstance(info, dict):
        raise UserError(f"{path}: corrupt run information: a JSON object expected, got {json_kind(info)}")
    return info


def writable_folder(path: Path, what: str, create: bool = True) -> Path:
    """`path` as a folder this process can write files into, created if missing; else a UserError naming `what`.

    Writability is tried, not read from permission bits (which do not bind root): a file is created and removed.
    Without `create`, nothing is made: the probe goes into the nearest folder that exists on the way to `path`.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path}: is a file, not a folder")
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"{what} {path}: {blocker} is a file, not a folder")
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        existing = next(p for p in (path, *path.parents) if p.exists())
        probe = tempfile.NamedTemporaryFile(dir=existing, prefix=".archbench-write-test-")
        probe.close()
    except OSError as error:
        raise UserError(f"{what} {path}: not writable ({error.strerror or error})") from None
    return path


def _jsonable(value: Any) -> Any:
    """JSON-safe copy: paths and tuples become strings and lists, NaN and infinities become None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value
