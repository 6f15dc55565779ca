"""How one pair runs: a `Job` (everything one architecture, mode and seed need), the `Strategy` that executes
jobs (this one in this process; bench.run.isolation in a fresh child process, the default; bench.run.parallel
on a data-parallel group), and `run_pair`, what every strategy finally calls for one pair: it builds the model
and runs its task's sequence (bench.tasks.sequence), and ends as a record.

A failure to build, train or measure becomes a `failed` record with its error, a non-finite loss a
`diverged` one; either way the suite (bench.run.suite) goes on.
"""

from __future__ import annotations

import gc
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

import architectures

from ..configs import RunConfig
from ..data import datasets
from ..errors import UserError
from ..measure import load, memory, phases, utilization
from ..measure.modes import Mode, compile_seconds, fresh_compiler
from ..results import schema
from ..tasks import TASKS
from ..tasks.base import Diverged, Group, RunContext

FINISHED = ("ok", "diverged")  # statuses a resumed run keeps; `failed` pairs are rerun with --retry-failed


@dataclass(frozen=True, kw_only=True)
class Job:
    """Everything one (architecture, mode, seed) needs to run, in this process or another; `mode` is resolved."""

    name: str
    seed: int
    config: RunConfig
    data: datasets.ImageData
    device: torch.device
    run_dir: Path
    quiet: bool
    arch_modules: tuple[str, ...] = ()
    isolation: str = "none"
    mode: Mode = field(default_factory=Mode)
    shard: str | None = None  # "K/N" of a sharded sweep
    measure_only: bool = False  # the cost figures alone, no training (`archbench speed`)
    max_memory_mb: float | None = None  # a training step's peak memory above this is out of memory
    peak_size: int | None = None  # the matmul the pair's process times for its peak after its run; None: none
    extra: dict[str, Any] = field(default_factory=dict)  # fields the record starts with besides schema.start's

    def start_record(self, world_size: int = 1) -> dict[str, Any]:
        """The fields this pair's record starts with (bench.results.schema.start); `failed` until a run says otherwise."""
        origin = schema.Origin(
            run_id=self.run_dir.name, suite=self.config.suite, shard=self.shard, world_size=world_size,
            isolation=self.isolation,
        )
        record = schema.start(
            architectures.get_spec(self.name), self.seed, origin, data=self.data, device=self.device,
            settings=self.config.settings_of(self.name), measure=self.config.measure, mode=self.mode,
        )
        return {**record, **self.extra}


class Strategy:
    """How the pairs of a suite execute. This one runs each in this process (`--isolation none`).

    Subclasses run them in child processes or on data-parallel groups. A strategy whose `writes` is False
    (a rank other than 0 under torchrun) runs every pair but leaves the folder, the records and the echo
    to the rank that writes.
    """

    isolation = "none"
    writes = True
    compiles = True  # whether the strategy can run compiling modes
    budgets = True  # whether it can train to a time or FLOPs budget (its ranks would have to agree where to stop)

    def select(self, names: list[str], echo: Callable[[str], None]) -> list[str]:
        """The architectures of `names` this strategy can run (echoing why it skips others)."""
        return names

    def prepare(self, names: list[str], dataset: str = "") -> None:
        """Called once with the architectures the suite runs and its dataset's name, before the data is loaded: a
        strategy that starts processes can start what they share (bench.run.isolation) meanwhile."""

    def device(self, config: RunConfig) -> torch.device:
        return resolve_device(config.device)

    def load(self, config: RunConfig, device: torch.device) -> datasets.ImageData:
        return self.place(load_data(config), device)

    def place(self, data: datasets.ImageData, device: torch.device) -> datasets.ImageData:
        """`data` (on the CPU) where the pairs this strategy runs take it from: here, on the run's device."""
        return data.to(device)

    def agree(self, run_dir: Path | None) -> Path:
        """The run folder every process of the run uses (the writer's)."""
        return run_dir

    def describe(self, device: torch.device) -> str:
        return f"{device}, each architecture in this process"

    def info(self) -> dict[str, Any]:
        """What run.json records of this strategy, so that `--resume` can rebuild it."""
        return {"isolation": self.isolation}

    def execute(self, job: Job) -> dict[str, Any]:
        return run_pair(job)

    def execute_timed(self, job: Job) -> dict[str, Any]:
        """`execute(job)`'s record with `pair_wall_s`: seconds from asking for the pair to having its record here
        (a child's start-up and hand-back included)."""
        started = time.perf_counter()
        record = self.execute(job)
        record["pair_wall_s"] = time.perf_counter() - started
        return record

    def run_all(self, jobs: list[Job], done: Callable[[Job, dict[str, Any]], None]) -> None:
        """Execute every job, handing each record to `done` as it ends (from one thread at a time)."""
        for job in jobs:
            done(job, self.execute_timed(job))

    def close(self) -> None:
        """Release what the strategy holds (processes, groups); called once the suite ends or is interrupted."""


class OverMemoryLimit(RuntimeError):
    """A pair's training step took more memory than its limit (`Job.max_memory_mb`): on a CPU, what running
    out of memory is on CUDA."""


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


def load_data(config: RunConfig, download: bool | None = None) -> datasets.ImageData:
    """The run's dataset on the CPU, cut to its limits; `download` overrides the configuration's."""
    download = config.download if download is None else download
    return datasets.load(config.dataset, config.data_root, download, config.limit_train, config.limit_test, config.data)


def run_pair(
    job: Job, group: Group | None = None, train: Callable[..., None] | None = None, extra: dict[str, Any] | None = None,
    spawned: float | None = None,
) -> dict[str, Any]:
    """One architecture in one mode at one seed, as a record; never raises for the architecture's own errors.

    The model is built, then trained, evaluated and measured by its task's `run` (or by `train`, with the
    same arguments). With a data-parallel `group`, errors other than divergence propagate, so that the
    launcher stops the group and records the failing rank. `extra` fields are added before training.
    A compiling mode's compilation time is `compile_time_s` (torch.compile's own clock, over the whole pair);
    a failure to compile is a failed record that says so. `phase_s` says where the pair's time went
    (bench.measure.phases), its `startup` the seconds since `spawned` (time.monotonic() when the pair's
    process was asked to start; None in this process).
    """
    startup = {"startup": max(0.0, time.monotonic() - spawned)} if spawned is not None else {}
    with phases.recording() as clock:
        record = _run_pair(job, group, train, extra)
    record["phase_s"] = {**startup, **clock.totals()}
    return record


def _run_pair(
    job: Job, group: Group | None, train: Callable[..., None] | None, extra: dict[str, Any] | None
) -> dict[str, Any]:
    config, device = job.config, job.device
    spec = architectures.get_spec(job.name)
    settings = config.settings_of(job.name)
    record = job.start_record(group.world_size if group else 1)
    record.update(extra or {}, allocator=memory.steady_allocator())
    _settle_heap()
    if job.mode.compile:
        fresh_compiler()
    started, compiled = time.perf_counter(), compile_seconds()
    with load.machine_load() as machine:
        try:
            _build_and_run(job, spec.task, settings, group, train, record)
            record.update(status="ok", train_loop_throughput=schema.loop_throughput(record))
        except Diverged as error:
            record.update(status="diverged", error=str(error), diverged_step=error.step)
        except Exception as error:
            if group is not None:  # a rank's failure must end the group; the launcher records it
                raise
            what = "torch.compile failed: " if job.mode.compile and _from_compiler(error) else ""
            record.update(
                status="failed", error=f"{what}{type(error).__name__}: {error}", traceback=traceback.format_exc(),
                out_of_memory=isinstance(error, (torch.cuda.OutOfMemoryError, OverMemoryLimit)),
            )
        finally:
            record["wall_time_s"] = time.perf_counter() - started
            record["compile_time_s"] = compile_seconds() - compiled if job.mode.compile else None
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    record.update(machine)
    if record["status"] == "ok" and job.peak_size is not None:
        peak = utilization.matmul_peak(device, job.mode, job.peak_size)
        record.update(
            pair_peak_flops=peak["peak_flops"], pair_peak_flops_iqr=peak["peak_flops_iqr"], peak_method=peak["peak_method"]
        )
    return record


def _build_and_run(
    job: Job, task_name: str, settings: Any, group: Group | None, train: Callable[..., None] | None, record: dict
) -> None:
    """Build the model at the job's seed and hand it to its task loop (or `train`), which fills `record`."""
    task = TASKS.get(task_name)
    if task is None:
        raise RuntimeError(f"no task loop for task {task_name!r} (known: {', '.join(TASKS)})")
    torch.manual_seed(job.seed)
    with phases.phase("build"):
        model = architectures.create(job.name, job.data.input_shape, job.data.num_classes, **settings.model_overrides())
        model = model.to(job.device)
    progress = progress_factory(job.name, job.seed, job.quiet, job.mode.name)
    context = RunContext(
        device=job.device, seed=job.seed, measure=job.config.measure, run_dir=job.run_dir, progress=progress,
        group=group or Group(), fid=job.config.fid, mode=job.mode,
    )
    if job.measure_only:
        task.run(model, job.data, settings, context, record, train=False)
    else:
        (train or task.run)(model, job.data, settings, context, record)
    peak = record.get("peak_memory_mb")
    if job.max_memory_mb is not None and peak is not None and peak > job.max_memory_mb:
        raise OverMemoryLimit(f"training at batch {settings.batch_size} took {peak:.0f} MB, over the limit of {job.max_memory_mb:g} MB")


def _settle_heap() -> None:
    """Collect what earlier work left unreachable, then set every object still alive aside (gc.freeze), so that the
    collections during the pair (memory measurement, the end of the pair, Python's own) look at the pair's
    objects only: with torch imported, a full collection takes 60-80 ms (twice that in a test process) and a pair
    made two or three."""
    gc.collect()
    gc.freeze()


def _from_compiler(error: BaseException) -> bool:
    """Whether `error` was raised by torch.compile (Dynamo, AOTAutograd or a backend) rather than by the model."""
    dynamo = sys.modules.get("torch._dynamo.exc")
    return dynamo is not None and isinstance(error, dynamo.TorchDynamoException)


def progress_factory(name: str, seed: int, quiet: bool, mode: str = "fp32"):
    def progress(total: int, description: str):
        label = f"{name} {mode} seed {seed} {description}"
        return tqdm(total=total, desc=label, unit="step", leave=False, disable=quiet)

    return progress


def summary(record: dict[str, Any]) -> str:
    """A finished record as one line: architecture, mode, seed, status, then its task's quality figures (or its
    error)."""
    mode = f" {record['mode']:<12}" if record.get("mode", "fp32") != "fp32" else ""
    head = f"  {record['architecture']:<16}{mode} seed {record['seed']:<3} {record['status']:<8}"
    if record["status"] != "ok":
        return f"{head} {record['error']}"
    figures = TASKS[record["task"]].figures if record.get("task") in TASKS else ()
    quality = ", ".join(
        f"{f.key.replace('_', ' ')} {record[f.key]:.4g}" for f in figures if isinstance(record.get(f.key), (int, float))
    )
    return f"{head} {quality}  ({record['wall_time_s']:.1f} s)"
