"""archbench's command line: list | run | speed | report | compare | ab | baseline | history. User mistakes end with one line
on stderr and exit 2.

Each command goes parse -> request -> execute -> present: `flags` declares its arguments (each setting once), and
its handler, imported only when the command runs, turns them into a request (a configuration, a strategy),
executes it and presents the outcome as tables and an exit status. Reading results (report, compare, baseline)
imports neither torch nor the registry nor the code that runs models.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import Terminated, UserError
from . import flags


@dataclass(frozen=True)
class Command:
    """A command: its one-line help, what adds its arguments, and its handler (`module:function` in this package)."""

    summary: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: str


COMMANDS: dict[str, Command] = {
    "list": Command("list the registered architectures", flags.add_list, "reading:list_architectures"),
    "run": Command("run a suite and write its records", flags.add_run, "running:run"),
    "report": Command("print the tables of runs and write REPORT.md, plots and a CSV", flags.add_report, "reading:report"),
    "compare": Command("the regression gate: compare a candidate run with a baseline", flags.add_compare, "gating:compare"),
    "ab": Command("the paired speed gate: two git revisions measured here, alternating", flags.add_ab, "gating:ab"),
    "baseline": Command("manage the committed baseline of the regression gate", flags.add_baseline, "gating:baseline"),
    "history": Command("runs over commits: file them, find steps, confirm and bisect them, publish a dashboard",
                       flags.add_history, "history:main"),
    "speed": Command("the cost figures alone over batch sizes, image sizes and modes; no training", flags.add_speed,
                     "running:speed"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """archbench's parser: every command, each with its arguments; where `command` names one, only that one's
    arguments are added (the others keep their name and help), since building a command's arguments imports
    what they name: suites, modes and datasets for `run`, which import torch."""
    parser = flags.Parser(prog="archbench", description="Compare neural-network architectures on equal terms.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=flags.Parser)
    for name, spec in COMMANDS.items():
        subcommand = commands.add_parser(name, help=spec.summary)
        if command not in COMMANDS or command == name:
            spec.add_arguments(subcommand)
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
        module, function = COMMANDS[args.command].handler.split(":")
        return getattr(importlib.import_module(f".{module}", __name__), function)(args)
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


def _terminate(signum, frame):
    raise Terminated()
