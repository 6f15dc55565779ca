"""The suite loop: every (architecture, seed) runs in isolation and ends as one record appended to disk.

A failure to build, train or measure becomes a `failed` record with its error, a non-finite loss a
`diverged` one; either way the suite goes on.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

import architectures

from . import data as datasets
from . import store
from .config import RunConfig
from .errors import UserError
from .tasks import TASKS
from .tasks.base import Diverged, RunContext


CONFIG_FIELDS = ("task", "dataset", "input_shape", "train_samples", "test_samples", "device", "dtype", "world_size")


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA, else MPS, else CPU; asking for a device this machine lacks is a UserError."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise UserError(f"--device {name}: not available on this machine (torch {torch.__version__}); try --device cpu")
    if name not in ("cpu", "cuda", "mps"):
        raise UserError(f"unknown device {name!r} (valid: auto, cpu, cuda, mps)")
    return torch.device(name)


def run_suite(config: RunConfig, echo: Callable[[str], None] = print, command: str | None = None) -> Path:
    """Run every selected architecture for every seed of `config`; return the run folder holding the records.

    `command` is the command line recorded with every record (default: this process's).
    """
    try:
        names = architectures.resolve(config.architectures)
    except architectures.UnknownArchitecture as error:
        raise UserError(str(error)) from None
    device = resolve_device(config.device)
    data = datasets.load(config.dataset, config.data_root, config.download, config.limit_train, config.limit_test)
    data = data.to(device)
    run_dir = store.new_run_dir(Path(config.out), config.suite)
    environment = store.environment(device, command)
    store.write_run_info(run_dir, {"config": dataclasses.asdict(config), "environment": environment})
    quiet = config.quiet or not sys.stderr.isatty()
    echo(f"run {run_dir.name}: {len(names)} architecture(s) x {len(config.seeds)} seed(s) on {data.name}, {device}")
    for name in names:
        for seed in config.seeds:
            record = run_one(name, seed, data, config, device, run_dir, quiet)
            record.update(environment)
            store.append_record(run_dir, record)
            echo(summary(record))
    return run_dir


def run_one(
    name: str, seed: int, data: datasets.ImageData, config: RunConfig, device: torch.device, run_dir: Path, quiet: bool
) -> dict[str, Any]:
    """One architecture at one seed, as a record; never raises for the architecture's own errors."""
    spec = architectures.get_spec(name)
    task = TASKS.get(spec.task)
    settings = config.tasks.get(spec.task)
    record = new_record(name, seed, data, config, device, run_dir)
    started = time.perf_counter()
    model = None
    try:
        if task is None:
            raise RuntimeError(f"no task loop for task {spec.task!r} (known: {', '.join(TASKS)})")
        torch.manual_seed(seed)
        model = architectures.create(name, data.input_shape, data.num_classes, **settings.model_overrides()).to(device)
        context = RunContext(device, seed, config.measure, run_dir, progress_factory(name, seed, quiet), fid=config.fid)
        task.run(model, data, settings, context, record)
        record["status"] = "ok"
    except Diverged as error:
        record.update(status="diverged", error=str(error), diverged_step=error.step)
    except Exception as error:  # an architecture's failure is recorded, never fatal to the suite
        record.update(status="failed", error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc())
    finally:
        record["wall_time_s"] = time.perf_counter() - started
        del model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return record


def new_record(
    name: str, seed: int, data: datasets.ImageData, config: RunConfig, device: torch.device, run_dir: Path,
    world_size: int = 1,
) -> dict[str, Any]:
    """The fields every record of `name` at `seed` starts with; its status is `failed` until a run says otherwise.

    `config_id` is a short hash of everything that makes two records comparable (task, data, device,
    world size and the task's settings): records of other seeds or runs with the same configuration
    share it; reports aggregate and the regression gate matches records by (architecture, config_id).
    """
    spec = architectures.get_spec(name)
    settings = config.tasks.get(spec.task)
    record = {
        "run_id": run_dir.name,
        "suite": config.suite,
        "architecture": name,
        "family": spec.family,
        "task": spec.task,
        "dataset": data.name,
        "input_shape": list(data.input_shape),
        "train_samples": len(data.train_x),
        "test_samples": len(data.test_x),
        "device": device.type,
        "dtype": str(data.train_x.dtype).removeprefix("torch."),
        "seed": seed,
        "world_size": world_size,
        **(dataclasses.asdict(settings) if settings else {}),
        **{f"measure_{k}": v for k, v in dataclasses.asdict(config.measure).items()},
        "status": "failed",
        "error": None,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    fields = [*CONFIG_FIELDS, *(f.name for f in dataclasses.fields(settings))] if settings else CONFIG_FIELDS
    described = json.dumps({key: record.get(key) for key in fields}, sort_keys=True)
    record["config_id"] = hashlib.sha1(described.encode()).hexdigest()[:10]
    return record


def progress_factory(name: str, seed: int, quiet: bool):
    def progress(total: int, description: str):
        return tqdm(total=total, desc=f"{name} seed {seed} {description}", unit="step", leave=False, disable=quiet)

    return progress


def summary(record: dict[str, Any]) -> str:
    head = f"  {record['architecture']:<16} seed {record['seed']:<3} {record['status']:<8}"
    if record["status"] != "ok":
        return f"{head} {record['error']}"
    quality = ", ".join(
        f"{key.replace('_', ' ')} {record[key]:.4g}"
        for key in ("test_accuracy", "fid", "test_nll")
        if isinstance(record.get(key), (int, float))
    )
    return f"{head} {quality}  ({record['wall_time_s']:.1f} s)"

