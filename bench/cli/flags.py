"""Every command's arguments, each declared once: the value types, the flags several commands share, and per command
what it takes. A run's flags come in groups that say what they are for; the groups of what a run measures and how it
is launched are the flags `--resume` refuses (`configuring`), and their destinations are the names of what they set
(bench.configs.load takes the measured ones by those names)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..results import store

# The argument groups of `run` whose flags fix what a run measures: `--resume` takes them from the run's run.json.
MEASURED, FOLDER_DATA, LAUNCHED = "what the run measures", "folder datasets", "how the pairs are launched"
CONFIGURING = (MEASURED, FOLDER_DATA, LAUNCHED)
MODE_FLAGS = ("precision", "channels_last", "compile", "modes")  # one mode from three flags, or a list of modes


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def natural_int(text: str) -> int:
    return positive_int(text) if text.strip() not in ("0", "+0", "-0") else 0


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def mode_list(text: str) -> list[str]:
    modes = [part.strip() for part in text.split(",") if part.strip()]
    if not modes:
        raise argparse.ArgumentTypeError(f"expected modes separated by commas, got {text!r}")
    return modes


def fraction(text: str) -> float:
    try:
        value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.1 or 10%, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


def add_plugins(parser) -> None:
    parser.add_argument(
        "--arch-module", action="append", default=[], metavar="MODULE",
        help="import MODULE (a module name or a .py file) so its @register decorators add architectures (and its "
        "bench.tasks.register calls tasks: report and compare need the plugin of a task archbench does not ship); repeatable",
    )


def add_yes(parser) -> None:
    import architectures

    many = architectures.MANY_ZOO_MODELS
    parser.add_argument("--yes", action="store_true", help=f"run a zoo pattern that matches more than {many} models "
                        "(e.g. 'torchvision:*'); without --yes, such a pattern is refused")


def add_measured(parser, suite: str, arch_help: str) -> None:
    """The flags `run` and `speed` share of what is measured: the suite, the architectures, the device, the
    modes (one from --precision, --channels-last and --compile, or a list), where run folders go and how long
    one architecture may take."""
    from ..measure import modes

    parser.add_argument("--suite", default=suite, help="a built-in suite name or a .toml path")
    parser.add_argument("--arch", nargs="+", action="extend", dest="architectures", metavar="A", help=arch_help)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), help="default: auto")
    parser.add_argument("--precision", choices=modes.PRECISIONS, help="autocast precision (auto: bf16 where the "
                        "device runs it natively, else fp32); with --channels-last and --compile, the run's one mode")
    parser.add_argument("--channels-last", action="store_true", default=None, help="models and batches in channels_last")
    parser.add_argument("--compile", nargs="?", const="default", choices=modes.COMPILE_MODES, metavar="MODE",
                        help=f"torch.compile the models (MODE: {', '.join(modes.COMPILE_MODES)}; default: default)")
    parser.add_argument("--modes", type=mode_list, metavar="M,M", help="several modes, e.g. fp32,bf16+channels_last "
                        "(instead of --precision/--channels-last/--compile; the first is the reference)")
    parser.add_argument("--out", type=Path, metavar="DIR", help=f"where run folders go (default: {store.DEFAULT_OUT})")
    parser.add_argument("--arch-timeout", type=positive_number, metavar="S", help="seconds one architecture and seed "
                        "(or speed point) may take before its process is stopped and recorded as failed (default: no limit)")


def add_list(listing: argparse.ArgumentParser) -> None:
    from ..tasks import TASKS

    add_plugins(listing)
    listing.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard, e.g. 'cnn-*'")
    listing.add_argument("--task", help=f"only architectures of this task ({', '.join(TASKS)}, or a plugin's)")


def add_run(run: argparse.ArgumentParser) -> None:
    from .. import configs

    measured = run.add_argument_group(MEASURED)
    add_measured(measured, configs.DEFAULT_SUITE, "architectures or wildcards")
    add_plugins(measured)
    _add_training_data(measured)
    _add_folder_data(run.add_argument_group(FOLDER_DATA))
    _add_launch(run.add_argument_group(LAUNCHED))
    shown = run.add_argument_group("how the run is shown, resumed and isolated")
    add_yes(shown)
    shown.add_argument("--strict", action="store_true", default=None, help="exit 1 if any architecture failed")
    shown.add_argument("--quiet", action="store_true", default=None, help="no progress bars or per-run lines")
    shown.add_argument("--profile", action="store_true", help="at the end, print where the run's time went: each "
                       "phase (start-up, building, FLOP counting, warm-up, timing windows, training, evaluation, FID, "
                       "latency) summed over the pairs, and the time before, between and after them")
    shown.add_argument("--isolation", choices=("process", "none"), help="process (default): each architecture and "
                       "seed in a fresh child process; none: all in this one (for debugging with pdb)")
    shown.add_argument("--resume", type=Path, metavar="RUN_DIR", help="finish an interrupted run in its folder, with "
                       "its recorded configuration; pairs already recorded ok or diverged are skipped")
    shown.add_argument("--retry-failed", action="store_true", help="with --resume: also rerun the pairs recorded as failed")
    shown.add_argument("--devices", metavar="D,D", help="run pairs concurrently, one child process per GPU: "
                       "cuda:0,cuda:1,... or all (CUDA only: concurrent CPU runs corrupt each other's timings)")
    run.set_defaults(configuring=configuring(run))


def configuring(parser: argparse.ArgumentParser) -> tuple[tuple[str, argparse.Action], ...]:
    """(group title, action) of each flag in `parser`'s CONFIGURING groups: the flags that fix what a run measures."""
    return tuple(
        (group.title, action) for group in parser._action_groups if group.title in CONFIGURING for action in group._group_actions
    )


def settings(args: argparse.Namespace) -> dict:
    """The configuration's settings given on the command line, by the names bench.configs.load takes: each measured
    flag's value under its destination, the modes made of the mode flags (None: the suite's), and how the run is
    shown. UserError where --modes goes with a flag of the one mode."""
    from ..errors import UserError
    from ..measure import modes

    given = {
        action.dest: getattr(args, action.dest) for title, action in args.configuring
        if title in (MEASURED, FOLDER_DATA) and action.dest not in ("suite", "arch_module", *MODE_FLAGS)
    }
    mode = modes.from_flags(args.precision, bool(args.channels_last), args.compile)
    if mode is not None and args.modes is not None:
        raise UserError("--modes lists every mode; it does not go with --precision, --channels-last or --compile")
    return {**given, "modes": args.modes or ([mode] if mode else None), "quiet": args.quiet,
            "strict": getattr(args, "strict", None)}


def _add_training_data(measured) -> None:
    from ..data import LOADERS

    measured.add_argument("--dataset", help=f"one of: {', '.join(LOADERS)}; or folder:PATH, an image folder "
                          "(PATH/train/<class>/*, PATH/val/<class>/*, or PATH/<class>/* with a seeded hold-out)")
    measured.add_argument("--epochs", type=positive_int, help="epochs for every task (overrides the suite)")
    measured.add_argument("--batch-size", type=positive_int, help="batch size for every task (overrides the suite)")
    measured.add_argument("--seed", nargs="+", type=int, dest="seeds", metavar="N", help="one or more seeds")
    measured.add_argument("--limit-train", type=positive_int, metavar="N", help="use the first N training samples")
    measured.add_argument("--limit-test", type=positive_int, metavar="N", help="use the first N test samples")
    measured.add_argument("--data-root", metavar="DIR", help="dataset folder (default: $ARCHBENCH_DATA or "
                          "~/.cache/archbench/data)")
    measured.add_argument("--download", action="store_true", default=None, help="download missing dataset files")
    measured.add_argument("--compile-backend", metavar="NAME", help="torch.compile backend (default: inductor)")


def _add_folder_data(folder) -> None:
    folder.add_argument("--image-size", type=positive_int, metavar="PX", help="the side of the crops the models see "
                        "(default 224)")
    folder.add_argument("--workers", type=natural_int, dest="num_workers", metavar="N", help="DataLoader workers that "
                        "decode the images (default: one fewer than the CPUs, at most 8; 0, in the training process, "
                        "on 2 CPUs or fewer)")
    folder.add_argument("--data-path", choices=("auto", "memory", "stream"), help="decode every image once into "
                        "memory, or stream batches through the workers every epoch (auto: memory when it fits the "
                        "[data] cache_mb and training does not augment)")
    folder.add_argument("--no-augment", action="store_const", const=False, dest="augment", help="train on the "
                        "evaluation transform (resize, center crop) instead of RandomResizedCrop + flip")
    folder.add_argument("--skip-bad-images", action="store_const", const=True, help="skip unreadable, corrupt or "
                        "oversized images and count them in the records, instead of stopping")


def _add_launch(launched) -> None:
    from ..run import shards

    launched.add_argument("--shard", metavar="K/N", help="run only part K of N (K counted from 1: 1/3, 2/3, 3/3) of "
                          "the suite's pairs, split by expected cost; default: from a SLURM job array or a Kubernetes "
                          "Indexed Job when one sets it (--shard 1/1 runs everything)")
    launched.add_argument("--shard-count", type=positive_int, metavar="N", help="the N that goes with Kubernetes' "
                          f"0-based JOB_COMPLETION_INDEX (default: ${shards.SHARD_COUNT_ENV})")
    launched.add_argument("--nproc", type=positive_int, metavar="N", help="data-parallel on N local processes (torchrun)")
    launched.add_argument("--backend", choices=("auto", "gloo", "nccl"), help="collectives (default auto: nccl on "
                          "CUDA, else gloo)")
    launched.add_argument("--scaling", action="store_true", help="also time one process alone, for the scaling efficiency")
    launched.add_argument("--dist-timeout", type=positive_int, metavar="S", help="seconds a rank waits for the group "
                          "(default 300)")


def add_speed(speed: argparse.ArgumentParser) -> None:
    add_plugins(speed)
    add_yes(speed)
    measured = speed.add_argument_group(MEASURED)
    add_measured(measured, "speed", "classifiers or wildcards, e.g. torchvision:resnet50 'timm:convnext_*' resnet18")
    speed.add_argument("--batch-sizes", nargs="+", type=positive_int, metavar="N", default=[1, 8, 32],
                       help="batch sizes (default: 1 8 32)")
    speed.add_argument("--image-sizes", nargs="+", type=positive_int, metavar="PX", default=[224],
                       help="square input sizes in pixels (default: 224)")
    speed.add_argument("--channels", type=positive_int, default=3, help="input channels (default: 3)")
    speed.add_argument("--classes", type=positive_int, default=1000, help="output classes (default: 1000)")
    speed.add_argument("--max-memory", type=positive_number, metavar="MB", help="a training step whose peak memory "
                       "is above MB counts as out of memory (on a CPU; CUDA says so itself): the sweep steps down to the "
                       "largest batch that fits and tries no larger one")
    speed.add_argument("--quiet", action="store_true", default=None, help="no per-point lines")
    speed.add_argument("--isolation", choices=("process", "none"), help="process (default): each point in a fresh "
                       "child process; none: all in this one")
    speed.set_defaults(configuring=configuring(speed))


def add_report(show: argparse.ArgumentParser) -> None:
    add_plugins(show)
    show.add_argument("runs", nargs="*", metavar="RUN", help="run folders, records files or run ids (default: the "
                      "newest run); the shards of a sweep (archbench run --shard) together")
    show.add_argument("--out", type=Path, default=store.DEFAULT_OUT, metavar="DIR", help="where run folders are")
    show.add_argument("--output", type=Path, metavar="DIR", help="where the report goes (default: the last run's folder)")
    show.add_argument("--html", action="store_true", help="write one self-contained REPORT.html instead of REPORT.md")
    show.add_argument("--reference", metavar="ARCH", help="the architecture every other is compared with, in words "
                      "under each table (default: the suite's `reference`, else each table's first)")


def add_compare(comparing: argparse.ArgumentParser) -> None:
    add_plugins(comparing)
    comparing.add_argument("baseline", help="baseline run folder or records file (e.g. results/baseline)")
    comparing.add_argument(
        "candidates", nargs="+", metavar="CANDIDATE",
        help="candidate run folder or records file; with several (reruns), a regression must show in every one; "
        "the shards of one sweep (archbench run --shard) count as one candidate",
    )
    comparing.add_argument("--tolerances", type=Path, metavar="FILE", help="TOML overriding bench/gate/tolerances.toml")
    comparing.add_argument("--reference", metavar="ARCH", help="architecture whose speed change stands for the "
                           "machine's (default: the median over all)")
    comparing.add_argument("--accept", nargs="+", action="extend", default=[], metavar="ARCH",
                           help="architectures whose parameter and FLOP changes are intended")
    comparing.add_argument("--out", type=Path, default=store.DEFAULT_OUT, metavar="DIR", help="where run folders are")


def add_ab(paired: argparse.ArgumentParser) -> None:
    paired.add_argument("base", help="the base revision (a commit, tag or branch)")
    paired.add_argument("candidate", nargs="?", help="the candidate revision (default: the working tree, as it is)")
    paired.add_argument("--arch", nargs="+", action="extend", metavar="A", help="architectures or wildcards (default: the suite's)")
    add_yes(paired)
    add_pairing(paired)
    paired.add_argument("--calibrate", action="store_true", help="A/A: BASE on both sides, every round the budget "
                        "allows; prints the noise floor (the smallest tolerance this machine supports in that time)")
    paired.add_argument("--rounds-file", type=Path, metavar="FILE", help="write every round as JSON lines: each side's "
                        "figures by architecture, with what each timed window ran under (wall and CPU time, context "
                        "switches, steal, other processes' CPU)")


def add_pairing(paired, repo: bool = True) -> None:
    """The flags of how two revisions are measured side by side (`ab`, and `history confirm` and `bisect`, which
    measure through it): what each side's probe measures, the tolerance and the rounds."""
    paired.add_argument("--suite", help="a built-in suite name (each side's own) or a .toml path (default: the default "
                        "suite of archbench run)")
    paired.add_argument("--mode", help="the mode to measure in (default: the suite's first)")
    paired.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), help="default: auto")
    paired.add_argument("--arch-module", dest="side_modules", action="append", default=[], metavar="MODULE",
                        help="a plugin module of each side (a relative path is taken inside each side's checkout)")
    paired.add_argument("--threads", type=positive_int, metavar="N", help="CPU threads per probe (default: the runtime's, "
                        "one per core); fewer than the cores keeps a busy machine from stalling the measured threads")
    paired.add_argument("--repeats", type=positive_int, metavar="N", help="timed windows per figure and round, where "
                        "both sides' probes take it (default: the suite's [measure] repeats); more narrow a round for "
                        "little time where starting the probes takes most of it (one small model: see docs/gates.md)")
    paired.add_argument("--tolerance", type=fraction, default=None, metavar="F",
                        help="throughput and latency, e.g. 0.05: 5%% (default)")
    paired.add_argument("--memory-tolerance", type=fraction, default=None, metavar="F", help="peak memory (default 0.20)")
    paired.add_argument("--budget", type=positive_number, default=420.0, metavar="S", help="seconds of rounds at most "
                        "once the --min-rounds every verdict needs are done (default 420)")
    paired.add_argument("--min-rounds", type=positive_int, default=6, metavar="N", help="rounds before judging (default "
                        "6, the fewest for a 95%% interval)")
    paired.add_argument("--max-rounds", type=positive_int, default=40, metavar="N", help="default 40")
    if repo:
        paired.add_argument("--repo", type=Path, default=Path("."), metavar="DIR", help="the git repository (default: here)")


def add_baseline(baselines: argparse.ArgumentParser) -> None:
    from ..gate import baseline

    baseline_commands = baselines.add_subparsers(dest="baseline_command", required=True, parser_class=Parser)
    update = baseline_commands.add_parser("update", help="copy one or more runs into the baseline folder")
    update.add_argument("runs", nargs="+", metavar="RUN", help="run folders, records files or run ids: reruns of one suite")
    update.add_argument("--to", type=Path, default=baseline.DEFAULT_DIR, metavar="DIR", help="default: %(default)s")
    update.add_argument("--out", type=Path, default=store.DEFAULT_OUT, metavar="DIR", help="where run folders are")


def add_history(history: argparse.ArgumentParser) -> None:
    from ..history import store as histories

    commands = history.add_subparsers(dest="history_command", required=True, parser_class=Parser)
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--history", type=Path, metavar="DIR", help=f"the history folder (default: ${histories.ENVIRONMENT}, "
                       f"else {histories.DEFAULT})")
    ordered = argparse.ArgumentParser(add_help=False, parents=[where])
    ordered.add_argument("--repo", type=Path, default=Path("."), metavar="DIR", help="the git repository whose commits "
                         "order the history (default: here)")
    ordered.add_argument("--branch", default="HEAD", metavar="REV", help="whose first-parent line orders the commits "
                         "(default: HEAD)")

    _add_history_reading(commands, where, ordered)
    _add_history_measuring(commands, where, ordered)


def _add_history_reading(commands, where: argparse.ArgumentParser, ordered: argparse.ArgumentParser) -> None:
    """`history add`, `list`, `check` and `publish`: what reads the history (check --confirm measures too)."""
    add = commands.add_parser("add", parents=[where], help="file runs into the history (each record once)")
    add.add_argument("runs", nargs="+", metavar="RUN", help="run folders, records files or run ids under --out")
    add.add_argument("--out", type=Path, default=store.DEFAULT_OUT, metavar="DIR", help="where run folders are")
    add_plugins(add)

    add_plugins(commands.add_parser("list", parents=[ordered], help="the history's machines, series and commits"))

    check = commands.add_parser("check", parents=[ordered], help="steps in every series; exit 1 when a newest segment "
                                "is worse than the one before beyond the tolerance")
    check.add_argument("--since", metavar="REV", help="only the commits from REV on")
    check.add_argument("--tolerances", type=Path, metavar="FILE", help="compare's tolerances, overridden by FILE")
    check.add_argument("--confirm", action="store_true", help="measure each failing step's two commits again with "
                       "the paired A/B (takes the flags of `history confirm`)")
    add_pairing(check, repo=False)

    publish = commands.add_parser("publish", parents=[ordered], help="write the dashboard: a static site")
    publish.add_argument("--out", type=Path, required=True, metavar="DIR", help="where the site goes")
    publish.add_argument("--tolerances", type=Path, metavar="FILE", help="compare's tolerances, overridden by FILE")
    add_plugins(publish)


def _add_history_measuring(commands, where: argparse.ArgumentParser, ordered: argparse.ArgumentParser) -> None:
    """`history confirm`, `bisect` and `run`: what measures commits."""
    confirm = commands.add_parser("confirm", parents=[ordered], help="a step's two commits measured again side by "
                                  "side: confirmed or dismissed")
    confirm.add_argument("step", metavar="STEP", help="as `history check` names it: ARCH:MODE:FIGURE@BEFORE..AFTER")
    confirm.add_argument("--tolerances", type=Path, metavar="FILE", help="compare's tolerances, overridden by FILE")
    add_pairing(confirm, repo=False)

    bisect = commands.add_parser("bisect", help="the first commit slower than GOOD, by a paired A/B "
                                 "at every probe")
    bisect.add_argument("good", metavar="GOOD")
    bisect.add_argument("bad", metavar="BAD")
    bisect.add_argument("--arch", required=True, metavar="A", help="the architecture that got slower")
    bisect.add_argument("--figure", default="train_throughput", help="the figure that got worse (default: %(default)s)")
    add_pairing(bisect)

    backfill = commands.add_parser("run", parents=[where], help="measure each commit of a range and file its runs")
    backfill.add_argument("range", metavar="REV_RANGE", help="A..B: the first-parent commits after A up to B; or one commit")
    backfill.add_argument("--suite", help="a built-in suite name (each commit's own) or a .toml path (a relative path is "
                          "each commit's own file; default: the default suite of archbench run)")
    backfill.add_argument("--arch", nargs="+", action="extend", metavar="A", help="architectures or wildcards (default: the suite's)")
    backfill.add_argument("--every", type=positive_int, default=1, metavar="N", help="every Nth commit, counted back "
                          "from the newest (default 1)")
    backfill.add_argument("--arch-module", dest="side_modules", action="append", default=[], metavar="MODULE",
                          help="a plugin module of each commit (a relative path is taken inside its checkout)")
    backfill.add_argument("--repo", type=Path, default=Path("."), metavar="DIR", help="the git repository (default: here)")
