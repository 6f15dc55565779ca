"""`archbench run` and `archbench speed`: the command line made into a request (a configuration, a strategy, the
plugins), the request executed through one run session (bench.run.suite, bench.run.speed), the outcome presented
as tables, the report's path and an exit status."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..results import store
from ..results.records import RECORDS, named, read_records
from . import flags


@dataclass(frozen=True, kw_only=True)
class RunRequest:
    """What `archbench run` was asked: the configuration, how its pairs run, the plugin modules, the shard, and the
    interrupted run it finishes (bench.run.suite.Resume)."""

    config: Any
    strategy: Any
    plugins: tuple[str, ...]
    shard: Any = None
    resume: Any = None


def run(args: argparse.Namespace) -> int:
    from ..measure import phases
    from ..run import session, suite

    request = resumed(args) if args.resume is not None else new_run(args)
    echo = (lambda line: None) if request.config.quiet else print
    profile = phases.SuiteProfile() if args.profile else None
    try:
        run_dir = suite.run_suite(
            request.config, request.strategy, echo, args.command_line, request.plugins, resume=request.resume,
            shard=request.shard, profile=profile,
        )
    except session.Interrupted as interrupted:
        print(f"archbench: {interrupted}", file=sys.stderr)
        return interrupted.exit_code
    if run_dir is None:  # a rank other than 0 under torchrun; rank 0 prints the tables
        return 0
    records = present(run_dir)
    if profile is not None:
        print(f"\n{profile.render(phases.process_age_s())}")
    failed = [named(r["architecture"], r.get("mode")) for r in records if r["status"] != "ok"]
    if failed:
        print(f"{len(failed)} run(s) did not finish: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed and request.config.strict else 0


def new_run(args: argparse.Namespace) -> RunRequest:
    """The request of a run started afresh: the suite with the flags' settings on top, its zoo patterns confirmed."""
    from .. import configs
    from ..run import parallel, shards

    if args.retry_failed:
        raise UserError("--retry-failed goes with --resume RUN_DIR")
    config = configs.load(args.suite, **flags.settings(args))
    confirm(config.architectures, args.yes)
    launch = parallel.from_flags(args.nproc, args.backend, args.scaling, args.dist_timeout)
    shard = shards.parse(args.shard) if args.shard else shards.from_environment(count=args.shard_count)
    return RunRequest(
        config=config, strategy=strategy(config, args.isolation, launch, args.devices), plugins=tuple(args.arch_module),
        shard=shard,
    )


def resumed(args: argparse.Namespace) -> RunRequest:
    """The request that finishes the interrupted run `args.resume`: its recorded configuration, strategy, plugins and
    shard; UserError for a flag that would change what it measures."""
    import architectures

    from .. import configs
    from ..run import parallel, suite

    info = store.read_run_info(args.resume) if args.resume.is_dir() else {}
    if "config" not in info:  # a run stopped before its first record has no records file yet
        raise UserError(f"--resume {args.resume}: not a run folder (no {store.RUN_INFO} with a configuration)")
    if "speed" in info:
        raise UserError(f"--resume {args.resume}: a speed sweep's folder; speed sweeps are not resumed (run the sweep again)")
    given = [action for _, action in args.configuring if getattr(args, action.dest) != action.default]
    if given:
        where = args.resume / store.RUN_INFO
        raise UserError(f"{given[0].option_strings[0]} cannot change a resumed run; --resume takes the configuration from {where}")
    started_in = Path(info.get("working_dir") or ".")  # plugin paths and module names are as given there
    if str(started_in) not in sys.path:
        sys.path.insert(0, str(started_in))
    plugins = tuple(str(started_in / module) if module.endswith(".py") else module for module in info.get("arch_modules", []))
    for module in plugins:  # before the configuration: a plugin's task has its settings in it
        architectures.load_module(module)
    config = configs.from_dict(info["config"])
    config.quiet, config.strict = bool(args.quiet), bool(args.strict)  # how to show the run, not what it measures
    distributed = info.get("distributed")
    launch = parallel.Options(**distributed) if distributed else None
    isolation = args.isolation or info.get("isolation", "process")
    devices = args.devices or (",".join(info["devices"]) if info.get("devices") else None)
    return RunRequest(
        config=config, strategy=strategy(config, None if launch else isolation, launch, devices), plugins=plugins,
        resume=suite.Resume(args.resume, args.retry_failed),
    )


def speed(args: argparse.Namespace) -> int:
    from .. import configs
    from ..run import session
    from ..run import speed as sweeps

    config = configs.load(args.suite, **flags.settings(args))
    confirm(config.architectures, args.yes)
    sweep = sweeps.Sweep(
        batch_sizes=tuple(args.batch_sizes), image_sizes=tuple(args.image_sizes), channels=args.channels,
        classes=args.classes, max_memory_mb=args.max_memory,
    )
    echo = (lambda line: None) if config.quiet else print
    try:
        run_dir = sweeps.run_sweep(config, sweep, strategy(config, args.isolation, None), echo, args.command_line,
                                   tuple(args.arch_module))
    except session.Interrupted as interrupted:
        print(f"archbench: {interrupted}", file=sys.stderr)
        return interrupted.exit_code
    present(run_dir)
    return 0


def present(run_dir: Path) -> list[dict]:
    """Print the tables of the run in `run_dir` and write its report; its records."""
    from ..results import report

    records = read_records(run_dir / RECORDS)
    print(f"\n{report.tables(records)}\n")
    try:
        written = report.write_report(records, run_dir)
    except UserError as error:
        raise UserError(f"{error}; the records are whole: `archbench report {run_dir}` writes the report again") from None
    print(f"records: {run_dir / RECORDS}\nreport: {written}")
    return records


def strategy(config, isolation: str | None, launch, gpus: str | None = None):
    """How each pair runs: a fresh process (default), this process, a data-parallel group, or fresh processes
    on several GPUs at once (`gpus`: the --devices flag)."""
    from ..run import devices, parallel, runner
    from ..run.isolation import ChildProcess

    if gpus is not None:
        if launch is not None or isolation == "none":
            given = "--nproc" if launch is not None else "--isolation none"
            raise UserError(f"--devices runs each pair in its own process on one GPU; it does not go with {given}")
        return devices.Devices(devices.parse(gpus, config.device), config.arch_timeout)
    if launch is not None:
        if isolation is not None or config.arch_timeout is not None:
            given = "--isolation" if isolation is not None else "arch_timeout (--arch-timeout or the suite's)"
            raise UserError(f"{given} does not apply to data-parallel runs, whose groups are bounded by --dist-timeout")
        return parallel.strategy(launch)
    if isolation == "none":
        if config.arch_timeout is not None:
            raise UserError(
                "arch_timeout (--arch-timeout or the suite's) needs each architecture in its own process; "
                "drop --isolation none"
            )
        return runner.Strategy()
    return ChildProcess(config.arch_timeout)


def confirm(patterns: Sequence[str], yes: bool) -> None:
    """UnknownArchitecture for a zoo prefix with no name among `patterns`; unless `yes` (--yes), UserError for a
    zoo pattern matching more models than architectures.MANY_ZOO_MODELS: a command running them asks first."""
    import architectures

    many = architectures.many_zoo_models(list(patterns))
    if many and not yes:
        pattern, count = many[0]
        zoo = pattern.partition(":")[0]
        raise UserError(
            f"{pattern!r} matches {count} {zoo} models (more than {architectures.MANY_ZOO_MODELS}): pass --yes to run "
            f"them all, or name fewer (list them: archbench list {shlex.quote(pattern)})"
        )
