"""One run session: what every driver of a run folder shares (`archbench run`'s suite loop, `archbench speed`'s
sweep, and whatever drives one next). A `Session` decides the architectures, the device and the modes once,
chooses each mode's peak matmul, captures the environment, opens (or reopens) the run folder as its one writer,
builds each pair's `Job`, finishes and appends each record as it ends, and turns SIGINT or SIGTERM into
`Interrupted` once the running pair is stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

import architectures

from .. import configs
from ..configs import RunConfig
from ..errors import Terminated, UserError
from ..measure import utilization
from ..measure.modes import Mode
from ..results import store
from ..results.records import RECORDS, read_records
from ..results import schema
from ..tasks import TASKS, reference
from .environment import capture
from .runner import Job, Strategy, summary


class Session:
    """One run folder's session (see the module's docstring). `echo` says what happens (nothing in a process that
    does not write: a rank other than 0); `command` is the command line every record keeps (default: this
    process's); `write_line` turns a finished record into the line echoed for it."""

    def __init__(
        self, config: RunConfig, strategy: Strategy, echo: Callable[[str], None] = print, command: str | None = None,
        arch_modules: tuple[str, ...] = (), write_line: Callable[[dict[str, Any]], str] = summary,
    ):
        self.config, self.strategy, self.command, self.arch_modules = config, strategy, command, tuple(arch_modules)
        self.echo = echo if strategy.writes else (lambda line: None)
        self.write_line = write_line
        self.names = architectures_of(config, strategy, self.echo)
        self.device = strategy.device(config)
        self.modes = modes_of(config, strategy, self.device, self.names)
        self.peak_sizes = peak_sizes_of(self.modes, self.device) if strategy.writes else {}
        self.quiet = config.quiet or not strategy.writes or not sys.stderr.isatty()
        self.done: dict[schema.Pair, str] = {}  # a resumed run's pairs and how they ended
        self.best_peaks: dict[str, float] = {}
        self.environment: dict[str, Any] = {}
        self.run_dir: Path | None = None
        self.written = 0
        self._writer = contextlib.ExitStack()

    def open(self, info: dict[str, Any], resume: Path | None = None) -> Path:
        """Create the run folder, its run.json holding `info` with the configuration, the strategy, the plugins, the
        working folder and the environment; or reopen `resume`, its torn last record set aside and what it holds
        read (`done`, `best_peaks`). Held as its one writer until the session ends; returns the folder every process
        of the run uses."""
        run_dir = None
        if self.strategy.writes:
            self.environment = capture(self.device, self.command)
            if resume is None:
                run_dir = new_run(self.config, {
                    "config": dataclasses.asdict(self.config), **self.strategy.info(),
                    "arch_modules": list(self.arch_modules), "working_dir": str(Path.cwd()), **info,
                    "environment": self.environment,
                })
                self._writer.enter_context(store.writing(run_dir))
            else:
                run_dir = resume
                self._writer.enter_context(store.writing(run_dir))
                store.set_aside_torn(run_dir)
                if (run_dir / RECORDS).is_file():
                    recorded = read_records(run_dir / RECORDS)
                    self.done, self.best_peaks = {schema.pair(r): r["status"] for r in recorded}, best_peaks_of(recorded)
        self.run_dir = self.strategy.agree(run_dir)
        return self.run_dir

    def job(self, name: str, mode: Mode, seed: int, data: Any, **fields: Any) -> Job:
        """The job of one pair in this session: `fields` set the rest of Job's (a sweep point's configuration, its
        shard, measure-only, ...)."""
        fields = {"config": self.config, "peak_size": self.peak_sizes.get(mode.name), **fields}
        return Job(
            name=name, seed=seed, data=data, device=self.device, run_dir=self.run_dir, quiet=self.quiet,
            arch_modules=self.arch_modules, isolation=self.strategy.isolation, mode=mode, **fields,
        )

    def write(self, record: dict[str, Any], replacing: Callable[[dict[str, Any]], bool] | None = None) -> None:
        """A pair's record as it ends: finished (`finish`), appended whole (in place of the one `replacing` picks)
        and echoed, by the process that writes; counted in every process."""
        if self.strategy.writes:
            finish(record, self.environment, self.best_peaks)
            store.append_record(self.run_dir, record, replacing=replacing)
            self.echo(self.write_line(record))
        self.written += 1

    @contextlib.contextmanager
    def running(self, total: int | None, already: int = 0, resumable: bool = True) -> Iterator[None]:
        """The block in which the pairs run: SIGINT or SIGTERM there is `Interrupted` (after `already` + the records
        written of `total`); at its end, however it ends, the strategy and the run folder are let go."""
        try:
            yield
        except KeyboardInterrupt:
            raise self._interrupted("SIGINT", 130, total, already, resumable) from None
        except Terminated:
            raise self._interrupted("SIGTERM", 143, total, already, resumable) from None
        finally:
            self.strategy.close()
            self._writer.close()

    def _interrupted(self, signal_name: str, exit_code: int, total: int | None, already: int, resumable: bool) -> Interrupted:
        run_dir = self.run_dir if self.strategy.writes else None
        return Interrupted(signal_name, exit_code, already + self.written, total, run_dir, resumable)


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
    for name in names:
        task = architectures.get_spec(name).task
        if task not in TASKS:
            raise UserError(f"{name} is an architecture of task {task!r}, which no entry of the task table runs "
                            f"(tasks: {', '.join(TASKS)}; a plugin module adds one with bench.tasks.register)")
    if any(TASKS[architectures.get_spec(name).task].generative for name in names):
        what = "FID cache folder ([fid] cache_dir or $ARCHBENCH_FID_CACHE)"
        store.writable_folder(reference.cache_dir(config.fid), what, create=False)
    return names


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
