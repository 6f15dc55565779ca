"""Data-parallel runs: `archbench run --nproc N`, and `archbench run` as the ranks of a torchrun group.

`--nproc N` launches, for each architecture and seed, its own group of N local processes through torchrun's
launcher API (torch.distributed.launcher.api.elastic_launch, the engine of the `torchrun` command). torch's
elastic agent watches the group and stops every rank as soon as one ends badly; the launcher then writes a
`failed` record naming the rank whose failure ended the group, with its error, and the suite goes on. A
group that finishes hands rank 0's record to the launcher, which appends it.

Under a plain `torchrun ... -m bench run` every rank runs the whole suite together and rank 0 appends the
records; there a failing rank ends the whole suite (torchrun stops the group), keeping what finished.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

import architectures

from . import data as datasets
from . import ddp, failures, runner, store
from .config import RunConfig
from .errors import UserError
from .tasks.base import Diverged, RunContext

DEFAULT_TIMEOUT = 300.0
_LAUNCHER_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")
_AGENT_LOGGERS = ("torch.distributed.elastic.multiprocessing.api", "torch.multiprocessing.spawn")


@dataclass(frozen=True)
class Options:
    """How a data-parallel run is launched: the --nproc, --backend, --scaling and --dist-timeout flags.

    `nproc` is None under torchrun, which has already started the processes.
    """

    nproc: int | None = None
    backend: str = "auto"
    scaling: bool = False
    timeout: float = DEFAULT_TIMEOUT


def from_flags(nproc: int | None, backend: str | None, scaling: bool, timeout: float | None) -> Options | None:
    """The data-parallel options of a run, or None for an ordinary single-process run.

    Raises UserError for --nproc under torchrun, and for the other flags without --nproc or torchrun.
    """
    if nproc is not None and dist.is_torchelastic_launched():
        raise UserError("--nproc starts torchrun itself; under torchrun leave it out")
    if nproc is None and not dist.is_torchelastic_launched():
        flags = (("--backend", backend), ("--scaling", scaling), ("--dist-timeout", timeout))
        given = [flag for flag, value in flags if value]
        if given:
            raise UserError(f"{given[0]} applies to data-parallel runs: add --nproc N, or launch with torchrun")
        return None
    return Options(nproc, backend or "auto", bool(scaling), timeout or DEFAULT_TIMEOUT)


def run_suite(
    config: RunConfig, options: Options, arch_modules: list[str], echo: Callable[[str], None], command: str | None = None
) -> Path | None:
    """Run the suite data-parallel; the run folder, or None on the ranks other than 0 under torchrun.

    `command` is the command line recorded with every record (default: this process's).
    """
    if options.nproc is None:
        return run_ranks(config, options, echo, command)
    return launch_suite(config, options, arch_modules, echo, command)


def launch_suite(
    config: RunConfig, options: Options, arch_modules: list[str], echo: Callable[[str], None], command: str | None = None
) -> Path:
    """`--nproc N`: one group of N local processes per architecture and seed, each ending as one record."""
    names = _classifiers(config, echo)
    device, backend = _device_and_backend(config, options.backend, options.nproc)
    options = dataclasses.replace(options, backend=backend)
    data = datasets.load(config.dataset, config.data_root, config.download, config.limit_train, config.limit_test)
    _check_shards(len(data.train_x), options.nproc)
    threads = _threads_per_rank(options.nproc)
    run_dir, environment = _new_run(config, options, device, command)
    echo(
        f"run {run_dir.name}: {len(names)} architecture(s) x {len(config.seeds)} seed(s) on {data.name}, "
        f"{options.nproc} x {device.type} processes ({backend}, {threads} thread(s) each)"
    )
    for name in names:
        for seed in config.seeds:
            record = launch_one(name, seed, data, config, options, device, threads, arch_modules, run_dir)
            record.update(environment)
            store.append_record(run_dir, record)
            echo(runner.summary(record))
    return run_dir


def launch_one(
    name: str, seed: int, data: datasets.ImageData, config: RunConfig, options: Options, device: torch.device,
    threads: int, arch_modules: list[str], run_dir: Path,
) -> dict[str, Any]:
    """One architecture at one seed on a fresh group of `options.nproc` processes, as a record.

    Never raises for the group's failures: a rank that fails makes a `failed` record naming the rank that
    caused it, and a launcher that fails (rendezvous, process start) one with the launcher's error.
    """
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="archbench-ranks-") as folder:
        launch = LaunchConfig(
            min_nodes=1,
            max_nodes=1,
            nproc_per_node=options.nproc,
            run_id=f"{run_dir.name}-{name}-{seed}",
            rdzv_backend="c10d",
            rdzv_endpoint="localhost:0",
            rdzv_configs={"timeout": int(options.timeout)},
            max_restarts=0,
            start_method=_start_method(),
            logs_specs=DefaultLogsSpecs(log_dir=os.path.join(folder, "torchelastic")),
        )
        args = (config, name, seed, data, run_dir, options, device.type, threads, arch_modules, folder)
        record = runner.new_record(name, seed, data, config, device, run_dir, options.nproc)
        record.update(_fields(options, options.nproc, config.tasks[record["task"]].batch_size, threads))
        try:
            with _launcher_signals():
                return elastic_launch(launch, _rank)(*args)[0]
        except ChildFailedError as error:
            reports = failures.read_reports(Path(folder))
            record.update(failures.failure_fields(error.failures, reports, options.nproc))
        except Exception as error:  # the launcher itself failed (rendezvous, process start): recorded, suite goes on
            record.update(error=f"launcher: {type(error).__name__}: {error}", traceback=traceback.format_exc())
    record["wall_time_s"] = time.perf_counter() - started
    return record


def run_ranks(
    config: RunConfig, options: Options, echo: Callable[[str], None], command: str | None = None
) -> Path | None:
    """`archbench run` as one rank of a torchrun group: all ranks run the suite together, rank 0 writes the records."""
    rank0 = int(os.environ.get("RANK", "0")) == 0
    echo = echo if rank0 else lambda line: None
    names = _classifiers(config, echo)
    device, backend = _device_and_backend(config, options.backend, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    options = dataclasses.replace(options, backend=backend)
    with failures.reporting(None):
        group = ddp.join(backend, device.type, options.timeout)
        data = _load(config, group)
        _check_shards(len(data.train_x), group.world_size)
        run_dir, environment = _new_run(config, options, group.device, command) if rank0 else (None, None)
        run_dir = group.broadcast(run_dir)
        echo(
            f"run {run_dir.name}: {len(names)} architecture(s) x {len(config.seeds)} seed(s) on {data.name}, "
            f"{group.world_size} x {device.type} processes ({backend})"
        )
        quiet = config.quiet or not rank0 or not sys.stderr.isatty()
        for name in names:
            for seed in config.seeds:
                record = run_one(name, seed, data, config, options, group, run_dir, quiet)
                if rank0:
                    record.update(environment)
                    store.append_record(run_dir, record)
                    echo(runner.summary(record))
        group.close()
    return run_dir if rank0 else None


def run_one(
    name: str, seed: int, data: datasets.ImageData, config: RunConfig, options: Options, group: ddp.DDPGroup,
    run_dir: Path, quiet: bool,
) -> dict[str, Any]:
    """One architecture at one seed on every rank of `group`; rank 0's record holds the figures.

    A non-finite loss, seen alike by every rank (the losses are averaged over ranks), makes a `diverged`
    record; any other error propagates and ends this rank, so that the launcher stops the group.
    """
    spec = architectures.get_spec(name)
    settings = config.tasks[spec.task]
    record = runner.new_record(name, seed, data, config, group.device, run_dir, group.world_size)
    record.update(_fields(options, group.world_size, settings.batch_size, torch.get_num_threads()))
    started = time.perf_counter()
    torch.manual_seed(seed)
    model = architectures.create(name, data.input_shape, data.num_classes).to(group.device)
    context = RunContext(group.device, seed, config.measure, run_dir, runner.progress_factory(name, seed, quiet), group)
    try:
        ddp.run(model, data, settings, context, record, options.scaling)
        record["status"] = "ok"
    except Diverged as error:
        record.update(status="diverged", error=str(error), diverged_step=error.step)
    record["wall_time_s"] = time.perf_counter() - started
    return record


def _rank(
    config: RunConfig, name: str, seed: int, data: datasets.ImageData, run_dir: Path, options: Options,
    device_type: str, threads: int, arch_modules: list[str], folder: str,
) -> dict[str, Any] | None:
    """One process of a --nproc group (torch's elastic agent calls it in each): rank 0 returns the record.

    `data` is the launcher's CPU copy, which torch.multiprocessing hands over in shared memory.
    """
    from .cli import import_arch_modules

    with failures.reporting(Path(folder)):
        import_arch_modules(arch_modules)
        torch.set_num_threads(threads)
        group = ddp.join(options.backend, device_type, options.timeout)
        quiet = config.quiet or group.rank != 0 or not sys.stderr.isatty()
        record = run_one(name, seed, data.to(group.device), config, options, group, run_dir, quiet)
        group.close()
    return record if group.rank == 0 else None


def _new_run(
    config: RunConfig, options: Options, device: torch.device, command: str | None
) -> tuple[Path, dict[str, Any]]:
    """A fresh run folder with its run.json (configuration, data-parallel options, environment), and the environment."""
    run_dir = store.new_run_dir(Path(config.out), config.suite)
    environment = store.environment(device, command)
    info = {"config": dataclasses.asdict(config), "distributed": dataclasses.asdict(options)}
    store.write_run_info(run_dir, {**info, "environment": environment})
    return run_dir, environment


def _fields(options: Options, world_size: int, batch_size: int, threads: int) -> dict[str, Any]:
    return {
        "backend": options.backend,
        "global_batch_size": batch_size * world_size,
        "threads_per_rank": threads,
        "dist_timeout_s": options.timeout,
    }


def _classifiers(config: RunConfig, echo: Callable[[str], None]) -> list[str]:
    """The suite's architectures that have a data-parallel loop (classifiers); the others are named and skipped."""
    try:
        names = architectures.resolve(config.architectures)
    except architectures.UnknownArchitecture as error:
        raise UserError(str(error)) from None
    kept = [name for name in names if architectures.get_spec(name).task == "classify"]
    skipped = [name for name in names if name not in kept]
    if not kept:
        raise UserError(f"data-parallel runs train classifiers only; none of {', '.join(names)} is one")
    if skipped:
        echo(f"skipping {', '.join(skipped)}: data-parallel runs train classifiers only")
    return kept


def _device_and_backend(config: RunConfig, requested: str, local_processes: int) -> tuple[torch.device, str]:
    """The run's device type and its collective backend: NCCL on CUDA, gloo on CPU unless `requested` says which."""
    device = runner.resolve_device(config.device)
    if not dist.is_available():
        raise UserError(f"this torch build ({torch.__version__}) has no torch.distributed")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"data-parallel runs train on cpu or cuda, not {device.type}; pass --device cpu")
    backend = requested
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise UserError(f"--backend nccl needs CUDA devices, and this run is on {device.type}; use --backend gloo")
    if backend == "nccl" and not dist.is_nccl_available():
        raise UserError(f"--backend nccl: this torch build ({torch.__version__}) has no NCCL; use --backend gloo")
    if backend == "gloo" and not dist.is_gloo_available():
        raise UserError(f"--backend gloo: this torch build ({torch.__version__}) has no gloo")
    if device.type == "cuda" and local_processes > torch.cuda.device_count():
        gpus = torch.cuda.device_count()
        raise UserError(f"{local_processes} processes on this machine need as many GPUs, one each; it has {gpus}")
    return device, backend


def _check_shards(train_samples: int, world_size: int) -> None:
    if train_samples < world_size:
        raise UserError(f"{train_samples} training sample(s) cannot be shared among {world_size} processes")


def _load(config: RunConfig, group: ddp.DDPGroup) -> datasets.ImageData:
    """The dataset on this rank's device; with --download, local rank 0 downloads before the others read."""
    first = group.local_rank == 0
    if config.download and not first:
        group.barrier()
    download = config.download and first
    data = datasets.load(config.dataset, config.data_root, download, config.limit_train, config.limit_test)
    if config.download and first:
        group.barrier()
    return data.to(group.device)


def _threads_per_rank(nproc: int) -> int:
    """CPU threads each rank uses: $OMP_NUM_THREADS when set, else this machine's cores shared out evenly."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // nproc)


def _start_method() -> str:
    """forkserver with this module preloaded, so that each group starts without re-importing torch; else spawn."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return "spawn"
    multiprocessing.get_context("forkserver").set_forkserver_preload([__name__])
    return "forkserver"


@contextmanager
def _launcher_signals() -> Iterator[None]:
    """Around torch's elastic agent: it turns SIGTERM, SIGINT, SIGHUP and SIGQUIT into SignalException to stop its
    workers; afterwards this process gets its own handlers back, and Ctrl-C is a KeyboardInterrupt again.

    The agent's own log of a failed worker (a traceback on stderr) is silenced: the record holds every rank's
    error and the failing rank's traceback.
    """
    main = threading.current_thread() is threading.main_thread()
    saved = {name: signal.getsignal(getattr(signal, name)) for name in _LAUNCHER_SIGNALS if hasattr(signal, name)}
    environment = os.environ.get("TORCHELASTIC_SIGNALS_TO_HANDLE")
    loggers = {logger: logger.level for logger in map(logging.getLogger, _AGENT_LOGGERS)}
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    except SignalException as error:
        if error.sigval == signal.SIGINT:
            raise KeyboardInterrupt from None
        raise SystemExit(128 + error.sigval) from None
    finally:
        for logger, level in loggers.items():
            logger.setLevel(level)
        if main:
            for name, handler in saved.items():
                signal.signal(getattr(signal, name), handler)
        if environment is None:
            os.environ.pop("TORCHELASTIC_SIGNALS_TO_HANDLE", None)
        else:
            os.environ["TORCHELASTIC_SIGNALS_TO_HANDLE"] = environment
