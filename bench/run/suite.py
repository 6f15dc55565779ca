"""THE suite loop: every (architecture, mode, seed) of a run ends as one record appended to its run folder.

`run_suite` opens a run session (bench.run.session) on the suite's architectures, modes and seeds, loads the
data, plans a shard's pairs, and hands the pairs still to run to its `Strategy` (bench.run.runner: in a fresh
child process, bench.run.isolation, the default; in this process; or on a data-parallel group,
bench.run.parallel), which ends each as a record; the session appends them as they end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import architectures

from ..data.stream import FolderStream
from ..errors import UserError
from ..measure import phases
from ..results import schema, store
from ..tasks import TASKS
from . import shards
from .runner import FINISHED, Job, Strategy
from .session import Session
from ..configs import RunConfig


@dataclass(frozen=True)
class Resume:
    """An interrupted run to finish: its folder, and whether the pairs it recorded as failed run again."""

    folder: Path
    retry_failed: bool = False


def run_suite(
    config: RunConfig, strategy: Strategy | None = None, echo: Callable[[str], None] = print, command: str | None = None,
    arch_modules: tuple[str, ...] = (), *, resume: Resume | None = None, shard: shards.Shard | None = None,
    profile: phases.SuiteProfile | None = None,
) -> Path | None:
    """Run every selected architecture in every mode for every seed of `config`; return the run folder holding
    the records (None in a process that does not write).

    With `resume`, its run folder is reopened and the pairs it already holds as ok or diverged (and, unless it
    retries them, as failed) are skipped; a sharded run keeps to the pairs its run.json assigned it. With
    `shard`, only that part of the pairs runs (bench.run.shards) and run.json records the plan. `command` is the
    command line recorded with every record (default: this process's). `profile` gets each record written and the
    seconds before the first pair. Raises Interrupted on SIGINT or SIGTERM once the running pair is stopped.
    """
    strategy = strategy or Strategy()
    session = Session(config, strategy, echo, command, arch_modules)
    strategy.prepare(session.names, config.dataset)
    data = strategy.load(config, session.device)
    _check_streamed(data, session.names)
    pairs = [(name, mode, seed) for name in session.names for mode in session.modes for seed in config.seeds]
    plan = store.read_run_info(resume.folder).get("shard") if resume is not None else None
    if plan is None and shard is not None:
        plan = shards.plan(pairs, shard, config, data)
    planned, pairs = len(pairs), _assigned(pairs, plan)
    run_dir = session.open({"shard": plan}, resume.folder if resume else None)
    done = session.done
    retry = resume is not None and resume.retry_failed
    todo = [p for p in pairs if p not in done or (retry and done[p] not in FINISHED)]
    age = phases.process_age_s()
    if profile is not None:
        profile.before_pairs_s = age
    session.echo(_started(session, run_dir, data, plan, planned, len(pairs), len(pairs) - len(todo) if resume else None, age))
    jobs = [
        session.job(name, session.modes[mode], seed, data, shard=plan["shard"] if plan else None) for name, mode, seed in todo
    ]

    def record_one(job: Job, record: dict[str, Any]) -> None:
        pair = (job.name, job.mode.name, job.seed)
        if profile is not None and strategy.writes:
            profile.add(record)
        session.write(record, replacing=(lambda r, this=pair: schema.pair(r) == this) if pair in done else None)

    with session.running(len(pairs), already=len(pairs) - len(todo)):
        strategy.run_all(jobs, record_one)
    return run_dir if strategy.writes else None


def _assigned(pairs: list[schema.Pair], plan: dict[str, Any] | None) -> list[schema.Pair]:
    """The pairs a shard's `plan` assigns to it, in the suite's order (all of them without a plan)."""
    if plan is None:
        return pairs
    assigned = {tuple(p) for p in plan["pairs"]}
    return [p for p in pairs if p in assigned]


def _started(
    session: Session, run_dir: Path, data: Any, plan: dict[str, Any] | None, planned: int, pairs: int,
    resumed: int | None, age: float,
) -> str:
    """The line that says what the run is about to do."""
    modes, seeds = session.modes, session.config.seeds
    sharded = f"shard {plan['shard']} ({pairs} of {planned} pairs, ~{plan['cost_share']:.0%} of the cost) of " if plan else ""
    in_modes = f" x {len(modes)} modes ({', '.join(modes)})" if len(modes) > 1 else f" in {next(iter(modes))}"
    resuming = f", resuming: {resumed} already recorded" if resumed is not None else ""
    return (
        f"run {run_dir.name}: {sharded}{len(session.names)} architecture(s){in_modes} x {len(seeds)} seed(s) "
        f"on {data.name}, {session.strategy.describe(session.device)}{resuming}; started in {age:.1f} s"
    )


def _check_streamed(data: Any, names: list[str]) -> None:
    """UserError when generators would train on a streamed folder: their tasks take their data in memory."""
    generators = [n for n in names if TASKS[architectures.get_spec(n).task].generative]
    if isinstance(data, FolderStream) and generators:
        raise UserError(
            f"{generators[0]} is a generator, and generators train on data in memory, but {data.name} streams; "
            "pass --data-path memory --no-augment (or leave the generators out)"
        )
