"""The record's schema: one flat JSON object per (architecture, seed), the contract between runs, reports and the gate.

A record starts with the fields `start` gives it (identity, data, settings, provenance, `config_id`, and
`record_version`); its task loop adds the task's figures (the task table's `keys`, bench.tasks), the runner
adds how it ended and the environment (`ENVIRONMENT_KEYS`). `record_version` changes whenever a key changes meaning or a figure
is measured differently, so that the gate can say "not comparable" instead of comparing unlike things; the
versions and what changed in each are bench.results.records.VERSIONS, which also reads records.

Nothing here imports torch or the registry (`start` is handed the architecture's entry): readers of records may
import this module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import uuid
from datetime import datetime, timezone
from typing import Any

from .records import VERSIONS

RECORD_VERSION = VERSIONS[-1].number  # what a run writes: the newest version (the history: bench.results.records)

# What makes two records comparable besides the task's settings: records of other seeds or runs that agree
# on all of these share a config_id.
CONFIG_FIELDS = (
    "task", "dataset", "input_shape", "train_samples", "test_samples", "device", "dtype", "world_size",
    "precision", "memory_format", "compile", "compile_backend",
)

COMMON_KEYS = (
    "record_version", "record_id", "run_id", "suite", "shard", "architecture", "family", "task", "dataset", "input_shape",
    "train_samples", "test_samples", "device", "dtype", "seed", "world_size", "isolation", "allocator",
    "mode", "precision", "emulated_precision", "memory_format", "compile", "compile_backend", "compute_dtype", "compile_time_s",
    "architecture_source", "architecture_source_hash", "config_id", "started_at",
    "status", "error", "traceback", "stderr_tail", "diverged_step", "wall_time_s", "pair_wall_s", "phase_s",
    "load_1min", "other_cpu_s", "other_cpu_share", "train_loop_throughput", "loop_start_s", "loop_start_samples",
    "params", "trainable_params", "flops_per_sample", "train_throughput", "train_throughput_iqr",
    "train_throughput_repeats", "train_throughput_windows", "train_throughput_window_steps",
    "latency_p50_ms", "latency_p95_ms", "latency_p50_ms_repeats",
    "peak_memory_mb", "peak_memory_method", "train_time_s", "curve_train_time_s",
    "budget_s", "budget_flops", "train_flops_per_step", "steps_trained", "epochs_trained",
    "pair_peak_flops", "pair_peak_flops_iqr", "peak_flops", "peak_method", "train_flop_rate", "train_utilization", "infer_flop_rate",
    "infer_utilization", "out_of_memory",
)
# Data-parallel records add these (see docs/distributed-and-sharded.md).
DATA_PARALLEL_KEYS = (
    "backend", "global_batch_size", "threads_per_rank", "dist_timeout_s", "per_rank_throughput",
    "single_process_throughput", "scaling_efficiency", "ddp_step_ms", "ddp_step_no_sync_ms",
    "allreduce_wait_share", "allreduce_wait_method", "failed_rank", "rank_errors",
)
ENVIRONMENT_KEYS = (
    "python", "torch", "torchvision", "device_name", "cpu", "cpu_threads", "cuda", "hostname", "git_commit", "command",
)
# What a folder dataset's records add (bench.data.stream.folder_fields); those of FOLDER_FIELDS enter config_id,
# so that records of other folders' sizes, augmentation, normalization or data paths are not compared.
FOLDER_FIELDS = ("data_path", "image_size", "augmentation", "normalization")
FOLDER_KEYS = (
    "data_folder", "data_layout", *FOLDER_FIELDS, "normalize_mean", "normalize_std", "num_workers", "images_skipped",
    "images_skipped_examples", "files_ignored", "loader_throughput", "loader_throughput_iqr",
)
# Settings added within version 3 (training budgets): they enter config_id only when set, so that the records
# of runs without them keep the config_id they had.
UNSET_OMITTED = ("budget_s", "budget_flops")
Pair = tuple[str, str, int]  # (architecture, mode, seed): what a record is about (`pair`)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Origin:
    """Where a record comes from: its run (`run_id`), suite, and part of a sharded sweep (`shard`, "2/3"; None for
    a whole suite), and how its pair ran there (the processes of its data-parallel group, its isolation)."""

    run_id: str
    suite: str
    shard: str | None = None
    world_size: int = 1
    isolation: str = "process"


def start(
    spec: Any, seed: int, origin: Origin, *, data: Any, device: Any, settings: Any, measure: Any, mode: Any
) -> dict[str, Any]:
    """The fields every record of the architecture `spec` describes (its registry entry: name, family, task,
    provenance) in `mode` at `seed`, from `origin`, starts with; `failed` until a run says otherwise.

    `data` is the run's ImageData or FolderStream, `settings` the task's training settings (a dataclass, or None when the
    task has none), `measure` the measurement settings and `mode` the resolved bench.measure.modes.Mode.
    """
    record = {
        "record_version": RECORD_VERSION,
        "record_id": uuid.uuid4().hex,  # this record, wherever it is copied: readers count it once
        "run_id": origin.run_id,
        "suite": origin.suite,
        "shard": origin.shard,
        "architecture": spec.name,
        "family": spec.family,
        "task": spec.task,
        "dataset": data.name,
        "input_shape": list(data.input_shape),
        "train_samples": data.train_samples,
        "test_samples": data.test_samples,
        "device": device.type,
        "dtype": data.dtype,
        "seed": seed,
        "world_size": origin.world_size,
        "isolation": origin.isolation,
        **mode.record(),
        **spec.provenance,
        **(dataclasses.asdict(settings) if settings else {}),
        **{f"measure_{k}": v for k, v in dataclasses.asdict(measure).items()},
        **(data.fields or {}),
        "status": "failed",
        "error": None,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    keys = [f.name for f in dataclasses.fields(settings)] if settings else []
    keys = [key for key in keys if key not in UNSET_OMITTED or record[key] is not None]
    record["config_id"] = config_id(record, [*keys, *(key for key in FOLDER_FIELDS if key in record)])
    return record


def config_id(record: dict[str, Any], setting_keys: list[str]) -> str:
    """A short hash of everything that makes two records comparable: CONFIG_FIELDS and the task's settings.

    Records of other seeds or runs with the same configuration share it; reports aggregate and the
    regression gate matches records by (architecture, config_id). How a record was isolated is left out:
    the figures must not depend on it.
    """
    described = json.dumps({key: record.get(key) for key in (*CONFIG_FIELDS, *setting_keys)}, sort_keys=True)
    return hashlib.sha1(described.encode()).hexdigest()[:10]


def loop_throughput(record: dict[str, Any]) -> float | None:
    """Samples per second the record's own training loop achieved in its epochs after the first (the first
    holds warm-up), from `train_samples` and the cumulative `curve_train_time_s`; in a run of one epoch, in its
    second half (from `loop_start_s` and `loop_start_samples`); None otherwise (a time budget's single epoch).

    The clock that the timed windows' `train_throughput` must agree with."""
    times = record.get("curve_train_time_s") or []
    trained = record.get("epochs_trained")
    if isinstance(trained, (int, float)) and trained < len(times):  # a budget's partial last epoch
        times = times[: math.floor(trained)]
    start_s, start_samples = record.get("loop_start_s"), record.get("loop_start_samples")
    if len(times) == 1 and start_s is not None and start_samples is not None and times[0] > start_s:
        return (record["train_samples"] - start_samples) / (times[0] - start_s)
    if len(times) < 2 or not times[-1] > times[0]:
        return None
    return (len(times) - 1) * record["train_samples"] / (times[-1] - times[0])


def pair(record: dict[str, Any]) -> Pair:
    """The (architecture, mode, seed) a record is about (records before modes: fp32)."""
    return record["architecture"], record.get("mode") or "fp32", record["seed"]
