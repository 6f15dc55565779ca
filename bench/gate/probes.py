"""Measuring the two sides of one round: each side's own `python -m bench.probe` in a fresh process inside its
checkout, the two taking turns window by window where both probes can (probe version 2), else one after the
other. Promises each side's figures by architecture, or a UserError that names the side and why its probe failed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .checkouts import Side



@dataclass(frozen=True, kw_only=True)
class Request:
    """What to measure on each side: the suite (a built-in name or an absolute path), architectures (empty: the
    suite's), mode, device."""

    suite: str
    architectures: tuple[str, ...]
    mode: str | None = None
    device: str | None = None
    arch_modules: tuple[str, ...] = ()
    threads: int | None = None  # CPU threads per probe (OMP_NUM_THREADS); None: the runtime's default
    timeout_s: float = 900.0
    repeats: int | None = None  # windows per figure (None: the suite's), where both probes take it (version 3)

    def command(self, python: str, version: int = 2) -> list[str]:
        """The probe's command line, for probes of `version` (the lower of the two sides')."""
        command = [python, "-m", "bench.probe", "--suite", self.suite]
        command += ["--repeats", str(self.repeats)] if self.repeats and version >= 3 else []
        command += ["--arch", *self.architectures] if self.architectures else []
        command += ["--mode", self.mode] if self.mode else []
        command += ["--device", self.device] if self.device else []
        for module in self.arch_modules:
            command += ["--arch-module", module]
        return command


# Measures both sides of one round, `first` starting; returns their figures in that order.
Measurer = Callable[[Side, Side], tuple[dict[str, dict], dict[str, dict]]]
# Whose turn it is, cycling: first, second. Every window then follows the other process's (first, second, second,
# first made every other pair one window that followed its own process's and ran 12-19% faster: docs/gates.md).
TURN_ORDER = (0, 1)


def one_after_the_other(measure_side: Callable[[Side], dict[str, dict]]) -> Measurer:
    """A measurer that measures the first side, then the second."""
    return lambda first, second: (measure_side(first), measure_side(second))


def probe_measurer(request: Request, python: str = sys.executable) -> Measurer:
    """Both sides in fresh `python -m bench.probe` processes inside their checkouts: each side's own code.

    Where both sides' probes take turns (probe version 2), the two processes run at once and alternate timed
    window by timed window (first, second, first, second, ...), so that a slower spell of the machine, which
    on a shared VM comes and goes within seconds, falls on both sides alike; otherwise one process runs after
    the other."""

    def measure(first: Side, second: Side) -> tuple[dict[str, dict], dict[str, dict]]:
        version = min(probe_version(first), probe_version(second))
        if version >= 2:
            return _taking_turns(request, python, (first, second), version)
        return one_after_the_other(lambda side: _alone(request, python, side, version))(first, second)

    return measure


def probe_version(side: Side) -> int:
    """The version of the measuring entry point `side` runs (its own bench/probe.py, else this harness's)."""
    harness = side.path / "bench"
    probe = harness / "probe.py" if harness.is_dir() else Path(__file__).parent.parent / "probe.py"
    if not probe.is_file():
        raise UserError(
            f"{side.label} ({side.rev}): this revision has no measuring entry point (bench/probe.py); pick a later base"
        )
    found = re.search(r"^PROBE_VERSION = (\d+)", probe.read_text(), re.MULTILINE)
    return int(found.group(1)) if found else 1


def _environment(side: Side, threads: int | None) -> dict[str, str]:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(side.path), os.environ.get("PYTHONPATH", "")])}
    if threads is not None:  # read when torch starts, so it holds for any revision's probe
        environment.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return environment


def _alone(request: Request, python: str, side: Side, version: int) -> dict[str, dict]:
    try:
        done = subprocess.run(
            request.command(python, version), cwd=side.path, env=_environment(side, request.threads), capture_output=True, text=True,
            timeout=request.timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise UserError(f"{side.label} ({side.rev}): the probe ran past {request.timeout_s:.0f} s") from None
    figures: dict[str, dict] = {}
    for line in done.stdout.splitlines():
        _take(line, figures)
    return _checked(side, done.returncode, figures, done.stderr)


def _taking_turns(
    request: Request, python: str, sides: tuple[Side, Side], version: int
) -> tuple[dict[str, dict], dict[str, dict]]:
    with ExitStack() as stack:
        errors = [stack.enter_context(tempfile.TemporaryFile("w+")) for _ in sides]
        processes = [
            subprocess.Popen(
                [*request.command(python, version), "--turns"], cwd=side.path, env=_environment(side, request.threads), text=True,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=error,
            )
            for side, error in zip(sides, errors)
        ]
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            for process in processes:
                process.kill()

        timer = threading.Timer(request.timeout_s, expire)
        timer.start()
        figures: tuple[dict[str, dict], dict[str, dict]] = ({}, {})
        try:
            _give_turns(processes, figures)
        finally:
            timer.cancel()
            for process in processes:  # asked first, so that a probe removes its scratch folder
                if process.poll() is None:
                    process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if expired.is_set():
            raise UserError(f"the probes ran past {request.timeout_s:.0f} s")
        for error in errors:
            error.seek(0)
        for item in (*figures[0].values(), *figures[1].values()):
            item["turns"] = True
        first, second = (
            _checked(side, process.returncode, found, error.read())
            for side, process, found, error in zip(sides, processes, figures, errors)
        )
        return first, second


def _give_turns(processes: list[subprocess.Popen], figures: tuple[dict[str, dict], dict[str, dict]]) -> None:
    """Lets the two probes run one at a time, timed window by timed window, in TURN_ORDER, until both end."""
    waiting = [_until_turn(process, found) for process, found in zip(processes, figures)]
    turn = 0
    while any(waiting):
        index = TURN_ORDER[turn % len(TURN_ORDER)]
        index = index if waiting[index] else 1 - index
        turn += 1
        try:
            processes[index].stdin.write("\n")
            processes[index].stdin.flush()
        except OSError:  # it ended; its exit status says how
            waiting[index] = False
            continue
        waiting[index] = _until_turn(processes[index], figures[index])


def _until_turn(process: subprocess.Popen, figures: dict[str, dict]) -> bool:
    """Reads the probe's output into `figures` until it asks for its turn (True) or ends (False)."""
    for line in process.stdout:
        if _take(line, figures):
            return True
    return False


def _take(line: str, figures: dict[str, dict]) -> bool:
    """Files one line of probe output into `figures`; True when it is a request for a turn."""
    if not line.startswith("{"):
        return False
    item = json.loads(line)
    if item.get("turn"):
        return True
    figures[item["architecture"]] = item
    return False


def _checked(side: Side, returncode: int, figures: dict[str, dict], stderr: str) -> dict[str, dict]:
    if returncode != 0 or not figures:
        raise UserError(f"{side.label} ({side.rev}): {_gist(stderr, side.path) or f'exit status {returncode}'}")
    return figures


def _gist(stderr: str, folder: Path) -> str:
    """A failed probe's last stderr line, with the file and line of the innermost frame its traceback names (a
    SyntaxError's is where the bad code is), relative to the side's checkout."""
    lines = stderr.strip().splitlines()
    if not lines:
        return ""
    frames = [found for line in lines if (found := re.match(r'\s*File "(.+)", line (\d+)', line))]
    if not frames:
        return lines[-1]
    file = Path(frames[-1][1])
    shown = file.relative_to(folder) if file.is_relative_to(folder) else file
    return f"{lines[-1]} ({shown}:{frames[-1][2]})"

