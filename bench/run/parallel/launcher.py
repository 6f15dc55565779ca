"""The two data-parallel strategies of the suite loop (bench.run.suite.run_suite).

`GroupLaunch` (`--nproc N`) launches, for each architecture and seed, its own group of N local processes
through torchrun's launcher API (torch.distributed.launcher.api.elastic_launch, the engine of the `torchrun`
command). torch's elastic agent watches the group and stops every rank as soon as one ends badly; the
launcher then makes a `failed` record naming the rank whose failure ended the group, with its error, and the
suite goes on. A group that finishes hands rank 0's record to the launcher.

`RankOfGroup` is `archbench run` under a plain `torchrun ... -m bench run`: every rank runs the whole suite
together and only rank 0 writes; there a failing rank ends the whole suite (torchrun stops the group),
keeping what finished.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
import tempfile
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

import architectures

from ...data import datasets
from .. import isolation, runner
from ...configs import RunConfig
from ...errors import UserError
from ...tasks import TASKS
from . import Options, failures, rank

_LAUNCHER_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")
_AGENT_LOGGERS = ("torch.distributed.elastic.multiprocessing.api", "torch.multiprocessing.spawn")


class _DataParallel(runner.Strategy):
    """What both data-parallel strategies share: classifiers only, the device and backend, run.json's options."""

    isolation = "data-parallel"
    compiles = False
    budgets = False

    def __init__(self, options: Options):
        self.options = options

    def select(self, names: list[str], echo: Callable[[str], None]) -> list[str]:
        """The suite's architectures that have a data-parallel loop (classifiers); the others are named and skipped."""
        kept = [name for name in names if TASKS[architectures.get_spec(name).task].data_parallel]
        skipped = [name for name in names if name not in kept]
        if not kept:
            raise UserError(f"data-parallel runs train classifiers only; none of {', '.join(names)} is one")
        if skipped:
            echo(f"skipping {', '.join(skipped)}: data-parallel runs train classifiers only")
        return kept

    def info(self) -> dict[str, Any]:
        return {"isolation": self.isolation, "distributed": dataclasses.asdict(self.options)}

    def fields(self, job: runner.Job, world_size: int, threads: int) -> dict[str, Any]:
        batch_size = job.config.settings_of(job.name).batch_size
        return {
            "backend": self.options.backend,
            "global_batch_size": batch_size * world_size,
            "threads_per_rank": threads,
            "dist_timeout_s": self.options.timeout,
        }


class GroupLaunch(_DataParallel):
    """`--nproc N`: one fresh group of N local processes per architecture and seed, each ending as one record."""

    def device(self, config: RunConfig) -> torch.device:
        device, backend = _device_and_backend(config, self.options.backend, self.options.nproc)
        self.options = dataclasses.replace(self.options, backend=backend)
        self.threads = _threads_per_rank(self.options.nproc)
        return device

    def load(self, config: RunConfig, device: torch.device) -> datasets.ImageData:
        """The launcher's CPU copy, which torch.multiprocessing hands to the ranks in shared memory."""
        data = runner.load_data(config)
        _check_shards(data.train_samples, self.options.nproc)
        return data

    def describe(self, device: torch.device) -> str:
        return f"{self.options.nproc} x {device.type} processes ({self.options.backend}, {self.threads} thread(s) each)"

    def execute(self, job: runner.Job) -> dict[str, Any]:
        """One architecture at one seed on a fresh group of `options.nproc` processes, as a record.

        Never raises for the group's failures: a rank that fails makes a `failed` record naming the rank that
        caused it, and a launcher that fails (rendezvous, process start) one with the launcher's error.
        """
        options = self.options
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="archbench-ranks-") as folder:
            launch = LaunchConfig(
                min_nodes=1,
                max_nodes=1,
                nproc_per_node=options.nproc,
                run_id=f"{job.run_dir.name}-{job.name}-{job.seed}",
                rdzv_backend="c10d",
                rdzv_endpoint="localhost:0",
                rdzv_configs={"timeout": int(options.timeout)},
                max_restarts=0,
                start_method=isolation.start_method(),
                logs_specs=DefaultLogsSpecs(log_dir=os.path.join(folder, "torchelastic")),
            )
            fields = self.fields(job, options.nproc, self.threads)
            try:
                with _launcher_signals():
                    return elastic_launch(launch, _rank)(job, options, fields, self.threads, folder)[0]
            except ChildFailedError as error:
                failure = failures.failure_fields(error.failures, failures.read_reports(Path(folder)), options.nproc)
            except Exception as error:  # the launcher itself failed (rendezvous, process start): recorded, suite goes on
                failure = {"error": f"launcher: {type(error).__name__}: {error}", "traceback": traceback.format_exc()}
        record = job.start_record(options.nproc)
        record.update(fields, **failure, wall_time_s=time.perf_counter() - started)
        return record


class RankOfGroup(_DataParallel):
    """This process as one rank of a torchrun group: every rank runs every pair, rank 0 writes the records."""

    def __init__(self, options: Options):
        super().__init__(options)
        self.writes = int(os.environ.get("RANK", "0")) == 0
        self.group: rank.DDPGroup | None = None
        self._failed = False

    def device(self, config: RunConfig) -> torch.device:
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        device, backend = _device_and_backend(config, self.options.backend, local_processes)
        self.options = dataclasses.replace(self.options, backend=backend)
        with failures.reporting(None):
            self.group = rank.join(backend, device.type, self.options.timeout)
        return self.group.device

    def load(self, config: RunConfig, device: torch.device) -> datasets.ImageData:
        """The dataset on this rank's device; with --download, local rank 0 downloads before the others read."""
        group = self.group
        first = group.local_rank == 0
        if config.download and not first:
            group.barrier()
        data = runner.load_data(config, download=config.download and first)
        if config.download and first:
            group.barrier()
        _check_shards(data.train_samples, group.world_size)
        return data.to(group.device)

    def agree(self, run_dir: Path | None) -> Path:
        return self.group.broadcast(run_dir)

    def describe(self, device: torch.device) -> str:
        return f"{self.group.world_size} x {device.type} processes ({self.options.backend})"

    def execute(self, job: runner.Job) -> dict[str, Any]:
        """A non-finite loss, seen alike by every rank, makes a `diverged` record; any other error propagates
        and ends this rank, so that torchrun stops the group."""
        fields = self.fields(job, self.group.world_size, torch.get_num_threads())
        train = functools.partial(rank.train, scaling=self.options.scaling)
        try:
            with failures.reporting(None):
                return runner.run_pair(job, self.group, train, fields)
        except BaseException:
            self._failed = True
            raise

    def close(self) -> None:
        if self.group is not None and not self._failed:
            self.group.close()


def _rank(
    job: runner.Job, options: Options, fields: dict[str, Any], threads: int, folder: str
) -> dict[str, Any] | None:
    """One process of a --nproc group (torch's elastic agent calls it in each): rank 0 returns the record."""
    with failures.reporting(Path(folder)):
        for module in job.arch_modules:
            architectures.load_module(module)
        torch.set_num_threads(threads)
        group = rank.join(options.backend, job.device.type, options.timeout)
        quiet = job.quiet or group.rank != 0
        job = dataclasses.replace(job, data=job.data.to(group.device), device=group.device, quiet=quiet)
        train = functools.partial(rank.train, scaling=options.scaling)
        record = runner.run_pair(job, group, train, fields)
        group.close()
    return record if group.rank == 0 else None


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


def _threads_per_rank(nproc: int) -> int:
    """CPU threads each rank uses: $OMP_NUM_THREADS when set, else this machine's cores shared out evenly."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // nproc)


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
        if error.sigval == signal.SIGTERM:
            raise runner.Terminated from None
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
