"""The paired speed gate: two revisions measured on this machine, alternating, in fresh processes.

`archbench ab BASE [CANDIDATE]` checks each revision out into a temporary git worktree (CANDIDATE defaults to
the working tree as it is, uncommitted changes included) and measures the selected architectures' cost
figures with each side's own code: `python -m bench.probe` run inside that side's checkout (its `bench/`, its
`architectures/`, its suites; plugin modules given as relative paths are that side's files). Measurements
alternate in rounds, A B, B A, A B, ..., each side in a fresh process, so that what drifts on the machine
(load, clocks, thermal state) touches both sides alike; within a round the two processes take turns window by
window where both sides' probes can (probe version 2). Every figure is judged on the per-round paired ratios
candidate / base: their median, and a distribution-free 95% interval for their center (Wilcoxon signed-rank,
on log ratios). A figure is `regressed` only when the whole interval lies beyond the tolerance, `improved`
symmetrically, `ok` when it reaches past the tolerance on neither side or only on the better one, and
`inconclusive` when it reaches past it on the worse side only in part, which buys more rounds within the time
budget: what a gate asks is whether the candidate is worse. Parameters and FLOPs must be equal (`changed` otherwise).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tabulate import tabulate

from ..results.aggregate import finite
from ..errors import UserError
from ..scratch import folder as scratch_folder
from ..tasks import FIGURES
from ..stats import ratio_interval

TOLERANCE = 0.05  # throughput and latency
# A CPU's peak memory is the process's resident set (bench.measure.memory.peak_memory): 0.85 to 1.20 from one fresh
# process to the next for unchanged code on this kind of VM, so it gets a tolerance of its own.
MEMORY_TOLERANCE = 0.20
MIN_ROUNDS = 6  # the fewest paired ratios for which the signed-rank interval at 95% is finite
# (figure, higher is better) judged on paired ratios: the task table's cost figures; EXACT figures must be equal.
TIMED = tuple((figure.key, figure.higher_is_better) for figure in FIGURES if figure.kind == "cost")
EXACT = tuple(figure.key for figure in FIGURES if figure.kind == "structure")
MEMORY = ("peak_memory_mb",)
FAILING = ("regressed", "changed", "failed")


@dataclass(frozen=True)
class Side:
    """One side of the comparison: `label` (base or candidate), the revision as given, its commit, its checkout."""

    label: str
    rev: str
    commit: str | None
    path: Path


@dataclass(frozen=True)
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

    def command(self, python: str) -> list[str]:
        command = [python, "-m", "bench.probe", "--suite", self.suite]
        command += ["--arch", *self.architectures] if self.architectures else []
        command += ["--mode", self.mode] if self.mode else []
        command += ["--device", self.device] if self.device else []
        for module in self.arch_modules:
            command += ["--arch-module", module]
        return command


@dataclass
class Line:
    architecture: str
    figure: str
    base: float | None
    candidate: float | None
    ratio: float | None = None
    low: float | None = None
    high: float | None = None
    verdict: str = "ok"
    pairs: int = 0


@dataclass
class Result:
    lines: list[Line]
    rounds: int
    seconds: float
    order: list[str] = field(default_factory=list)  # the sides' labels in the order they were measured
    harness: dict[str, str] = field(default_factory=dict)  # side label -> the bench module that measured it

    @property
    def failing(self) -> list[Line]:
        return [line for line in self.lines if line.verdict in FAILING]


# --- checkouts ------------------------------------------------------------------------------------------


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"git {' '.join(args)}: {(done.stderr.strip().splitlines() or ['failed'])[-1]}")
    return done.stdout.strip()


def commit_of(repo: Path, rev: str) -> str:
    """The full commit id `rev` names in `repo`; UserError for an unknown revision."""
    done = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise UserError(f"unknown revision {rev!r} in {repo}")
    return done.stdout.strip()


@contextmanager
def checkouts(repo: Path, base: str, candidate: str | None) -> Iterator[tuple[Side, Side]]:
    """Base (and candidate, unless None: the working tree of `repo`) checked out into temporary worktrees,
    detached; removed afterwards."""
    if not (repo / ".git").exists() and subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--git-dir"], capture_output=True
    ).returncode != 0:
        raise UserError(f"{repo} is not a git repository (archbench ab compares two revisions of one)")
    root = Path(git(repo, "rev-parse", "--show-toplevel"))
    commits = {"base": commit_of(root, base)}
    if candidate is not None:
        commits["candidate"] = commit_of(root, candidate)
    scratch = scratch_folder("ab")
    added = []
    try:
        sides = {}
        for label, commit in commits.items():
            path = scratch / label
            git(root, "worktree", "add", "--detach", "--quiet", str(path), commit)
            added.append(path)
            sides[label] = Side(label, base if label == "base" else candidate, commit, path)
        if candidate is None:
            sides["candidate"] = Side("candidate", "working tree", None, root)
        yield sides["base"], sides["candidate"]
    finally:
        for path in added:
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(path)], capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)


# --- measuring ------------------------------------------------------------------------------------------

# Measures both sides of one round, `first` starting; returns their figures in that order.
Measurer = Callable[[Side, Side], tuple[dict[str, dict], dict[str, dict]]]
TURN_ORDER = (0, 1, 1, 0)  # whose turn it is, cycling: first, second, second, first


def one_after_the_other(measure_side: Callable[[Side], dict[str, dict]]) -> Measurer:
    """A measurer that measures the first side, then the second."""
    return lambda first, second: (measure_side(first), measure_side(second))


def probe_measurer(request: Request, python: str = sys.executable) -> Measurer:
    """Both sides in fresh `python -m bench.probe` processes inside their checkouts: each side's own code.

    Where both sides' probes take turns (probe version 2), the two processes run at once and alternate timed
    window by timed window (first, second, second, first, ...), so that a slower spell of the machine, which
    on a shared VM comes and goes within seconds, falls on both sides alike; otherwise one process runs after
    the other."""

    def measure(first: Side, second: Side) -> tuple[dict[str, dict], dict[str, dict]]:
        if min(probe_version(first), probe_version(second)) >= 2:
            return _taking_turns(request, python, (first, second))
        return one_after_the_other(lambda side: _alone(request, python, side))(first, second)

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


def _alone(request: Request, python: str, side: Side) -> dict[str, dict]:
    try:
        done = subprocess.run(
            request.command(python), cwd=side.path, env=_environment(side, request.threads), capture_output=True, text=True,
            timeout=request.timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise UserError(f"{side.label} ({side.rev}): the probe ran past {request.timeout_s:.0f} s") from None
    figures: dict[str, dict] = {}
    for line in done.stdout.splitlines():
        _take(line, figures)
    return _checked(side, done.returncode, figures, done.stderr)


def _taking_turns(request: Request, python: str, sides: tuple[Side, Side]) -> tuple[dict[str, dict], dict[str, dict]]:
    with ExitStack() as stack:
        errors = [stack.enter_context(tempfile.TemporaryFile("w+")) for _ in sides]
        processes = [
            subprocess.Popen(
                [*request.command(python), "--turns"], cwd=side.path, env=_environment(side, request.threads), text=True,
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


def order_of_round(index: int) -> tuple[int, int]:
    """Which side goes first in round `index`: base, candidate; then candidate, base; and so on (A B B A A B ...)."""
    return (0, 1) if index % 2 == 0 else (1, 0)


def run(
    sides: tuple[Side, Side],
    measure: Measurer,
    tolerance: float,
    budget_s: float,
    min_rounds: int = MIN_ROUNDS,
    max_rounds: int = 40,
    until_budget: bool = False,
    echo: Callable[[str], None] = lambda line: None,
    memory_tolerance: float = MEMORY_TOLERANCE,
) -> Result:
    """Alternating rounds until no timed figure is inconclusive (after `min_rounds`), or `max_rounds`, or until
    another round would exceed `budget_s`; with `until_budget` (calibration) every round the budget allows."""
    started = time.monotonic()
    samples: tuple[list[dict], list[dict]] = ([], [])
    order: list[str] = []
    rounds = 0
    while True:
        first, second = order_of_round(rounds)
        measured = measure(sides[first], sides[second])
        for index, figures in zip((first, second), measured):
            samples[index].append(figures)
            order.append(sides[index].label)
        rounds += 1
        elapsed = time.monotonic() - started
        echo(f"round {rounds}: {elapsed:.0f} s")
        lines = judge(samples[0], samples[1], tolerance, memory_tolerance)
        if rounds < min_rounds:
            continue
        settled = not any(line.verdict == "inconclusive" for line in lines)
        if rounds >= max_rounds or (settled and not until_budget) or elapsed * (rounds + 1) / rounds > budget_s:
            harness = {side.label: _harness(samples[i]) for i, side in enumerate(sides)}
            return Result(lines, rounds, elapsed, order, harness)


def _harness(rounds: list[dict]) -> str:
    files = {item.get("bench_file", "?") for measured in rounds for item in measured.values()}
    return ", ".join(sorted(str(Path(f).parent) for f in files))


def round_ratio(base: dict, candidate: dict, key: str) -> float | None:
    """Figure `key` of one round, candidate / base. Where the two probes took turns, the median of the ratios of
    their windows side by side (each pair a fraction of a second apart); otherwise the ratio of the medians."""
    b, c = base.get(key), candidate.get(key)
    if not (_positive(b) and _positive(c)):
        return None
    windows = base.get(f"{key}_repeats") or [], candidate.get(f"{key}_repeats") or []
    if base.get("turns") and candidate.get("turns") and windows[0] and len(windows[0]) == len(windows[1]):
        pairs = [(x, y) for x, y in zip(*windows) if _positive(x) and _positive(y)]
        if pairs:
            return statistics.median(y / x for x, y in pairs)
    return c / b


def _positive(value: object) -> bool:
    return finite(value) and value > 0


def verdict(low: float, high: float, tolerance: float, higher_is_better: bool) -> str:
    """`regressed` when the whole ratio interval is worse than the tolerance, `improved` when it is better,
    `inconclusive` when only part of it is worse, `ok` otherwise: within the tolerance, or reaching past it on
    the better side only (more rounds would only tell ok from improved, which no gate needs)."""
    if higher_is_better:  # as a cost: >1 is worse
        low, high = (1 / high if high > 0 else math.inf), (1 / low if low > 0 else math.inf)
    if low > 1 + tolerance:
        return "regressed"
    if high < 1 - tolerance:
        return "improved"
    if high <= 1 + tolerance:
        return "ok"
    return "inconclusive"


def judge(
    base_rounds: list[dict], candidate_rounds: list[dict], tolerance: float, memory_tolerance: float = MEMORY_TOLERANCE
) -> list[Line]:
    """Every architecture's figures over the rounds so far (rounds where both sides measured it); peak memory
    against `memory_tolerance`, every other timed figure against `tolerance`."""
    lines = []
    names = list(dict.fromkeys(name for measured in base_rounds for name in measured))
    for name in names:
        pairs = [(b[name], c.get(name)) for b, c in zip(base_rounds, candidate_rounds) if name in b]
        ok = [(b, c) for b, c in pairs if c is not None and b["status"] == "ok" and c["status"] == "ok"]
        if not ok:
            broken = next((c for _, c in pairs if c is None or c["status"] != "ok"), None)
            base_broken = next((b for b, _ in pairs if b["status"] != "ok"), None)
            if base_broken is not None:
                lines.append(Line(name, "status", None, None, verdict="base failed"))
            else:
                error = "absent" if broken is None else broken.get("error")
                lines.append(Line(name, f"status: {error}", None, None, verdict="failed"))
            continue
        for key in EXACT:
            b, c = ok[-1][0].get(key), ok[-1][1].get(key)
            if b is not None:
                lines.append(Line(name, key, b, c, verdict="ok" if b == c else "changed", pairs=len(ok)))
        for key, higher_is_better in TIMED:
            rounds = [(b, c, round_ratio(b, c, key)) for b, c in ok]
            rounds = [(b[key], c[key], ratio) for b, c, ratio in rounds if ratio is not None]
            if not rounds:
                continue
            median, low, high = ratio_interval([ratio for _, _, ratio in rounds])
            lines.append(Line(
                name, key, statistics.median(b for b, _, _ in rounds), statistics.median(c for _, c, _ in rounds),
                median, low, high, verdict(low, high, memory_tolerance if key in MEMORY else tolerance, higher_is_better),
                len(rounds),
            ))
    return lines


# --- output ---------------------------------------------------------------------------------------------


def table(result: Result) -> str:
    rows = []
    for line in result.lines:
        if line.ratio is None:
            ratio = "" if line.base is None else ("same" if line.verdict == "ok" else f"{line.base:,.0f} -> {line.candidate:,.0f}")
        else:
            high = "inf" if math.isinf(line.high) else f"{line.high:.3f}"
            ratio = f"{line.ratio:.3f} [{line.low:.3f}, {high}]"
        base = "" if line.base is None else f"{line.base:.4g}"
        candidate = "" if line.candidate is None else f"{line.candidate:.4g}"
        rows.append([line.architecture, line.figure, base, candidate, ratio, line.verdict])
    headers = ["architecture", "figure", "base", "candidate", "ratio [95% CI]", "verdict"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def noise_floor(result: Result) -> dict[str, float]:
    """Per timed figure, the widest distance of an interval's end from 1 over the architectures: the smallest
    tolerance at which every figure of this (A/A) comparison would have been judged `ok`."""
    floor: dict[str, float] = {}
    for line in result.lines:
        if line.low is not None and line.high is not None:
            width = max(1 - line.low, line.high - 1)
            floor[line.figure] = max(floor.get(line.figure, 0.0), width)
    return floor
