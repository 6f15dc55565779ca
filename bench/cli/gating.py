"""The gates on the command line: `archbench compare` (a candidate run against a baseline), `archbench ab` (two
revisions measured here, alternating) and `archbench baseline update`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import TYPE_CHECKING

from ..errors import UserError
from ..results import store
from ..results.records import read_records, shared
from .reading import merged

if TYPE_CHECKING:
    from ..gate.ab import Request, Rounds


def compare(args: argparse.Namespace) -> int:
    from ..gate import compare as gate

    baseline = read_records(store.records_path(args.baseline, args.out))
    candidate_runs = merged([store.records_path(run, args.out) for run in args.candidates])
    twice = shared([(", ".join(map(str, run.paths)), run.records) for run in candidate_runs])
    if twice:
        raise UserError(f"{twice[0]} and {twice[1]} hold the same records: a run given twice does not reproduce itself")
    candidates = [run.records for run in candidate_runs]
    names = {record["architecture"] for run in (baseline, *candidates) for record in run}
    tolerances = gate.load_tolerances(args.tolerances, names)
    gate.check_accepted(args.accept, names)
    if args.reference:
        tolerances = dataclasses.replace(tolerances, reference=args.reference)
    comparison = gate.reproduced([gate.compare(baseline, run, tolerances, tuple(args.accept)) for run in candidates])
    print(gate.render(comparison))
    failures = comparison.failures  # regressed, missing or not comparable
    if failures:
        listed = ", ".join(
            f"{line.architecture} {line.figure}" + ("" if line.verdict == "regressed" else f" ({line.verdict})")
            for line in failures
        )
        print(f"archbench compare: {len(failures)} regression(s): {listed}", file=sys.stderr)
        return 1
    return 0


def ab(args: argparse.Namespace) -> int:
    from ..gate import ab as paired
    from .running import confirm

    if args.calibrate and args.candidate is not None:
        raise UserError("--calibrate measures BASE against itself; give no CANDIDATE")
    confirm(args.arch or (), args.yes)  # the suite's names are each side's, resolved by its own probe
    pairing = Pairing.of(args, tuple(args.arch or ()))
    plan = dataclasses.replace(pairing.plan, until_budget=args.calibrate)
    with paired.checkouts(args.repo.resolve(), args.base, args.base if args.calibrate else args.candidate) as sides:
        print(f"base {sides[0].rev} ({sides[0].commit[:10]}) vs candidate {sides[1].rev}"
              + (f" ({sides[1].commit[:10]})" if sides[1].commit else f" ({sides[1].path})")
              + f": rounds alternate A B, B A, ...; budget {args.budget:.0f} s", flush=True)
        result = paired.run(
            sides, paired.probe_measurer(pairing.request), pairing.tolerance, plan,
            echo=lambda line: print(line, file=sys.stderr, flush=True), memory_tolerance=pairing.memory_tolerance,
        )
    if args.rounds_file:
        _write_rounds(result, sides, args.rounds_file)
    return _present_ab(result, args, pairing.tolerance, pairing.memory_tolerance)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Pairing:
    """How two revisions are measured side by side, from the flags `add_pairing` declares: the probes' request,
    the rounds and the tolerances."""

    request: Request
    plan: Rounds
    tolerance: float
    memory_tolerance: float

    @classmethod
    def of(cls, args: argparse.Namespace, architectures: tuple[str, ...]) -> "Pairing":
        from .. import configs
        from ..gate import ab as paired

        if args.min_rounds < paired.MIN_ROUNDS:
            raise UserError(f"--min-rounds must be at least {paired.MIN_ROUNDS}: fewer paired ratios give no 95% interval")
        if args.max_rounds < args.min_rounds:
            raise UserError(f"--max-rounds ({args.max_rounds}) is below --min-rounds ({args.min_rounds})")
        suite = args.suite or configs.DEFAULT_SUITE
        if suite.endswith(".toml") or "/" in suite:  # a file: the same one for both sides
            suite = str(configs.suite_path(suite).resolve())
        request = paired.Request(
            suite=suite, architectures=architectures, mode=args.mode, device=args.device,
            arch_modules=tuple(args.side_modules), threads=args.threads, repeats=args.repeats,
        )
        return cls(
            request=request,
            plan=paired.Rounds(budget_s=args.budget, min_rounds=args.min_rounds, max_rounds=args.max_rounds),
            tolerance=paired.TOLERANCE if args.tolerance is None else args.tolerance,
            memory_tolerance=paired.MEMORY_TOLERANCE if args.memory_tolerance is None else args.memory_tolerance,
        )


def _write_rounds(result, sides, path) -> None:
    """Every round of `result` as one JSON line per side: round, side label, revision, and its figures."""
    import json

    from ..results.store import write_whole

    lines = [
        json.dumps({"round": index, "side": side.label, "rev": side.rev, "figures": figures})
        for index, rounds in enumerate(zip(*result.measured)) for side, figures in zip(sides, rounds)
    ]
    write_whole(path, "".join(line + "\n" for line in lines))


def _present_ab(result, args: argparse.Namespace, tolerance: float, memory_tolerance: float) -> int:
    from ..gate import ab as paired

    print(f"\n{paired.table(result)}\n")
    print(f"{result.rounds} rounds in {result.seconds:.0f} s; tolerance {tolerance:.0%} (peak memory {memory_tolerance:.0%}); "
          "each side measured by "
          f"its own code: base {result.harness.get('base')}, candidate {result.harness.get('candidate')}"
          + (f"; {args.threads} CPU thread(s) per probe" if args.threads else ""))
    if args.calibrate:
        _present_calibration(result)
        return 0
    inconclusive = [line for line in result.lines if line.verdict == "inconclusive"]
    if inconclusive:
        print(f"{len(inconclusive)} figure(s) inconclusive within the budget: raise --budget or --tolerance", file=sys.stderr)
    failing = result.failing
    worst, floor = paired.resolution(result)
    if failing:
        print(f"{len(failing)} failing: " + ", ".join(f"{l.architecture} {l.figure} {l.verdict}" for l in failing))
    elif worst is None:
        print("no regression")
    else:
        print(f"no regression larger than {max(0.0, worst):.1%} (the worst end of any 95% interval but peak memory's)")
    if floor is not None:
        print(f"floor {floor:.1%}: these rounds judge a slowdown `regressed` from {tolerance + floor:.1%} (the tolerance "
              "plus the widest interval's half-width); `--calibrate` says the budget a smaller floor needs")
    return 1 if failing else 0


def _present_calibration(result) -> None:
    """An A/A's noise floor per figure, the budget each floor needs, and where the windows' noise comes from."""
    from tabulate import tabulate

    from ..gate import ab as paired
    from ..gate import noise

    for figure, width in paired.noise_floor(result).items():
        print(f"noise floor of {figure}: {width:.1%} (an A/A interval reached this far from 1)")
    rows = [[b.figure, f"{b.spread:.1%}", *(f"{b.rounds[f]} ({b.seconds[f]:.0f} s)" for f in noise.FLOORS)]
            for b in noise.budgets(result)]
    headers = ["figure", "round spread", *(f"floor {f:.0%}: rounds (--budget)" for f in noise.FLOORS)]
    print(f"\n{tabulate(rows, headers=headers, tablefmt='github', disable_numparse=True)}\n")
    print("A slowdown of s is judged `regressed` once it exceeds the tolerance plus the floor: to catch 5%, pick "
          "--tolerance and a floor that add up to less, and the --budget of that floor.")
    pairs = noise.window_pairs(result)
    if pairs:
        rows = [[what, str(n), "" if spread is None else f"{spread:.2%}"]
                for what, n, spread in noise.window_noise(pairs, dict(paired.TIMED))]
        headers = ["windows side by side", "pairs", "spread of their log ratio"]
        print(f"\n{tabulate(rows, headers=headers, tablefmt='github', disable_numparse=True)}")
        rows = [[what, "" if rho is None else f"{rho:+.2f}"] for what, rho in noise.followed_by(pairs)]
        headers = ["a pair differs in", "rank correlation with |log ratio|"]
        print(f"\n{tabulate(rows, headers=headers, tablefmt='github', disable_numparse=True)}")


def baseline(args: argparse.Namespace) -> int:
    from ..gate import baseline as baselines

    path = baselines.update([store.records_path(run, args.out) for run in args.runs], args.to)
    print(f"baseline: {path}")
    return 0
