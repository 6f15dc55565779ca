"""THE suite loop: every (architecture, seed) of a run ends as one record appended to its run folder.

`run_suite` resolves the names, the device and the data, creates (or, to resume, reopens) the run folder,
writes `run.json`, echoes progress and appends each record as it ends. How one pair executes is the
`Strategy` it is given: in a fresh child process (bench.run.isolation, the default), in this process, or on a
data-parallel group (bench.run.parallel). `run_pair` is what every strategy finally calls for one pair.

A failure to build, train or measure becomes a `failed` record with its error, a non-finite loss a
`diverged` one; either way the suite goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
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

from ..data import datasets
from ..data.stream import FolderStream
from .. import configs
from ..measure import load, memory, phases, utilization
from ..results import schema
from . import shards
from ..results import store
from ..configs import RunConfig
from .environment import capture
from ..errors import Terminated, UserError
from ..measure.modes import Mode, compile_seconds, fresh_compiler
from ..results.records import RECORDS, read_records
from ..tasks import FIGURES, TASKS
from ..tasks import reference
from ..tasks.base import Diverged, Group, RunContext

FINISHED = ("ok", "diverged")  # statuses a resumed run keeps; `failed` pairs are rerun with --retry-failed


@dataclass(frozen=True)
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
        record = schema.start(
            self.name, self.seed, run_id=self.run_dir.name, suite=self.config.suite, data=self.data,
            device=self.device, settings=self.config.settings_of(self.name),
            measure=self.config.measure, mode=self.mode, world_size=world_size, isolation=self.isolation,
            shard=self.shard,
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


class Interrupted(Exception):
    """The suite was stopped by SIGINT or SIGTERM; finished records are on disk, nothing partial is."""

    def __init__(
        self, signal_name: str, exit_code: int, done: int, total: int | None, run_dir: Path | None, resumable: bool = True
    ):
        self.signal_name, self.exit_code, self.done, self.total, self.run_dir = signal_name, exit_code, done, total, run_dir
        resume = f"; resume with: archbench run --resume {run_dir}" if run_dir and resumable else ""
        resume += f"; what finished is in {run_dir}" if run_dir and not resumable else ""
        of = f" of {total}" if total is not None else ""
        super().__init__(f"interrupted ({signal_name}) after {done}{of} runs{resume}")


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


def run_suite(
    config: RunConfig,
    strategy: Strategy | None = None,
    echo: Callable[[str], None] = print,
    command: str | None = None,
    arch_modules: tuple[str, ...] = (),
    resume: Path | None = None,
    retry_failed: bool = False,
    shard: shards.Shard | None = None,
    profile: phases.SuiteProfile | None = None,
) -> Path | None:
    """Run every selected architecture for every seed of `config`; return the run folder holding the records
    (None in a process that does not write).

    The writing process holds the run folder as its one writer (bench.results.store.writing) until the suite ends.
    With `resume`, that run folder is reopened, a torn last record set aside, and the pairs it already holds as
    ok or diverged (and, unless `retry_failed`, as failed) are skipped, and a sharded run keeps to the pairs its
    run.json assigned it.
    With `shard`, only that part of the pairs runs (bench.run.shards) and run.json records the plan. `command` is
    the command line recorded with every record (default: this process's). `profile` gets each record written
    and the seconds before the first pair. Raises Interrupted on SIGINT or SIGTERM once the running pair is stopped.
    """
    strategy = strategy or Strategy()
    echo = echo if strategy.writes else (lambda line: None)
    names = architectures_of(config, strategy, echo)
    device = strategy.device(config)
    modes = modes_of(config, strategy, device, names)
    peak_sizes = peak_sizes_of(modes, device) if strategy.writes else {}
    strategy.prepare(names, config.dataset)
    data = strategy.load(config, device)
    _check_streamed(data, names)
    pairs = [(name, mode, seed) for name in names for mode in modes for seed in config.seeds]
    planned = len(pairs)
    plan = store.read_run_info(resume).get("shard") if resume is not None else None
    if plan is None and shard is not None:
        plan = shards.plan(pairs, shard, config, data)
    if plan is not None:
        assigned = {tuple(p) for p in plan["pairs"]}
        pairs = [p for p in pairs if p in assigned]
    done: dict[tuple[str, str, int], str] = {}
    best_peaks: dict[str, float] = {}
    run_dir = None
    writer = contextlib.ExitStack()  # this process as the run folder's one writer, until the suite ends
    if strategy.writes:
        environment = capture(device, command)
        if resume is None:
            info = {"config": dataclasses.asdict(config), **strategy.info(), "arch_modules": list(arch_modules),
                    "working_dir": str(Path.cwd()), "shard": plan, "environment": environment}
            run_dir = new_run(config, info)
            writer.enter_context(store.writing(run_dir))
        else:
            run_dir = resume
            writer.enter_context(store.writing(run_dir))
            store.set_aside_torn(run_dir)
            if (run_dir / RECORDS).is_file():
                recorded = read_records(run_dir / RECORDS)
                done, best_peaks = {schema.pair(r): r["status"] for r in recorded}, best_peaks_of(recorded)
    run_dir = strategy.agree(run_dir)
    todo = [p for p in pairs if p not in done or (retry_failed and done[p] not in FINISHED)]
    quiet = config.quiet or not strategy.writes or not sys.stderr.isatty()
    resumed = f", resuming: {len(pairs) - len(todo)} already recorded" if resume else ""
    in_modes = f" x {len(modes)} modes ({', '.join(modes)})" if len(modes) > 1 else f" in {next(iter(modes))}"
    sharded = f"shard {plan['shard']} ({len(pairs)} of {planned} pairs, ~{plan['cost_share']:.0%} of the cost) of " if plan else ""
    age = phases.process_age_s()
    started = f"; started in {age:.1f} s"
    if profile is not None:
        profile.before_pairs_s = age
    echo(
        f"run {run_dir.name}: {sharded}{len(names)} architecture(s){in_modes} x {len(config.seeds)} seed(s) "
        f"on {data.name}, {strategy.describe(device)}{resumed}{started}"
    )
    finished = len(pairs) - len(todo)
    jobs = [
        Job(
            name, seed, config, data, device, run_dir, quiet, tuple(arch_modules), strategy.isolation, modes[mode],
            plan["shard"] if plan else None, peak_size=peak_sizes.get(mode),
        )
        for name, mode, seed in todo
    ]

    def record_one(job: Job, record: dict[str, Any]) -> None:
        nonlocal finished
        if strategy.writes:
            pair = (job.name, job.mode.name, job.seed)
            finish(record, environment, best_peaks)
            if profile is not None:
                profile.add(record)
            retried = (lambda r, this=pair: schema.pair(r) == this) if pair in done else None
            store.append_record(run_dir, record, replacing=retried)
            echo(summary(record))
        finished += 1

    try:
        strategy.run_all(jobs, record_one)
    except KeyboardInterrupt:
        raise Interrupted("SIGINT", 130, finished, len(pairs), run_dir if strategy.writes else None) from None
    except Terminated:
        raise Interrupted("SIGTERM", 143, finished, len(pairs), run_dir if strategy.writes else None) from None
    finally:
        strategy.close()
        writer.close()
    return run_dir if strategy.writes else None


def finish(record: dict[str, Any], environment: dict[str, Any], best_peaks: dict[str, float]) -> None:
    """Add to a pair's record, as the writing process gets it, the environment and, where the pair timed its matmul
    peak (`pair_peak_flops`), the run's peak: `peak_flops`, the best pair peak of that matmul among the run's
    records so far, this one's included (`best_peaks`, by `peak_method`, is updated), with the share of it the
    record's figures reached (bench.measure.utilization)."""
    record.update(environment)
    if record.get("pair_peak_flops"):
        record["peak_flops"] = _take_best(best_peaks, record)
        task = TASKS.get(record.get("task"))
        record.update(utilization.figures(record, task.training_flops_factor if task is not None else None))


def best_peaks_of(records: list[dict[str, Any]]) -> dict[str, float]:
    """The best pair peak of each matmul (`peak_method`) among `records` (a resumed run's), for `finish`."""
    best: dict[str, float] = {}
    for record in records:
        if record.get("pair_peak_flops"):
            _take_best(best, record)
    return best


def _take_best(best: dict[str, float], record: dict[str, Any]) -> float:
    """The best pair peak of the record's matmul so far, the record's own included, kept in `best`."""
    method = record["peak_method"]
    best[method] = max(best.get(method, 0.0), record["pair_peak_flops"])
    return best[method]


def peak_sizes_of(modes: dict[str, Mode], device: torch.device) -> dict[str, int]:
    """The side of the matmul each mode's pairs time for their peak (bench.measure.utilization.peak_size), chosen
    before any other process starts; says once on stderr what a mode's precision lacks where the device only
    emulates it."""
    sizes = {name: utilization.peak_size(device, utilization.compute_dtype(mode)) for name, mode in modes.items()}
    for name, mode in modes.items():
        if mode.emulated:
            print(f"warning: {utilization.emulation_note(device, mode, sizes[name])}", file=sys.stderr)
    return sizes


def architectures_of(config: RunConfig, strategy: Strategy, echo: Callable[[str], None]) -> list[str]:
    """The suite's architectures that `strategy` runs; UserError for an unknown name, or for an FID cache folder
    that generators would need and cannot write to."""
    try:
        names = strategy.select(architectures.resolve(config.architectures), echo)
    except architectures.UnknownArchitecture as error:
        raise UserError(str(error)) from None
    if any(TASKS[architectures.get_spec(name).task].generative for name in names):
        what = "FID cache folder ([fid] cache_dir or $ARCHBENCH_FID_CACHE)"
        store.writable_folder(reference.cache_dir(config.fid), what, create=False)
    return names


def _check_streamed(data: Any, names: list[str]) -> None:
    """UserError when generators would train on a streamed folder: their tasks take their data in memory."""
    generators = [n for n in names if TASKS[architectures.get_spec(n).task].generative]
    if isinstance(data, FolderStream) and generators:
        raise UserError(
            f"{generators[0]} is a generator, and generators train on data in memory, but {data.name} streams; "
            "pass --data-path memory --no-augment (or leave the generators out)"
        )


def modes_of(config: RunConfig, strategy: Strategy, device: torch.device, names: list[str]) -> dict[str, Mode]:
    """The suite's modes resolved for `device`, by name; UserError for what `strategy` cannot run (compiling
    modes, training budgets of architectures `names`)."""
    modes = {mode.name: mode.resolved(device) for mode in configs.modes(config)}
    if not strategy.compiles and any(mode.compile for mode in modes.values()):
        raise UserError("compiling modes are not supported in data-parallel runs (--nproc, torchrun); drop compile")
    budgeted = [name for name in names if getattr(config.settings_of(name), "budgeted", False)]
    if not strategy.budgets and budgeted:
        raise UserError(
            f"training budgets are not supported in data-parallel runs (--nproc, torchrun): {budgeted[0]} has one; use epochs"
        )
    return modes


def new_run(config: RunConfig, info: dict[str, Any]) -> Path:
    """A fresh run folder under the configuration's `out`, holding `info` as its run.json."""
    run_dir = store.new_run_dir(Path(config.out), config.suite)
    try:
        store.write_run_info(run_dir, info)
    except UserError:
        run_dir.rmdir()  # nothing to resume in it
        raise
    return run_dir


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
        job.device, job.seed, job.config.measure, job.run_dir, progress, group or Group(), job.config.fid, job.mode
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


QUALITY_KEYS = tuple(figure.key for figure in FIGURES if figure.kind == "quality")  # what a summary line names


def summary(record: dict[str, Any]) -> str:
    """A finished record as one line: architecture, mode, seed, status, then its quality figures (or its error)."""
    mode = f" {record['mode']:<12}" if record.get("mode", "fp32") != "fp32" else ""
    head = f"  {record['architecture']:<16}{mode} seed {record['seed']:<3} {record['status']:<8}"
    if record["status"] != "ok":
        return f"{head} {record['error']}"
    quality = ", ".join(
        f"{key.replace('_', ' ')} {record[key]:.4g}" for key in QUALITY_KEYS if isinstance(record.get(key), (int, float))
    )
    return f"{head} {quality}  ({record['wall_time_s']:.1f} s)"
