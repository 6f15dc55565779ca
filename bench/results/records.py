"""The record reader: a records file read into records, the record versions as data, and the one rule for
which records may be compared.

A records file (`RECORDS`) holds one record per line: a flat JSON object that carries its `record_version`
(bench.results.schema says what the keys hold and writes them). `VERSIONS` is every version with what changed in it;
records of different versions were measured by different harness code, and `comparable` is where that
decides whether two sets of records may be compared (the report's speedups and summary lines, the Pareto
fronts, the regression gate).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..errors import UserError, json_kind

RECORDS = "records.jsonl"  # a run folder's records file
# A record without these cannot be reported or compared.
REQUIRED_KEYS = ("architecture", "task", "dataset", "status", "config_id")
FILE_KEYS = ("sample_grid",)  # record keys that name a file the run wrote into its folder


@dataclass(frozen=True)
class Version:
    """One record version: its number and what changed in it from the version before."""

    number: int
    what_changed: str


VERSIONS = (
    Version(1, "Records before `record_version` existed."),
    Version(2, "Each architecture measured in a fresh process, with provenance."),
    Version(
        3,
        "A mode (precision, memory format, compilation) is part of every record and of its config_id.",
    ),
    Version(
        4,
        "Training throughput is timed on the batches training draws, in its order, not on one fixed batch (which "
        "stays in cache and skips the gather): 2-5% lower on a CPU, and in agreement with the training loop's "
        "clock.",
    ),
    Version(
        5,
        "A trained record's training throughput is the median of windows timed after every epoch "
        "(`train_throughput_windows`, the window before training first), not the window before training: it "
        "follows the machine's speed and the model's state over the minutes the loop's own clock covers.",
    ),
    Version(
        6,
        "The windows are timed every `window_every` seconds of training, not after every epoch, and pooled from "
        "the first epoch's end on as training pools its steps (their harmonic mean), not by their median "
        "(`train_throughput_window_steps` says when each was timed); a GAN's generator may be judged as its "
        "moving average (`ema`, 0 before).",
    ),
    Version(
        7,
        "A window during training times a copy whose optimizers resume from training's own state (moments, step "
        "counts, learning rates), not fresh optimizers: with fresh Adam states vae-mlp's windows ran 6% below "
        "its loop.",
    ),
    Version(
        8,
        "Freed heap up to 1 GiB stays with the process (glibc's trim threshold, 64 MiB before): a window's copy "
        "of fp32 cnn-wide faulted 90 MB of pages in at every step and its windows ran 9% below the loop.",
    ),
    Version(
        9,
        "Each pair's process times the matmul peak after its figures (`pair_peak_flops`), warmed up until its rate "
        "stops rising, on a matmul sized so that one call takes 20 ms (`peak_method` names the size); `peak_flops`, "
        "against which utilization is taken, is the best of those among the run's records so far, not one peak "
        "timed cold in the parent at a fixed size. `emulated_precision` says the device ran the mode's precision "
        "without native instructions.",
    ),
    Version(
        10,
        "Every block comes from the heap (glibc's M_MMAP_MAX 0, beside the fixed thresholds; `allocator` says "
        "so), except while peak memory is measured: blocks over 32 MiB are no longer mapped and faulted in afresh "
        "at every step or forward where the heap had no room for them, so training, its windows and inference "
        "read higher where that happened (vgg11-bn under an AVX2-only oneDNN: 16,220 page faults a step in its "
        "windows and in its loop until the first window, none since).",
    ),
    Version(
        11,
        "Batch-1 latency is timed in exactly `repeats` windows of equally many calls (its count of calls rounded "
        "up to a multiple of `repeats`), so `latency_p50_ms_repeats` always holds `repeats` figures: where the "
        "count did not divide, fewer windows were timed, and the two probes of `archbench ab` took different "
        "numbers of turns.",
    ),
)


def named(architecture: str, mode: str | None, at: tuple[int, int] | None = None) -> str:
    """How a row or record is named outside a table: the architecture, with its mode unless that is fp32
    (records from before modes have none, and were fp32), and a speed record's point (`point`)."""
    mode = mode or "fp32"
    name = architecture if mode == "fp32" else f"{architecture} ({mode})"
    return f"{name} at {at[0]} px, batch {at[1]}" if at else name


def point(record: dict[str, Any]) -> tuple[int, int] | None:
    """(image size, batch size) of a speed record (`archbench speed` measures several per architecture and
    mode), None for a run's record."""
    return (record.get("image_size"), record.get("batch_size")) if record.get("kind") == "speed" else None


def torn_tail(content: bytes) -> int:
    """Where the torn last line of a records file's `content` starts (len(content) when there is none).

    Records are appended a whole line at a time, so a crash or a full disk can only leave the last line
    short, and a short line does not parse as a JSON object: a record's last character is its closing
    brace. A last line that parses but lacks its newline is a whole record, not torn (the appender adds the
    newline). Only the last line can be torn; a bad line before it is a corrupt file."""
    body = content.rstrip(b"\n")
    start = body.rfind(b"\n") + 1
    last = body[start:]
    if not last.strip():
        return len(content)
    try:
        return len(content) if isinstance(json.loads(last.decode("utf-8")), dict) else start
    except (UnicodeDecodeError, json.JSONDecodeError):
        return start


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every record of a records file; a line that is no record is a UserError naming file and line.

    Each non-blank line must be UTF-8 text holding one JSON object with the keys `REQUIRED_KEYS` (strings).
    A torn last line (`torn_tail`) is left out with a one-line warning on stderr: `archbench run --resume`
    sets it aside and reruns its pair. A record found twice (the same `record_id`, or, in records older
    than it, the same content) is read once, said on stderr; two records of one pair (architecture, mode,
    seed) from one run (`run_id`) are a UserError naming both lines. A file a record names (`FILE_KEYS`)
    that is gone from where it was written but lies beside the records file is named there: a run folder
    that was moved or copied keeps its files. An unreadable file is a UserError naming it.
    """
    try:
        content = Path(path).read_bytes()
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, expected a records file ({RECORDS})") from None
    except OSError as error:
        raise UserError(f"{path}: cannot read: {error.strerror or error}") from None
    cut = torn_tail(content)
    if cut < len(content):
        number = content.count(b"\n", 0, cut) + 1
        print(
            f"archbench: warning: {path}:{number}: torn last line ({len(content) - cut} bytes) left out; "
            f"`archbench run --resume {Path(path).parent}` sets it aside and reruns its pair",
            file=sys.stderr,
        )
    records, seen, lines, repeated = [], set(), {}, 0
    for number, raw in enumerate(content[:cut].split(b"\n"), 1):
        record = _parsed_line(raw, f"{path}:{number}")
        if record is None:
            continue
        if identity(record) in seen:
            repeated += 1
            continue
        about = (record.get("run_id"), record["architecture"], record.get("mode") or "fp32", record.get("seed"), point(record))
        if about in lines:  # a baseline pools several runs: one record per pair and run
            _, name, mode, seed, _ = about
            raise UserError(
                f"{path}:{lines[about]} and {path}:{number}: two records of {named(name, mode, point(record))} seed "
                f"{seed} in one run; a run records each pair once (keep the one you trust)"
            )
        seen.add(identity(record))
        lines[about] = number
        records.append(_relocated(record, Path(path).parent))
    if repeated:
        print(f"archbench: {path}: {repeated} record(s) found twice in it, each read once", file=sys.stderr)
    return records


def _parsed_line(raw: bytes, where: str) -> dict[str, Any] | None:
    """One line of a records file as its record, None for a blank line; a UserError starting with `where` (file
    and line) for one that is not UTF-8, not a JSON object, or lacks a `REQUIRED_KEYS` string."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(
            f"{where}: not UTF-8 text (byte 0x{raw[error.start]:02x} at column {error.start + 1}); "
            "is this a records file?"
        ) from None
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise UserError(f"{where}: corrupt record: {error.msg} (column {error.colno})") from None
    if not isinstance(record, dict):
        raise UserError(f"{where}: a record must be a JSON object, got {json_kind(record)}")
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        raise UserError(
            f"{where}: record lacks required key(s) {', '.join(missing)} (a record needs {', '.join(REQUIRED_KEYS)})"
        )
    wrong = next((key for key in REQUIRED_KEYS if not isinstance(record[key], str)), None)
    if wrong:
        raise UserError(f"{where}: record key {wrong!r} must be a string, got {json_kind(record[wrong])}")
    return record


def identity(record: dict[str, Any]) -> str:
    """What makes two records the same record: its `record_id`, or, in records older than ids, its content."""
    found = record.get("record_id")
    return found if isinstance(found, str) else json.dumps(record, sort_keys=True)


def distinct(sources: list[tuple[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """The records of several `sources` (name, records) pooled, each record once: a record that arrives from
    two sources (the same run given twice, or two files holding copies) is counted once, said on stderr."""
    pooled, first, twice = [], {}, {}
    for name, records in sources:
        for record in records:
            key = identity(record)
            if key in first:
                twice[first[key], name] = twice.get((first[key], name), 0) + 1
                continue
            first[key] = name
            pooled.append(record)
    for (one, other), count in twice.items():
        print(f"archbench: {count} record(s) from {other} were also given by {one}: each counted once", file=sys.stderr)
    return pooled


def shared(sources: list[tuple[str, list[dict[str, Any]]]]) -> tuple[str, str] | None:
    """The first two of `sources` (name, records) that hold the same record, or None when none do."""
    first: dict[str, int] = {}
    for index, (name, records) in enumerate(sources):
        for record in records:
            holder = first.setdefault(identity(record), index)
            if holder != index:
                return sources[holder][0], name
    return None


def _relocated(record: dict[str, Any], folder: Path) -> dict[str, Any]:
    """`record` with each file it names (`FILE_KEYS`) found in `folder` (the records file's) when the recorded
    path is gone but a file of that name is there."""
    for key in FILE_KEYS:
        named = record.get(key)
        if isinstance(named, str) and named and not Path(named).is_file() and (folder / Path(named).name).is_file():
            record[key] = str(folder / Path(named).name)
    return record


def version(record: dict[str, Any]) -> int:
    """The version of a record's layout; records written before versions were stamped are version 1."""
    number = record.get("record_version")
    return number if isinstance(number, int) and not isinstance(number, bool) else 1


def versions(records: Iterable[dict[str, Any]]) -> tuple[int, ...]:
    """The record versions among `records`, ascending, each once: what `comparable` compares."""
    return tuple(sorted({version(record) for record in records}))


def comparable(these: Iterable[dict[str, Any]], those: Iterable[dict[str, Any]]) -> bool:
    """Whether the figures of two sets of records (two rows of a report, a baseline's and a candidate's) may be
    compared: only when both hold the same record versions. Records of an older version are compared with
    records of that version alone, so rows grouped by their `versions` are the rows that may be compared."""
    return versions(these) == versions(those)


def versions_text(numbers: Iterable[int]) -> str:
    """Record versions as a report writes them: ascending, comma-separated, each once ("7, 8")."""
    return ", ".join(map(str, sorted(set(numbers))))
