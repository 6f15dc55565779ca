"""The runs that report and compare read: each records file given is a run of its own, except the shards of one
sweep (`archbench run --shard K/N`), which are read together as one run that says which pairs none of them holds.

A shard's run.json keeps its sweep's id and every pair of the sweep (bench.run.shards plans them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import store
from ..errors import UserError
from .schema import Pair, pair
from .records import read_records


@dataclass(kw_only=True)
class Run:
    """The records of one run: one run folder, or every shard of one sweep merged; `missing` are pairs of the
    sweep in none of its folders."""

    paths: list[Path]
    records: list[dict[str, Any]]
    missing: list[Pair] = field(default_factory=list)
    sweep: str | None = None


def merge(paths: list[Path]) -> list[Run]:
    """The runs of records files `paths`: folders of one sharded sweep (same sweep id in run.json) become one
    Run, in the order first given; any other folder is a Run of its own. A pair recorded in two folders of
    one sweep is a UserError naming both files."""
    runs: list[Run] = []
    sweeps: dict[str, tuple[Run, dict[Pair, Path], list[Pair]]] = {}
    for path in paths:
        info = store.read_run_info(path.parent).get("shard")
        found = read_records(path)
        if not isinstance(info, dict) or not info.get("sweep"):
            runs.append(Run(paths=[path], records=found))
            continue
        if info["sweep"] not in sweeps:
            run = Run(paths=[], records=[], sweep=info["sweep"])
            runs.append(run)
            sweeps[info["sweep"]] = (run, {}, [tuple(p) for p in info.get("planned", [])])
        run, seen, _ = sweeps[info["sweep"]]
        if path in run.paths:
            continue
        for record in found:
            about = pair(record)
            if seen.get(about, path) != path:
                name, mode, seed = about
                raise UserError(
                    f"{name} {mode} seed {seed} is recorded by two shards of sweep {info['sweep']}: {seen[about]} and {path}"
                )
            seen[about] = path
        run.paths.append(path)
        run.records.extend(found)
    for run, seen, planned in sweeps.values():
        run.missing = [p for p in planned if p not in seen]
    return runs


def describe_missing(run: Run) -> str:
    """One line naming the pairs of a sharded sweep that no given folder holds."""
    named = ", ".join(f"{name} {mode} seed {seed}" for name, mode, seed in run.missing)
    return f"{len(run.missing)} pair(s) of sweep {run.sweep} missing from every shard given: {named}"
