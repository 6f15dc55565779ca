"""archbench's command line: list | run | report | compare | ab | baseline. User mistakes end with one line on
stderr and exit 2.

Each command imports what it needs when it runs, and builds its arguments alone (`build_parser`): reading
results (report, compare, baseline) imports neither torch nor the registry nor the code that runs models.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .results import store
from .errors import Terminated, UserError
from .results import runs
from .results.records import RECORDS, distinct, named, read_records, shared

if TYPE_CHECKING:
    from .configs import RunConfig


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _natural_int(text: str) -> int:
    value = _positive_int(text) if text.strip() not in ("0", "+0", "-0") else 0
    return value


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _mode_list(text: str) -> list[str]:
    modes = [part.strip() for part in text.split(",") if part.strip()]
    if not modes:
        raise argparse.ArgumentTypeError(f"expected modes separated by commas, got {text!r}")
    return modes


def _fraction(text: str) -> float:
    try:
        value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.1 or 10%, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


def _add_plugins(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--arch-module",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE (a module name or a .py file) so its @register decorators add architectures (and its "
        "bench.tasks.register calls tasks: report and compare need the plugin of a task archbench does not ship); repeatable",
    )


def _add_yes(parser: argparse.ArgumentParser) -> None:
    import architectures

    many = architectures.MANY_ZOO_MODELS
    parser.add_argument("--yes", action="store_true", help=f"run a zoo pattern that matches more than {many} models "
                        "(e.g. 'torchvision:*'); without --yes, such a pattern is refused")


def _add_list(listing: argparse.ArgumentParser) -> None:
    from .tasks import TASKS

    _add_plugins(listing)
    listing.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard, e.g. 'cnn-*'")
    listing.add_argument("--task", help=f"only architectures of this task ({', '.join(TASKS)}, or a plugin's)")
    listing.set_defaults(handler=_list)


def _add_run(run: argparse.ArgumentParser) -> None:
    from . import configs
    from .measure import modes
    from .run import shards
    from .data import LOADERS

    _add_plugins(run)
    _add_yes(run)
    run.add_argument("--suite", default=configs.DEFAULT_SUITE, help="a built-in suite name or a .toml path")
    run.add_argument("--arch", nargs="+", action="extend", metavar="A", help="architectures or wildcards")
    run.add_argument("--dataset", help=f"one of: {', '.join(LOADERS)}; or folder:PATH, an image folder (PATH/train/<class>/*, "
                     "PATH/val/<class>/*, or PATH/<class>/* with a seeded hold-out)")
    run.add_argument("--epochs", type=_positive_int, help="epochs for every task (overrides the suite)")
    run.add_argument("--batch-size", type=_positive_int, help="batch size for every task (overrides the suite)")
    run.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), help="default: auto")
    run.add_argument("--seed", nargs="+", type=int, dest="seeds", metavar="N", help="one or more seeds")
    run.add_argument("--limit-train", type=_positive_int, metavar="N", help="use the first N training samples")
    run.add_argument("--limit-test", type=_positive_int, metavar="N", help="use the first N test samples")
    run.add_argument("--data-root", metavar="DIR", help="dataset folder (default: $ARCHBENCH_DATA or ~/.cache/archbench/data)")
    run.add_argument("--download", action="store_true", default=None, help="download missing dataset files")
    run.add_argument("--image-size", type=_positive_int, metavar="PX", help="folder datasets: the side of the crops "
                     "the models see (default 224)")
    run.add_argument("--workers", type=_natural_int, metavar="N", help="folder datasets: DataLoader workers that "
                     "decode the images (default: one fewer than the CPUs, at most 8; 0, in the training process, on 2 CPUs or fewer)")
    run.add_argument("--data-path", choices=("auto", "memory", "stream"), help="folder datasets: decode every image "
                     "once into memory, or stream batches through the workers every epoch (auto: memory when it fits "
                     "the [data] cache_mb and training does not augment)")
    run.add_argument("--no-augment", action="store_true", default=None, help="folder datasets: "
                     "train on the evaluation transform (resize, center crop) instead of RandomResizedCrop + flip")
    run.add_argument("--skip-bad-images", action="store_const", const=True, help="folder datasets: skip unreadable, "
                     "corrupt or oversized images and count them in the records, instead of stopping")
    run.add_argument("--out", type=Path, metavar="DIR", help=f"where run folders go (default: {store.DEFAULT_OUT})")
    run.add_argument("--strict", action="store_true", default=None, help="exit 1 if any architecture failed")
    run.add_argument("--quiet", action="store_true", default=None, help="no progress bars or per-run lines")
    run.add_argument("--profile", action="store_true", help="at the end, print where the run's time went: each phase "
                     "(start-up, building, FLOP counting, warm-up, timing windows, training, evaluation, FID, latency) "
                     "summed over the pairs, and the time before, between and after them")
    run.add_argument("--precision", choices=modes.PRECISIONS, help="autocast precision (auto: bf16 where the "
                     "device runs it natively, else fp32); with --channels-last and --compile, the run's one mode")
    run.add_argument("--channels-last", action="store_true", default=None, help="models and batches in channels_last")
    run.add_argument("--compile", nargs="?", const="default", choices=modes.COMPILE_MODES, metavar="MODE",
                     help=f"torch.compile the models (MODE: {', '.join(modes.COMPILE_MODES)}; default: default)")
    run.add_argument("--modes", type=_mode_list, metavar="M,M", help="several modes, e.g. fp32,bf16+channels_last "
                     "(instead of --precision/--channels-last/--compile; the first is the reference)")
    run.add_argument("--compile-backend", metavar="NAME", help="torch.compile backend (default: inductor)")
    run.add_argument("--isolation", choices=("process", "none"), help="process (default): each architecture and seed "
                     "in a fresh child process; none: all in this one (for debugging with pdb)")
    run.add_argument("--arch-timeout", type=_positive_number, metavar="S", help="seconds one architecture and seed may "
                     "take before its process is stopped and recorded as failed (default: no limit)")
    run.add_argument("--resume", type=Path, metavar="RUN_DIR", help="finish an interrupted run in its folder, with its "
                     "recorded configuration; pairs already recorded ok or diverged are skipped")
    run.add_argument("--retry-failed", action="store_true", help="with --resume: also rerun the pairs recorded as failed")
    run.add_argument("--shard", metavar="K/N", help="run only part K of N (K counted from 1: 1/3, 2/3, 3/3) of the "
                     "suite's pairs, split by expected cost; default: from a SLURM job array or a Kubernetes Indexed "
                     "Job when one sets it (--shard 1/1 runs everything)")
    run.add_argument("--shard-count", type=_positive_int, metavar="N", help="the N that goes with Kubernetes' 0-based "
                     f"JOB_COMPLETION_INDEX (default: ${shards.SHARD_COUNT_ENV})")
    run.add_argument("--devices", metavar="D,D", help="run pairs concurrently, one child process per GPU: "
                     "cuda:0,cuda:1,... or all (CUDA only: concurrent CPU runs corrupt each other's timings)")
    run.add_argument("--nproc", type=_positive_int, metavar="N", help="data-parallel on N local processes (torchrun)")
    run.add_argument("--backend", choices=("auto", "gloo", "nccl"), help="collectives (default auto: nccl on CUDA, else gloo)")
    run.add_argument("--scaling", action="store_true", help="also time one process alone, for the scaling efficiency")
    run.add_argument("--dist-timeout", type=_positive_int, metavar="S", help="seconds a rank waits for the group (default 300)")
    run.set_defaults(handler=_run)


def _add_speed(speed: argparse.ArgumentParser) -> None:
    from .measure import modes

    _add_plugins(speed)
    _add_yes(speed)
    speed.add_argument("--suite", default="speed", help="a suite name or .toml path: its architectures, modes, "
                       "[classify] optimizer and [measure] timing (default: speed)")
    speed.add_argument("--arch", nargs="+", action="extend", metavar="A", help="classifiers or wildcards, e.g. "
                       "torchvision:resnet50 'timm:convnext_*' resnet18")
    speed.add_argument("--batch-sizes", nargs="+", type=_positive_int, metavar="N", default=[1, 8, 32],
                       help="batch sizes (default: 1 8 32)")
    speed.add_argument("--image-sizes", nargs="+", type=_positive_int, metavar="PX", default=[224],
                       help="square input sizes in pixels (default: 224)")
    speed.add_argument("--channels", type=_positive_int, default=3, help="input channels (default: 3)")
    speed.add_argument("--classes", type=_positive_int, default=1000, help="output classes (default: 1000)")
    speed.add_argument("--max-memory", type=_positive_number, metavar="MB", help="a training step whose peak memory "
                       "is above MB counts as out of memory (on a CPU; CUDA says so itself): the sweep steps down to the "
                       "largest batch that fits and tries no larger one")
    speed.add_argument("--modes", type=_mode_list, metavar="M,M", help="e.g. fp32,bf16+channels_last")
    speed.add_argument("--precision", choices=modes.PRECISIONS, help="autocast precision of the one mode")
    speed.add_argument("--channels-last", action="store_true", default=None, help="models and batches in channels_last")
    speed.add_argument("--compile", nargs="?", const="default", choices=modes.COMPILE_MODES, metavar="MODE")
    speed.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), help="default: auto")
    speed.add_argument("--out", type=Path, metavar="DIR", help=f"where run folders go (default: {store.DEFAULT_OUT})")
    speed.add_argument("--quiet", action="store_true", default=None, help="no per-point lines")
    speed.add_argument("--isolation", choices=("process", "none"), help="process (default): each point in a fresh "
                       "child process; none: all in this one")
    speed.add_argument("--arch-timeout", type=_positive_number, metavar="S", help="seconds one point may take")
    speed.set_defaults(handler=_speed)


def _add_report(show: argparse.ArgumentParser) -> None:
    _add_plugins(show)
    show.add_argument("runs", nargs="*", metavar="RUN", help="run folders, records files or run ids (default: the newest run); "
                      "the shards of a sweep (archbench run --shard) together")
    show.add_argument("--out", type=Path, default=store.DEFAULT_OUT, metavar="DIR", help="where run folders are")
    show.add_argument("--output", type=Path, metavar="DIR", help="where the report goes (default: the last run's folder)")
    show.add_argument("--html", action="store_true", help="write one self-contained REPORT.html instead of REPORT.md")
    show.add_argument("--reference", metavar="ARCH", help="the architecture every other is compared with, in words under "
                      "each table (default: the suite's `reference`, else each table's first)")
    show.set_defaults(handler=_report)


def _add_compare(comparing: argparse.ArgumentParser) -> None:
    _add_plugins(comparing)
    comparing.add_argument("baseline", help="baseline run folder or records file (e.g. results/baseline)")
    comparing.add_argument(
        "candidates", nargs="+", metavar="CANDIDATE",
        help="candidate run folder or records file; with several (reruns), a regression must show in every one; "
        "the shards of one sweep (archbench run --shard) count as one candidate",
    )
    comparing.add_argument("--tolerances", type=Path, metavar="FILE", help="TOML overriding bench/gate/tolerances.toml")
    comparing.add_argument("--reference", metavar="ARCH", help="architecture whose speed change stands for the machine's (default: the median over all)")
    comparing.add_argument("--accept", nargs="+", action="extend", default=[], metavar="ARCH",
                      help="architectures whose parameter and FLOP changes are intended")
    comparing.add_argument("--out", type=Path, default=store.DEFAULT_OUT, metavar="DIR", help="where run folders are")
    comparing.set_defaults(handler=_compare)


def _add_ab(paired: argparse.ArgumentParser) -> None:
    from . import configs

    paired.add_argument("base", help="the base revision (a commit, tag or branch)")
    paired.add_argument("candidate", nargs="?", help="the candidate revision (default: the working tree, as it is)")
    paired.add_argument("--suite", default=configs.DEFAULT_SUITE, help="a built-in suite name (each side's own) or a .toml path")
    paired.add_argument("--arch", nargs="+", action="extend", metavar="A", help="architectures or wildcards (default: the suite's)")
    _add_yes(paired)
    paired.add_argument("--mode", help="the mode to measure in (default: the suite's first)")
    paired.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), help="default: auto")
    paired.add_argument("--arch-module", dest="side_modules", action="append", default=[], metavar="MODULE",
                        help="a plugin module of each side (a relative path is taken inside each side's checkout)")
    paired.add_argument("--threads", type=_positive_int, metavar="N", help="CPU threads per probe (default: the runtime's, "
                        "one per core); fewer than the cores keeps a busy machine from stalling the measured threads")
    paired.add_argument("--tolerance", type=_fraction, default=None, metavar="F",
                        help="throughput and latency, e.g. 0.05: 5%% (default)")
    paired.add_argument("--memory-tolerance", type=_fraction, default=None, metavar="F", help="peak memory (default 0.20)")
    paired.add_argument("--budget", type=_positive_number, default=420.0, metavar="S", help="seconds of rounds at most once the --min-rounds every verdict needs are done (default 420)")
    paired.add_argument("--min-rounds", type=_positive_int, default=6, metavar="N", help="rounds before judging (default 6, the fewest for a 95%% interval)")
    paired.add_argument("--max-rounds", type=_positive_int, default=40, metavar="N", help="default 40")
    paired.add_argument("--calibrate", action="store_true", help="A/A: BASE on both sides, every round the budget "
                        "allows; prints the noise floor (the smallest tolerance this machine supports in that time)")
    paired.add_argument("--repo", type=Path, default=Path("."), metavar="DIR", help="the git repository (default: here)")
    paired.set_defaults(handler=_ab)


def _add_baseline(baselines: argparse.ArgumentParser) -> None:
    from .gate import baseline

    baseline_commands = baselines.add_subparsers(dest="baseline_command", required=True, parser_class=_Parser)
    update = baseline_commands.add_parser("update", help="copy one or more runs into the baseline folder")
    update.add_argument("runs", nargs="+", metavar="RUN", help="run folders, records files or run ids: reruns of one suite")
    update.add_argument("--to", type=Path, default=baseline.DEFAULT_DIR, metavar="DIR", help="default: %(default)s")
    update.add_argument("--out", type=Path, default=store.DEFAULT_OUT, metavar="DIR", help="where run folders are")
    update.set_defaults(handler=_baseline_update)


# Each command: its one-line help and what adds its arguments (and its handler).
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "list": ("list the registered architectures", _add_list),
    "run": ("run a suite and write its records", _add_run),
    "report": ("print the tables of runs and write REPORT.md, plots and a CSV", _add_report),
    "compare": ("the regression gate: compare a candidate run with a baseline", _add_compare),
    "ab": ("the paired speed gate: two git revisions measured here, alternating", _add_ab),
    "baseline": ("manage the committed baseline of the regression gate", _add_baseline),
    "speed": ("the cost figures alone over batch sizes, image sizes and modes; no training", _add_speed),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """archbench's parser: every command, each with its arguments; where `command` names one, only that one's
    arguments are added (the others keep their name and help), since building a command's arguments imports
    what they name: suites, modes and datasets for `run`, which import torch."""
    parser = _Parser(prog="archbench", description="Compare neural-network architectures on equal terms.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (summary, add_arguments) in _COMMANDS.items():
        subcommand = commands.add_parser(name, help=summary)
        if command not in _COMMANDS or command == name:
            add_arguments(subcommand)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        args = build_parser(argv[0] if argv else None).parse_args(argv)
        args.command_line = shlex.join(["archbench", *argv])
        if getattr(args, "arch_module", None):
            import architectures

            for module in args.arch_module:
                architectures.load_module(module)
        return args.handler(args)
    except _user_errors() as error:
        print(f"archbench: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("archbench: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("archbench: terminated (SIGTERM)", file=sys.stderr)
        return 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _user_errors() -> tuple[type[Exception], ...]:
    """The exceptions `main` reports in one line: UserError, and the registry's own (an unknown name, a broken
    plugin) once this process has imported the registry, the only way one of them can have been raised."""
    registry = sys.modules.get("architectures")
    return (UserError,) if registry is None else (UserError, registry.UnknownArchitecture, registry.PluginError)


def _confirm(patterns: Sequence[str], yes: bool) -> None:
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


def _list(args: argparse.Namespace) -> int:
    import architectures

    names = architectures.resolve([args.pattern], task=args.task)
    rows = [architectures.get_spec(n) for n in names]
    width = max(len(s.name) for s in rows)
    for spec in rows:
        print(f"{spec.name:<{width}}  {spec.task:<8}  {spec.family:<8}  {spec.description}")
    return 0


# Flags that fix what a run measures: --resume takes them from the run's run.json and refuses new ones.
_CONFIGURING_FLAGS = (
    "suite", "arch", "dataset", "epochs", "batch_size", "device", "seeds", "limit_train", "limit_test", "data_root",
    "download", "out", "arch_timeout", "nproc", "backend", "scaling", "dist_timeout", "arch_module",
    "precision", "channels_last", "compile", "modes", "compile_backend", "shard", "shard_count",
    "image_size", "workers", "data_path", "no_augment", "skip_bad_images",
)


def _run(args: argparse.Namespace) -> int:
    from . import configs
    from .measure import modes, phases
    from .run import parallel, session, shards, suite
    from .results import report

    shard = None  # a resumed run keeps the shard its run.json records
    if args.resume is not None:
        config, strategy, arch_modules = _resumed(args)
    else:
        if args.retry_failed:
            raise UserError("--retry-failed goes with --resume RUN_DIR")
        mode = modes.from_flags(args.precision, bool(args.channels_last), args.compile)
        if mode is not None and args.modes is not None:
            raise UserError("--modes lists every mode; it does not go with --precision, --channels-last or --compile")
        config = configs.load(
            args.suite,
            epochs=args.epochs,
            batch_size=args.batch_size,
            architectures=args.arch,
            dataset=args.dataset,
            device=args.device,
            seeds=args.seeds,
            limit_train=args.limit_train,
            limit_test=args.limit_test,
            data_root=args.data_root,
            download=args.download,
            out=args.out,
            strict=args.strict,
            quiet=args.quiet,
            arch_timeout=args.arch_timeout,
            modes=args.modes or ([mode] if mode else None),
            compile_backend=args.compile_backend,
            data={"image_size": args.image_size, "num_workers": args.workers, "data_path": args.data_path,
                  "augment": False if args.no_augment else None, "skip_bad_images": args.skip_bad_images},
        )
        _confirm(config.architectures, args.yes)
        arch_modules = tuple(args.arch_module)
        launch = parallel.from_flags(args.nproc, args.backend, args.scaling, args.dist_timeout)
        strategy = _strategy(config, args.isolation, launch, args.devices)
        shard = shards.parse(args.shard) if args.shard else shards.from_environment(count=args.shard_count)
    echo = (lambda line: None) if config.quiet else print
    profile = phases.SuiteProfile() if args.profile else None
    try:
        run_dir = suite.run_suite(
            config, strategy, echo, args.command_line, arch_modules, resume=args.resume, retry_failed=args.retry_failed,
            shard=shard, profile=profile,
        )
    except session.Interrupted as interrupted:
        print(f"archbench: {interrupted}", file=sys.stderr)
        return interrupted.exit_code
    if run_dir is None:  # a rank other than 0 under torchrun; rank 0 prints the tables
        return 0

    records = read_records(run_dir / RECORDS)
    print(f"\n{report.tables(records)}\n")
    try:
        written = report.write_report(records, run_dir)
    except UserError as error:
        raise UserError(f"{error}; the records are whole: `archbench report {run_dir}` writes the report again") from None
    print(f"records: {run_dir / RECORDS}\nreport: {written}")
    failed = [named(r["architecture"], r.get("mode")) for r in records if r["status"] != "ok"]
    if profile is not None:
        print(f"\n{profile.render(phases.process_age_s())}")
    if failed:
        print(f"{len(failed)} run(s) did not finish: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed and config.strict else 0


def _speed(args: argparse.Namespace) -> int:
    from . import configs
    from .measure import modes
    from .results import report
    from .run import session, speed

    mode = modes.from_flags(args.precision, bool(args.channels_last), args.compile)
    if mode is not None and args.modes is not None:
        raise UserError("--modes lists every mode; it does not go with --precision, --channels-last or --compile")
    config = configs.load(
        args.suite, architectures=args.arch, device=args.device, out=args.out, quiet=args.quiet,
        arch_timeout=args.arch_timeout, modes=args.modes or ([mode] if mode else None),
    )
    _confirm(config.architectures, args.yes)
    sweep = speed.Sweep(tuple(args.batch_sizes), tuple(args.image_sizes), args.channels, args.classes, args.max_memory)
    echo = (lambda line: None) if config.quiet else print
    try:
        run_dir = speed.run_sweep(config, sweep, _strategy(config, args.isolation, None), echo, args.command_line,
                                  tuple(args.arch_module))
    except session.Interrupted as interrupted:
        print(f"archbench: {interrupted}", file=sys.stderr)
        return interrupted.exit_code
    records = read_records(run_dir / RECORDS)
    print(f"\n{report.tables(records)}\n")
    print(f"records: {run_dir / RECORDS}\nreport: {report.write_report(records, run_dir)}")
    return 0


def _strategy(config: RunConfig, isolation: str | None, launch, gpus: str | None = None):
    """How each pair runs: a fresh process (default), this process, a data-parallel group, or fresh processes
    on several GPUs at once (`gpus`: the --devices flag)."""
    from .run import devices, parallel, runner
    from .run.isolation import ChildProcess

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


def _resumed(args: argparse.Namespace):
    """The configuration, strategy and plugin modules of the interrupted run `args.resume`."""
    import architectures

    from . import configs
    from .run import parallel

    info = store.read_run_info(args.resume) if args.resume.is_dir() else {}
    if "config" not in info:  # a run stopped before its first record has no records file yet
        raise UserError(f"--resume {args.resume}: not a run folder (no {store.RUN_INFO} with a configuration)")
    if "speed" in info:
        raise UserError(f"--resume {args.resume}: a speed sweep's folder; speed sweeps are not resumed (run the sweep again)")
    given = [flag for flag in _CONFIGURING_FLAGS if getattr(args, flag) not in (None, False, [])]
    if args.suite == configs.DEFAULT_SUITE:
        given = [flag for flag in given if flag != "suite"]
    if given:
        flag = "--" + given[0].replace("_", "-").replace("seeds", "seed")
        where = args.resume / store.RUN_INFO
        raise UserError(f"{flag} cannot change a resumed run; --resume takes the configuration from {where}")
    started_in = Path(info.get("working_dir") or ".")  # plugin paths and module names are as given there
    if str(started_in) not in sys.path:
        sys.path.insert(0, str(started_in))
    arch_modules = tuple(
        str(started_in / module) if module.endswith(".py") else module for module in info.get("arch_modules", [])
    )
    for module in arch_modules:  # before the configuration: a plugin's task has its settings in it
        architectures.load_module(module)
    config = configs.from_dict(info["config"])
    config.quiet, config.strict = bool(args.quiet), bool(args.strict)  # how to show the run, not what it measures
    distributed = info.get("distributed")
    launch = parallel.Options(**distributed) if distributed else None
    isolation = args.isolation or info.get("isolation", "process")
    devices = args.devices or (",".join(info["devices"]) if info.get("devices") else None)
    return config, _strategy(config, None if launch else isolation, launch, devices), arch_modules


def _ab(args: argparse.Namespace) -> int:
    from .gate import ab
    from . import configs

    if args.calibrate and args.candidate is not None:
        raise UserError("--calibrate measures BASE against itself; give no CANDIDATE")
    if args.min_rounds < ab.MIN_ROUNDS:
        raise UserError(f"--min-rounds must be at least {ab.MIN_ROUNDS}: fewer paired ratios give no 95% interval")
    if args.max_rounds < args.min_rounds:
        raise UserError(f"--max-rounds ({args.max_rounds}) is below --min-rounds ({args.min_rounds})")
    tolerance = ab.TOLERANCE if args.tolerance is None else args.tolerance
    memory_tolerance = ab.MEMORY_TOLERANCE if args.memory_tolerance is None else args.memory_tolerance
    suite = args.suite
    if suite.endswith(".toml") or "/" in suite:  # a file: the same one for both sides
        suite = str(configs.suite_path(suite).resolve())
    _confirm(args.arch or (), args.yes)  # the suite's names are each side's, resolved by its own probe
    request = ab.Request(suite, tuple(args.arch or ()), args.mode, args.device, tuple(args.side_modules), args.threads)
    candidate = args.base if args.calibrate else args.candidate
    with ab.checkouts(args.repo.resolve(), args.base, candidate) as sides:
        print(f"base {sides[0].rev} ({sides[0].commit[:10]}) vs candidate {sides[1].rev}"
              + (f" ({sides[1].commit[:10]})" if sides[1].commit else f" ({sides[1].path})")
              + f": rounds alternate A B, B A, ...; budget {args.budget:.0f} s", flush=True)
        plan = ab.Rounds(
            budget_s=args.budget, min_rounds=args.min_rounds, max_rounds=args.max_rounds, until_budget=args.calibrate
        )
        result = ab.run(
            sides, ab.probe_measurer(request), tolerance, plan,
            echo=lambda line: print(line, file=sys.stderr, flush=True), memory_tolerance=memory_tolerance,
        )
    print(f"\n{ab.table(result)}\n")
    print(f"{result.rounds} rounds in {result.seconds:.0f} s; tolerance {tolerance:.0%} (peak memory {memory_tolerance:.0%}); "
          "each side measured by "
          f"its own code: base {result.harness.get('base')}, candidate {result.harness.get('candidate')}"
          + (f"; {args.threads} CPU thread(s) per probe" if args.threads else ""))
    if args.calibrate:
        floor = ab.noise_floor(result)
        for figure, width in floor.items():
            print(f"noise floor of {figure}: {width:.1%} (an A/A interval reached this far from 1)")
        return 0
    inconclusive = [line for line in result.lines if line.verdict == "inconclusive"]
    if inconclusive:
        print(f"{len(inconclusive)} figure(s) inconclusive within the budget: raise --budget or --tolerance", file=sys.stderr)
    failing = result.failing
    print(f"{len(failing)} failing: " + ", ".join(f"{l.architecture} {l.figure} {l.verdict}" for l in failing) if failing else "no regression")
    return 1 if failing else 0


def _terminate(signum, frame):
    raise Terminated()


def _report(args: argparse.Namespace) -> int:
    from .results import report

    paths = [store.records_path(run, args.out) for run in args.runs or [None]]
    records = distinct([(", ".join(map(str, run.paths)), run.records) for run in _merged(paths)])
    if not records:
        raise UserError(f"{', '.join(map(str, paths))}: no records")
    output = store.writable_folder(args.output, "--output") if args.output else paths[-1].parent
    reference = args.reference or next(
        (found for path in paths if (found := store.read_run_info(path.parent).get("config", {}).get("reference"))), None
    )
    print(report.tables(records, reference))
    try:
        written = report.write_report(records, output, html_page=args.html, reference=reference)
    except OSError as error:
        raise UserError(f"cannot write the report into {output}: {error.strerror or error}") from None
    print(f"\nreport: {written}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .gate import compare

    baseline = read_records(store.records_path(args.baseline, args.out))
    merged = _merged([store.records_path(run, args.out) for run in args.candidates])
    twice = shared([(", ".join(map(str, run.paths)), run.records) for run in merged])
    if twice:
        raise UserError(f"{twice[0]} and {twice[1]} hold the same records: a run given twice does not reproduce itself")
    candidates = [run.records for run in merged]
    names = {record["architecture"] for run in (baseline, *candidates) for record in run}
    tolerances = compare.load_tolerances(args.tolerances, names)
    compare.check_accepted(args.accept, names)
    if args.reference:
        tolerances = dataclasses.replace(tolerances, reference=args.reference)
    comparison = compare.reproduced([compare.compare(baseline, run, tolerances, tuple(args.accept)) for run in candidates])
    print(compare.render(comparison))
    failures = comparison.failures  # regressed, missing or not comparable
    if failures:
        named = ", ".join(
            f"{line.architecture} {line.figure}" + ("" if line.verdict == "regressed" else f" ({line.verdict})")
            for line in failures
        )
        print(f"archbench compare: {len(failures)} regression(s): {named}", file=sys.stderr)
        return 1
    return 0


def _merged(paths: list[Path]) -> list[runs.Run]:
    """The runs of `paths`, the shards of one sweep as one run; pairs missing from every shard said on stderr."""
    merged = runs.merge(paths)
    for run in merged:
        if run.missing:
            print(f"archbench: {runs.describe_missing(run)}", file=sys.stderr)
    return merged


def _baseline_update(args: argparse.Namespace) -> int:
    from .gate import baseline

    path = baseline.update([store.records_path(run, args.out) for run in args.runs], args.to)
    print(f"baseline: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
