"""The measuring entry point `archbench ab` runs in each side's checkout: cost figures only, as JSON lines.

    python -m bench.probe [--suite quick] [--arch cnn-baseline resnet18] [--mode M] [--device D] [--arch-module X]
                          [--turns]

Builds each architecture as a run would (the suite's data, settings and seed) and measures it through the
runner's pair runner with a measure-only job (its task's sequence without training): training-step throughput, inference or generation throughput, batch-1
latency, peak memory, parameters and FLOPs; no training, no quality. Prints one JSON object per architecture
(`probe_version`, `architecture`, `status`, `error`, the figures, and `bench_file`: which harness measured).
With `--turns` (probe version 2), before every timed window it prints `{"turn": true}` and waits for a line on
standard input: `archbench ab` runs both sides' probes at once and lets them take turns, so that the two
sides' windows alternate a fraction of a second apart. Since probe version 3, each timed figure's windows come
with what they ran under (`<figure>_conditions`: a list of bench.measure.conditions.Conditions, one per repeat,
in the order of `<figure>_repeats`), and `--repeats N` sets how many windows each figure is timed in. This interface is kept stable, so that `archbench ab` can measure any
revision that has it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import signal
import sys
from pathlib import Path

import torch

import architectures

from . import configs
from .measure import memory, timing
from .run import runner
from .errors import UserError
from .scratch import folder as scratch_folder

PROBE_VERSION = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default=configs.DEFAULT_SUITE)
    parser.add_argument("--arch", nargs="+", help="architectures or wildcards (default: the suite's)")
    parser.add_argument("--mode", help="one mode (default: the suite's first)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arch-module", action="append", default=[])
    parser.add_argument("--turns", action="store_true", help="wait for a line on stdin before every timed window")
    parser.add_argument("--repeats", type=int, help="timed windows per figure (default: the suite's [measure] repeats)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `archbench ab` stopping: the scratch folder goes too
    if args.turns:
        timing.take_turns(_wait_for_turn)
    scratch = scratch_folder("probe")
    try:
        return _probe_all(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _probe_all(args: argparse.Namespace, scratch: Path) -> int:
    try:
        for module in args.arch_module:
            architectures.load_module(module)
        config = configs.load(
            args.suite, architectures=args.arch, device=args.device, modes=[args.mode] if args.mode else None,
            out=scratch, quiet=True,
        )
        if args.repeats:
            config = dataclasses.replace(config, measure=dataclasses.replace(config.measure, repeats=args.repeats))
        names = architectures.resolve(config.architectures)
        device = runner.resolve_device(config.device)
        mode = configs.modes(config)[0].resolved(device)
        data = runner.load_data(config).to(device)
    except (UserError, architectures.UnknownArchitecture, architectures.PluginError) as error:
        print(f"probe: error: {error}", file=sys.stderr)
        return 2
    memory.steady_allocator()
    for name in names:
        print(json.dumps(probe(name, config, data, device, mode, args.seed, scratch)), flush=True)
    return 0


def _wait_for_turn() -> None:
    print(json.dumps({"turn": True}), flush=True)
    if not sys.stdin.readline():  # whoever gave the turns is gone
        sys.exit(3)


def probe(name: str, config: configs.RunConfig, data, device: torch.device, mode, seed: int, scratch: Path) -> dict:
    """The cost figures of architecture `name` as one JSON-able dict: the record of a measure-only pair run by the
    runner's pair runner (runner.run_pair), in this process; a failure is `status: failed` with its error."""
    # Exactly `repeats` windows: the gate's rounds give the spread, and both sides' windows pair one by one.
    measured = dataclasses.replace(config, measure=dataclasses.replace(config.measure, max_time=0.0))
    job = runner.Job(
        name=name, seed=seed, config=measured, data=data, device=device, run_dir=scratch, quiet=True, mode=mode,
        measure_only=True,
    )
    observed: dict[str, list[dict]] = {}

    def observe(label: str, window) -> None:
        if label:  # a figure's window (the matmul peak's have no label)
            observed.setdefault(f"{label}_conditions", []).append(window.as_dict())

    timing.observe_windows(observe)
    try:
        record = runner.run_pair(job)
    finally:
        timing.observe_windows(None)
    return {"probe_version": PROBE_VERSION, "bench_file": __file__, "threads": torch.get_num_threads(), **record, **observed}


if __name__ == "__main__":
    sys.exit(main())
