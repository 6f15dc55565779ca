"""A history: every run filed into it kept whole, and an index over the records that answers queries.

Layout: `<history>/runs/<run_id>/records.jsonl` holds each run's records exactly as the run wrote them (with its
run.json and REPORT.md/.html, which the dashboard links to); `<history>/index.sqlite` indexes every record's
identity and judged figures. The records are the truth: the index is rebuilt from them whenever it is missing or
was written to another schema. SQLite, not DuckDB: it is in Python's standard library (no dependency for a file
of a few thousand rows), it writes in transactions (two `history add`s at once do not tear it), and records are
read by archbench's own reader (versions, torn last lines, duplicates) whatever reads them afterwards.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import statistics
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..results import store
from ..results.aggregate import finite
from ..results.records import FILE_KEYS, RECORDS, identity, read_records
from ..tasks import figures

DEFAULT = Path("results") / "history"
ENVIRONMENT = "ARCHBENCH_HISTORY"  # where a history lives when --history is not given (a CI cache, say)
INDEX = "index.sqlite"
SCHEMA = 1  # of the index; another number rebuilds it from the records
RUN_FILES = (store.RUN_INFO, "REPORT.md", "REPORT.html")  # filed beside a run's records when present
FILED = "filed.json"  # beside a run's records: the commit a backfill checked out for it, where it said

_TABLES = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE records (
    record_id TEXT PRIMARY KEY, run_id TEXT, suite TEXT, commit_id TEXT, machine TEXT, architecture TEXT,
    config_id TEXT, mode TEXT, task TEXT, seed INTEGER, status TEXT, record_version INTEGER, started_at TEXT
);
CREATE TABLE figures (record_id TEXT, figure TEXT, value REAL, spread REAL, PRIMARY KEY (record_id, figure));
"""


def location(given: Path | None = None) -> Path:
    """The history folder: `given`, else $ARCHBENCH_HISTORY, else results/history."""
    return Path(given or os.environ.get(ENVIRONMENT) or DEFAULT)


def machine(record: dict[str, Any]) -> str:
    """The machine a record was measured on, as series are kept apart: the device's name (a CPU's model line
    with its instruction set, or the GPU's name), the number of processes, CPU threads and torch's version."""
    device = record.get("device_name") or record.get("cpu") or "unknown device"
    return f"{device} x{record.get('world_size') or 1}, {record.get('cpu_threads')} threads, torch {record.get('torch')}"


def commit_of(record: dict[str, Any], where: str) -> str:
    """The commit a record measured; a UserError for a record measured outside git or from a dirty tree, which
    no point of a history can stand for."""
    commit = record.get("git_commit")
    if not isinstance(commit, str) or not commit:
        raise UserError(f"{where}: a record without a git commit (measured outside a repository): a history orders runs by commit")
    if commit.endswith("-dirty"):
        raise UserError(
            f"{where}: measured from a tree with uncommitted changes ({commit[:10]}-dirty): commit them and run again"
        )
    return commit


@dataclass(frozen=True, kw_only=True)
class Added:
    """What `add` did: records new to the history, records it held already, and the runs they came from."""

    new: int
    known: int
    runs: int


def add(root: Path, paths: Iterable[Path], commit: str | None = None) -> Added:
    """Files the records files `paths` into the history at `root`: each record that the history does not hold
    yet (by `identity`: its record id, or its content in records older than ids) is appended, unchanged, to its
    run's records file there, then indexed. Without `commit`, every record's own commit is checked first
    (`commit_of`), so that a run with one bad record files nothing. `commit` (a backfill's) is the commit that
    was checked out and measured: kept beside the run (`FILED`), it orders the records rather than their own
    `git_commit`, which names archbench's checkout, not a plugin repository's."""
    found = [(Path(path), read_records(Path(path))) for path in paths]
    if commit is None:
        for path, records in found:
            for record in records:
                commit_of(record, str(path))
    store.writable_folder(root, "history")
    with index(root) as db:
        known = {row[0] for row in db.execute("SELECT record_id FROM records")}
        new = 0
        runs = set()
        for path, records in found:
            for record in _raw(path):
                if identity(record) in known:
                    continue
                folder = root / "runs" / _safe(record["run_id"])
                folder.mkdir(parents=True, exist_ok=True)
                _file_beside(path.parent, folder, record)
                if commit is not None:
                    store.write_whole(folder / FILED, json.dumps({"commit": commit}) + "\n")
                store.append_record(folder, record)
                _index_record(db, record, commit)
                known.add(identity(record))
                runs.add(record["run_id"])
                new += 1
    total = sum(len(records) for _, records in found)
    return Added(new=new, known=total - new, runs=len(runs))


def _raw(path: Path) -> Iterator[dict[str, Any]]:
    """The records of `path` as the file holds them (read_records names a file a record points to where it lies
    now; the history keeps what the run wrote), skipping a torn last line as read_records does."""
    for line in path.read_bytes().splitlines():
        try:
            record = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(record, dict):
            yield record


def _file_beside(source: Path, folder: Path, record: dict[str, Any]) -> None:
    """Copies the run's own files (RUN_FILES) and the files `record` names (FILE_KEYS) into `folder`, once."""
    names = [*RUN_FILES, *(Path(str(record[key])).name for key in FILE_KEYS if record.get(key))]
    for name in names:
        if (source / name).is_file() and not (folder / name).exists():
            shutil.copy2(source / name, folder / name)


def _safe(run_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id) or "run"


@contextmanager
def index(root: Path) -> Iterator[sqlite3.Connection]:
    """The history's index, open in one transaction (committed when the block ends without an exception);
    rebuilt from the records files when missing or of another schema."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / INDEX
    with closing(sqlite3.connect(path, timeout=60)) as db:
        with db:
            if _schema(db) != SCHEMA:
                _rebuild(db, root)
        with db:
            yield db


def _schema(db: sqlite3.Connection) -> int | None:
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    except sqlite3.DatabaseError:
        return None
    return int(row[0]) if row else None


def _rebuild(db: sqlite3.Connection, root: Path) -> None:
    for table in ("meta", "records", "figures"):
        db.execute(f"DROP TABLE IF EXISTS {table}")
    db.executescript(_TABLES)
    db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
    for path in sorted((root / "runs").glob(f"*/{RECORDS}")):
        filed = path.parent / FILED
        commit = json.loads(filed.read_text())["commit"] if filed.is_file() else None
        for record in _raw(path):
            _index_record(db, record, commit)


def _index_record(db: sqlite3.Connection, record: dict[str, Any], commit: str | None = None) -> None:
    key = identity(record)
    db.execute(
        "INSERT OR IGNORE INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            key, record["run_id"], record.get("suite"), commit or record.get("git_commit"), machine(record), record["architecture"],
            record["config_id"], record.get("mode") or "fp32", record["task"], record.get("seed"), record["status"],
            record.get("record_version"), record.get("started_at"),
        ),
    )
    if record["status"] != "ok":
        return
    for figure in figures():
        value = record.get(figure.key)
        if figure.kind == "structure" or not finite(value):
            continue
        spread = log_spread(record.get(figure.repeats)) if figure.repeats else None
        db.execute("INSERT OR IGNORE INTO figures VALUES (?, ?, ?, ?)", (key, figure.key, value, spread))


def log_spread(repeats: Any) -> float | None:
    """The standard error of a median of `repeats` (a record's timed windows), as a fraction of it: the
    spread of their logs (1.4826 x their median absolute deviation, which one disturbed window does not move)
    x 1.2533 / sqrt(n). None for fewer than three positive windows."""
    if not isinstance(repeats, list):
        return None
    logs = [math.log(v) for v in repeats if finite(v) and v > 0]
    if len(logs) < 3:
        return None
    center = statistics.median(logs)
    deviation = 1.4826 * statistics.median(abs(v - center) for v in logs)
    return 1.2533 * deviation / math.sqrt(len(logs))
