"""`archbench history`: add | list | check | confirm | bisect | run | publish. Reading a history (add, list, check,
publish) imports no torch; confirm, bisect and run measure, through the paired A/B's probes or each commit's own
`archbench run`."""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from tabulate import tabulate

from ..errors import UserError
from ..results import store as results
from ..history import store


def main(args: argparse.Namespace) -> int:
    handler = {
        "add": add, "list": listing, "check": check, "confirm": confirm, "bisect": bisect, "run": backfill,
        "publish": publish,
    }[args.history_command]
    return handler(args)


def add(args: argparse.Namespace) -> int:
    root = store.location(args.history)
    added = store.add(root, [results.records_path(run, args.out) for run in args.runs])
    print(f"filed {added.new} new record(s) of {added.runs} run(s) into {root}"
          + (f"; {added.known} were there already" if added.known else ""))
    return 0


def listing(args: argparse.Namespace) -> int:
    root, line, found = _read(args)
    for machine, series in _by_machine(found).items():
        rows = [[s.key.name(), len(s.points), line.short(s.points[0].commit) if s.points else "",
                 line.short(s.points[-1].commit) if s.points else "", len(s.off_line)] for s in series]
        print(f"\nmachine: {machine}\n")
        print(tabulate(rows, headers=["series", "commits", "first", "last", "off the line"], tablefmt="github",
                       disable_numparse=True))
    off = sorted({p.commit for s in found for p in s.off_line})
    if off:
        print(f"\nruns of {len(off)} commit(s) off the first-parent line of {line.branch}, kept but not plotted: "
              + ", ".join(c[:10] for c in off))
    return 0


def check(args: argparse.Namespace) -> int:
    from ..history import check as checking
    from ..history import verdicts

    root, line, found = _read(args, since=args.since)
    tolerances = _tolerances(args, found)
    steps = [step for series in found for step in checking.steps_of(series, tolerances)]
    confirmed = verdicts.confirmations(root)
    failing = checking.failing(steps, found)
    if args.confirm:
        for step in failing:
            if step.series.relative:
                confirmed[step.name] = _confirm_step(args, root, step)
    _present_steps(steps, line, confirmed)
    failing = [step for step in failing if confirmed.get(step.name, {}).get("state") != "dismissed"]
    points = sum(len(s.points) for s in found)
    print(f"\n{len(found)} series, {points} points on {len(line.commits)} first-parent commits of {line.branch}; "
          f"{len(steps)} step(s) found")
    if failing:
        print(f"archbench history check: {len(failing)} regression(s) in the newest segment: "
              + ", ".join(step.name for step in failing), file=sys.stderr)
        return 1
    return 0


def confirm(args: argparse.Namespace) -> int:
    from ..history import check as checking

    root, line, found = _read(args)
    tolerances = _tolerances(args, found)
    steps = {step.name: step for series in found for step in checking.steps_of(series, tolerances)}
    step = steps.get(args.step)
    if step is None:
        listed = ", ".join(sorted(steps)) or "none"
        raise UserError(f"no step {args.step!r} in the history (its steps: {listed})")
    if not step.series.relative:
        raise UserError(f"{args.step}: a quality figure; the paired A/B measures costs only (rerun the suite at both commits)")
    entry = _confirm_step(args, root, step)
    print(f"{step.name}: {entry['state']} (paired A/B {entry['ratio']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}] "
          f"{entry['verdict']}, {entry['rounds']} rounds in {entry['seconds']:.0f} s)")
    return 1 if entry["state"] == "confirmed" and step.verdict == "regressed" else 0


def bisect(args: argparse.Namespace) -> int:
    from ..gate.checkouts import git, toplevel
    from ..history import verdicts
    from ..history.commits import between

    repo = toplevel(args.repo.resolve(), "a bisection measures its commits")
    commits = between(repo, args.good, args.bad)
    target = _target(args, repo, args.arch, args.figure)
    print(f"bisecting {len(commits)} commit(s) after {args.good} up to {args.bad} for {args.arch} {args.figure}: "
          f"at most {verdicts.probes_needed(len(commits))} paired A/B probes against {args.good}", flush=True)
    found = verdicts.bisect(target, args.good, args.bad)
    probes = f"{len(found.probes)} probe(s) in {found.seconds:.0f} s"
    if found.first_bad is None:
        print(f"no first bad commit named: {found.reason} ({probes})")
        return 1
    measured = next(p for p in reversed(found.probes) if p.commit == found.first_bad)
    subject = git(repo, "log", "-1", "--format=%s", found.first_bad)
    print(f"first bad commit: {found.first_bad[:10]} {subject}: {args.figure} {measured.describe()} against "
          f"{args.good} ({probes})")
    return 0


def backfill(args: argparse.Namespace) -> int:
    from .. import configs
    from ..history import backfill as backfilling

    root = results.writable_folder(store.location(args.history), "history")
    commits = backfilling.commits_in(args.repo.resolve(), args.range, args.every)
    modules = tuple(flag for module in args.side_modules for flag in ("--arch-module", module))
    plan = backfilling.Plan(suite=args.suite or configs.DEFAULT_SUITE, architectures=tuple(args.arch or ()), flags=modules)
    machine = this_machine()
    print(f"backfill of {len(commits)} commit(s) into {root} on {machine}", flush=True)
    done, skipped, failed = backfilling.backfill(
        args.repo.resolve(), root, commits, plan, machine, echo=lambda line: print(line, flush=True)
    )
    print(f"{done} measured, {skipped} already in the history, {failed} failed")
    return 1 if failed else 0


def publish(args: argparse.Namespace) -> int:
    from ..history import dashboard

    root, line, found = _read(args)
    page = dashboard.write(args.out, root, line, found, _tolerances(args, found))
    print(f"dashboard: {page}")
    return 0


# --- shared ---------------------------------------------------------------------------------------------


def _read(args: argparse.Namespace, since: str | None = None):
    from ..gate.checkouts import toplevel
    from ..history import commits, series

    root = store.location(args.history)
    if not (root / "runs").is_dir():
        raise UserError(f"no history at {root}: file runs into it with `archbench history add RUN`")
    line = commits.first_parent(toplevel(args.repo.resolve(), "a history orders runs by its commits"), args.branch, since)
    found = series.load(root, line)
    if not found:
        raise UserError(f"the history at {root} holds no measured figures: file runs with `archbench history add RUN`")
    return root, line, found


def _tolerances(args: argparse.Namespace, found):
    from ..gate import compare

    return compare.load_tolerances(getattr(args, "tolerances", None), {s.key.architecture for s in found})


def _by_machine(found) -> dict[str, list]:
    grouped = defaultdict(list)
    for series in found:
        grouped[series.key.machine].append(series)
    return grouped


def _present_steps(steps, line, confirmed: dict[str, dict]) -> None:
    grouped = defaultdict(list)
    for step in steps:
        grouped[step.series.key.machine].append(step)
    for machine, found in grouped.items():
        rows = []
        for step in found:
            before, after = step.medians()
            state = confirmed.get(step.name, {}).get("state", "")
            rows.append([
                step.series.key.name(), f"{step.before_commit[:10]}..{step.after_commit[:10]}", f"{before:.4g}",
                f"{after:.4g}", step.describe(), step.verdict + (" (newest)" if step.newest else ""), state,
            ])
        print(f"\nmachine: {machine}\n")
        headers = ["series", "commits", "before", "after", "change [95% CI]", "verdict", "paired A/B"]
        print(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))


def _target(args: argparse.Namespace, repo: Path, architecture: str, figure: str):
    from ..gate import ab
    from ..history import verdicts
    from .gating import Pairing

    pairing = Pairing.of(args, (architecture,))
    return verdicts.Target(
        repo=repo, architecture=architecture, figure=figure, measure=ab.probe_measurer(pairing.request),
        tolerance=pairing.tolerance, plan=pairing.plan, echo=lambda text: print(text, file=sys.stderr, flush=True),
    )


def _confirm_step(args: argparse.Namespace, root: Path, step) -> dict:
    from ..gate.checkouts import toplevel
    from ..history import verdicts

    repo = toplevel(args.repo.resolve(), "a confirmation measures two commits")
    target = _target(args, repo, step.series.key.architecture, step.series.key.figure)
    regression = (step.change.difference < 0) == step.series.figure.higher_is_better  # the step made it worse
    return verdicts.confirm(target, step.name, step.before_commit, step.after_commit, regression, root, this_machine())


def this_machine() -> str:
    """This machine as the history names machines (bench.history.store.machine), for CPU runs of one process."""
    import torch

    from ..run.environment import capture

    return store.machine({**capture(torch.device("cpu")), "world_size": 1})
