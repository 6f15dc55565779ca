"""How well `archbench history check` finds steps, and how often it raises false alarms, on histories simulated from
this machine's measured noise; asv's rule beside it on the same histories. Run from the project's root:

    .venv/bin/python tests/benchmarks/history_detection.py [--records results/baseline/records.jsonl ...]

The noise comes from real records (default: the committed baseline, two runs of the quick suite at one commit):
- each record's own spread: the standard error of its median window (bench.history.store.log_spread), drawn at
  random per simulated point, as the detection then weighs it;
- the run-to-run spread of a figure: from records of one architecture, configuration and commit measured in
  different runs, the standard deviation of their log values (pooled over architectures and figures). Each
  simulated point scatters by its own spread plus, independently, what the run-to-run spread adds beyond it.
  `--run-to-run F` simulates a quieter machine beside this one (its windows' spreads scaled down alike).

Each history is 200 commits, one point per commit. A stepped history slows down by 3%, 5% or 10% at a commit drawn
from 40..160; an A/A history has no step. Reported per step size:
- found: a step detected in the whole history within 3 commits after the true one (0..3 later);
- found online: a step detected by a check run on the history as it stood 3 commits after the step;
- position error: the mean |detected - true| of those found;
- false alarms: steps detected anywhere else, per 100 series-commits (A/A: every detection).
asv's rule is asv.step_detect.detect_steps on the times (1 / throughput) with its weights (1 / spread), then
detect_regressions with asv's default 5% threshold; it reports regressions only (where a time grew).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench.history import steps, store
from bench.results.records import read_records

ROOT = Path(__file__).parents[2]
COMMITS = 200
FIGURES = ("train_throughput", "infer_throughput")


def measured_noise(paths: list[Path]) -> tuple[list[float], float]:
    """(each record's own spread, the pooled run-to-run standard deviation of log values) of `paths`' records."""
    own, groups = [], defaultdict(list)
    for path in paths:
        for record in read_records(path):
            if record["status"] != "ok":
                continue
            for figure in FIGURES:
                value = record.get(figure)
                if value:
                    groups[record["architecture"], record["config_id"], record.get("git_commit"), figure].append(math.log(value))
                    spread = store.log_spread(record.get(f"{figure}_repeats"))
                    if spread is not None:
                        own.append(spread)
    deviations = [(v - statistics.fmean(vs)) ** 2 for vs in groups.values() if len(vs) > 1 for v in vs]
    degrees = sum(len(vs) - 1 for vs in groups.values() if len(vs) > 1)
    if not own or not degrees:
        sys.exit("no repeated measurements among the records given: give runs of one commit measured more than once")
    return own, math.sqrt(sum(deviations) / degrees)


def simulate(rng: np.random.Generator, own: list[float], run_to_run: float, step: float | None):
    """(log throughputs, spreads, the step's commit or None) of one simulated history: each point's noise is its
    own spread's (drawn from `own`) plus, independently, the run-to-run noise beyond it, so that the points
    scatter by `run_to_run` in all."""
    at = int(rng.integers(40, 161)) if step else None
    spreads = rng.choice(own, COMMITS)
    beyond = math.sqrt(max(run_to_run**2 - float(np.mean(spreads**2)), 0.0))
    values = rng.normal(0.0, 1.0, COMMITS) * spreads + rng.normal(0.0, beyond, COMMITS)
    if step:
        values[at:] += math.log(1 - step)
    return values, list(spreads), at


def ours(values, spreads, threshold) -> list[tuple[int, bool]]:
    """(commit of the first point after each step, whether it is a slowdown)."""
    return [(c.at, c.difference < 0) for c in steps.find(values, spreads, threshold=threshold)]


def asv_rule(values, spreads) -> list[tuple[int, bool]] | None:
    try:
        from asv import step_detect
    except ImportError:
        return None
    times = list(np.exp(-np.asarray(values)))
    found = step_detect.detect_steps(times, [1 / s for s in spreads])
    _, _, regressions = step_detect.detect_regressions(found, threshold=0.05)
    return [(after, True) for _, after, _, _ in regressions or []]


def score(detector, histories, online: bool = False):
    """(found share, mean position error, false alarms per 100 series-commits) of `detector` on `histories`."""
    found, errors, false = 0, [], 0
    stepped = sum(1 for *_, at in histories if at is not None)
    for values, spreads, at in histories:
        if online and at is not None:
            values, spreads = values[: at + 4], spreads[: at + 4]
        detected = detector(values, spreads)
        if detected is None:
            return None
        hits = [d for d, slower in detected if at is not None and slower and 0 <= d - at <= 3]
        if hits:
            found += 1
            errors.append(min(abs(d - at) for d in hits))
        false += len(detected) - (1 if hits else 0)
    commits = sum(len(v) for v, _, _ in histories)
    return (found / stepped if stepped else None, statistics.fmean(errors) if errors else None, 100 * false / commits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=Path, nargs="+", default=[ROOT / "results" / "baseline" / "records.jsonl"])
    parser.add_argument("--histories", type=int, default=100, help="per step size (default 100)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[steps.THRESHOLD])
    parser.add_argument("--run-to-run", type=float, nargs="+", default=[], metavar="F",
                        help="also simulate these run-to-run spreads (e.g. 0.02: a quieter machine's), beside the measured one")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    own, measured = measured_noise(args.records)
    print(f"noise from {len(own)} records' windows (median own spread {statistics.median(own):.2%}) and run to run "
          f"{measured:.2%}; {args.histories} histories of {COMMITS} commits per row")
    print("\n| run to run | detector | step | found (within 3 after) | found online (3 after) | position error | false alarms / 100 series-commits |")
    print("|---|---|---|---|---|---|---|")
    for run_to_run in (measured, *args.run_to_run):
        rng = np.random.default_rng(args.seed)
        scaled = [s * min(1.0, run_to_run / measured) for s in own]  # a quieter machine's windows are quieter too
        sizes = (0.03, 0.05, 0.10, None)
        histories = {size: [simulate(rng, scaled, run_to_run, size) for _ in range(args.histories)] for size in sizes}
        detectors = [(f"archbench (z >= {t:g})", lambda v, s, t=t: ours(v, s, t)) for t in args.thresholds]
        detectors.append(("asv (5% threshold)", asv_rule))
        for name, detector in detectors:
            for size in sizes:
                offline = score(detector, histories[size])
                if offline is None:
                    print(f"| {run_to_run:.1%} | {name} | | asv is not installed (pip install asv) | | | |")
                    break
                online = score(detector, histories[size], online=True) if size else (None, None, None)
                label = f"{size:.0%}" if size else "A/A"
                cells = [_share(offline[0]), _share(online[0]), "" if offline[1] is None else f"{offline[1]:.2f}",
                         f"{offline[2]:.2f}"]
                print(f"| {run_to_run:.1%} | {name} | {label} | " + " | ".join(cells) + " |")


def _share(value: float | None) -> str:
    return "" if value is None else f"{value:.0%}"


if __name__ == "__main__":
    main()
