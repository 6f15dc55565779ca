"""Run folders on disk: one folder per run, one JSON line per (architecture, seed), appended as each ends.

A run folder `<out>/<run-id>/` holds `run.json` (the configuration, the environment and the command) and
`records.jsonl`. Readers take a run folder, a records file, or a run id under the default results folder;
bench.results.records reads the records file itself.
"""

from __future__ import annotations

import json
import math
import os
import sys
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
from .records import RECORDS, read_records, torn_tail

RUN_INFO = "run.json"
LOCK = ".records.lock"  # what concurrent appenders of one run folder lock, a record at a time
RUN_LOCK = ".run.lock"  # what the run folder's one writer holds for its whole life; it holds the writer's PID
TORN = "records.torn"  # torn last lines set aside from the records file, kept for whoever wants to look
_TAIL = 1 << 20  # bytes at the records file's end read to find its last line (a record is a few KB)
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
    write_whole(run_dir / RUN_INFO, json.dumps(_jsonable(info), indent=2) + "\n")


def write_whole(path: Path, content: str | bytes) -> Path:
    """Write `content` to `path` whole or not at all: into a file beside it, flushed and fsynced, then renamed
    over it. A failure (a full disk, a folder that cannot be written) removes the partial file, leaves what was
    at `path` as it was, and is a UserError naming the file and the cause."""
    path = Path(path)
    data = content.encode() if isinstance(content, str) else content
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None
    return path


def append_record(
    run_dir: Path, record: dict[str, Any], replacing: Callable[[dict[str, Any]], bool] | None = None
) -> None:
    """Append one record as a JSON line, flushed and fsynced, so an interrupted run keeps it; the line is
    whole in the file or not in it at all.

    Safe with concurrent writers (processes or threads) on one run folder: each line goes down in one write
    on a file opened for appending, under an exclusive lock on the folder's lock file, so lines never
    interleave. A failed or short write (a full disk) is undone, the file cut back to where it was, and is a
    UserError naming the folder and the cause. The file is made to end with a whole line first
    (`set_aside_torn`): nothing is appended onto a line without its newline. With `replacing`, the records it
    selects are dropped in the same step, under the same lock: the file is rewritten beside the old one and
    renamed over it (`write_whole`), so an interruption leaves either the old records or the new ones.
    """
    path = run_dir / RECORDS
    line = (json.dumps(_jsonable(record)) + "\n").encode()
    with _locked(run_dir):
        set_aside_torn(run_dir)
        if replacing is None:
            _append(path, line)
            return
        kept = [r for r in read_records(path) if not replacing(r)] if path.exists() else []
        write_whole(path, "".join(json.dumps(_jsonable(r)) + "\n" for r in kept).encode() + line)


def _append(path: Path, line: bytes) -> None:
    """`line` appended to `path` and fsynced, or the file cut back to its length before and a UserError."""
    try:
        handle = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as error:
        raise UserError(f"{path.parent}: cannot write its records: {error.strerror or error}") from None
    try:
        end = os.fstat(handle).st_size
        written = 0
        while written < len(line):
            written += os.write(handle, line[written:])
        os.fsync(handle)
    except OSError as error:
        os.ftruncate(handle, end)  # cutting back needs no space
        raise UserError(
            f"{path.parent}: a record could not be written ({error.strerror or error}); the records before it are whole"
        ) from None
    finally:
        os.close(handle)


def set_aside_torn(run_dir: Path) -> None:
    """Make the folder's records file end with a whole line: a torn last line (bench.results.records.torn_tail)
    moved to `TORN` beside it, said in one line on stderr, the file cut back to its last whole line; a whole
    last record without its newline given it."""
    path = run_dir / RECORDS
    if not path.is_file():
        return
    size = path.stat().st_size
    with open(path, "rb") as records:  # the last lines only: the file grows with every record
        records.seek(max(0, size - _TAIL))
        tail = records.read()
    start = size - len(tail)
    if start and b"\n" not in tail.rstrip(b"\n"):  # a last line longer than the tail read
        tail, start = path.read_bytes(), 0
    cut = start + torn_tail(tail)
    if cut == size:
        if size and not tail.endswith(b"\n"):
            _append(path, b"\n")
        return
    with open(run_dir / TORN, "ab") as side:
        side.write(tail[cut - start :].rstrip(b"\n") + b"\n")
        side.flush()
        os.fsync(side.fileno())
    with open(path, "r+b") as records:
        number = records.read(cut).count(b"\n") + 1
        records.truncate(cut)
        os.fsync(records.fileno())
    print(f"archbench: {path}:{number}: torn last line ({size - cut} bytes) moved to {run_dir / TORN}", file=sys.stderr)


@contextmanager
def writing(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir` as its one writer for the block: an exclusive lock on its `RUN_LOCK` file, into which the
    holder writes its PID. A second writer (two `--resume` of one folder at once) gets a UserError at once,
    naming the holder. POSIX; elsewhere a no-op."""
    if fcntl is None:
        yield
        return
    try:
        handle = os.open(run_dir / RUN_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise UserError(f"{run_dir}: cannot write in this run folder: {error.strerror or error}") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(handle, 32, 0).decode(errors="replace").strip() or "unknown"
            raise UserError(
                f"{run_dir}: another archbench (PID {holder}) is writing this run folder; wait for it to end or stop it"
            ) from None
        try:
            os.ftruncate(handle, 0)
            os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
        except OSError as error:  # a full disk: the records would fail next
            raise UserError(f"{run_dir}: cannot write in this run folder: {error.strerror or error}") from None
        yield
    finally:
        os.close(handle)  # closing releases the lock


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
