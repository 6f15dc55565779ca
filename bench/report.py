"""Tables from records: one markdown table per task, and a flat CSV of every record for pandas users."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import pandas as pd
from tabulate import tabulate

Column = tuple[str, str, Callable[[Any], Any]]


def _sig(digits: int, scale: float = 1.0) -> Callable[[Any], Any]:
    """Formatter to `digits` significant figures after multiplying by `scale`; blank for missing values."""

    def fmt(value: Any) -> Any:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return ""
        value *= scale
        if value == 0:
            return "0"
        decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
        return f"{value:.{decimals}f}"

    return fmt


def _fixed(decimals: int, scale: float = 1.0) -> Callable[[Any], Any]:
    def fmt(value: Any) -> Any:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return ""
        return f"{value * scale:.{decimals}f}"

    return fmt


def _text(value: Any) -> Any:
    return "" if value is None else value


CLASSIFY_COLUMNS: list[Column] = [
    ("architecture", "architecture", _text),
    ("seed", "seed", _text),
    ("status", "status", _text),
    ("test_accuracy", "test acc (%)", _fixed(1, 100)),
    ("generalization_gap", "gap (pts)", _fixed(1, 100)),
    ("params", "params (M)", _fixed(2, 1e-6)),
    ("flops_per_sample", "FLOPs/sample (M)", _sig(3, 1e-6)),
    ("train_throughput", "train (samples/s)", _sig(3)),
    ("infer_throughput", "infer (samples/s)", _sig(3)),
    ("latency_p50_ms", "latency p50 (ms)", _sig(3)),
    ("latency_p95_ms", "latency p95 (ms)", _sig(3)),
    ("peak_memory_mb", "train peak mem (MB)", _sig(3)),
    ("train_time_s", "train time (s)", _sig(3)),
    ("time_to_target_s", "time to target (s)", _sig(3)),
]

GENERATOR_COLUMNS: list[Column] = [
    ("architecture", "architecture", _text),
    ("seed", "seed", _text),
    ("status", "status", _text),
    ("task", "task", _text),
    ("fid", "FID", _sig(3)),
    ("kid", "KID", _sig(3)),
    ("test_nll", "test NLL (nats)", _sig(4)),
    ("test_neg_elbo", "test -ELBO (nats)", _sig(4)),
    ("generator_params", "params G (M)", _fixed(2, 1e-6)),
    ("discriminator_params", "params D (M)", _fixed(2, 1e-6)),
    ("flops_per_sample", "FLOPs/sample (M)", _sig(3, 1e-6)),
    ("generate_throughput", "generate (samples/s)", _sig(3)),
    ("train_throughput", "train (samples/s)", _sig(3)),
    ("peak_memory_mb", "train peak mem (MB)", _sig(3)),
    ("train_time_s", "train time (s)", _sig(3)),
    ("fid_classifier_accuracy", "FID ref acc (%)", _fixed(1, 100)),
]

TASK_COLUMNS: dict[str, list[Column]] = {
    "classify": CLASSIFY_COLUMNS,
    "vae": GENERATOR_COLUMNS,
    "gan": GENERATOR_COLUMNS,
}
SHARED_TABLES: dict[str, tuple[str, ...]] = {"generators": ("vae", "gan")}  # tasks compared in one table


def task_table(records: list[dict[str, Any]], task: str) -> str:
    """A markdown table of the records of `task` or SHARED_TABLES name, one row per record, failures with their error."""
    tasks = SHARED_TABLES.get(task, (task,))
    columns = TASK_COLUMNS.get(tasks[0], CLASSIFY_COLUMNS[:3])
    rows = []
    for record in (r for r in records if r.get("task") in tasks):
        row = [fmt(record.get(key)) for key, _, fmt in columns]
        if record.get("status") != "ok":
            row[2] = f"{record.get('status')}: {_short(record.get('error'))}"
        rows.append(row)
    return tabulate(rows, headers=[header for _, header, _ in columns], tablefmt="github", disable_numparse=True)


def tables(records: list[dict[str, Any]]) -> str:
    """Every task's table (generators share one) under a heading naming the task and dataset."""
    table_of = {task: table for table, tasks in SHARED_TABLES.items() for task in tasks}
    parts = []
    for table in dict.fromkeys(table_of.get(r.get("task"), r.get("task")) for r in records):
        tasks = SHARED_TABLES.get(table, (table,))
        datasets = ", ".join(dict.fromkeys(str(r.get("dataset")) for r in records if r.get("task") in tasks))
        parts.append(f"### {table} on {datasets}\n\n{task_table(records, table)}")
    return "\n\n".join(parts)


def frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Every record as one flat row; list values (curves, repeats) become JSON strings."""
    flat = [{k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()} for r in records]
    return pd.DataFrame(flat)


def write_csv(records: list[dict[str, Any]], path: Path) -> Path:
    frame(records).to_csv(path, index=False)
    return path


def _short(text: Any, limit: int = 60) -> str:
    line = str(text or "").splitlines()[0] if text else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"
