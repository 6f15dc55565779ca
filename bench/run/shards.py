"""Splitting a suite's pairs into N disjoint shards balanced by expected cost.

A sweep too large for one machine runs as N independent jobs (a SLURM job array, a Kubernetes Indexed Job,
a CI matrix), each `archbench run --shard K/N` or with the index and count read from the scheduler's
environment. Every shard computes the same split: pairs sorted by estimated cost (FLOPs per sample x
training samples x epochs), largest first, each given to the least-loaded shard (greedy longest processing
time), ties broken by the pair itself. Each shard's run.json keeps the shard, the pairs of the whole sweep
and a sweep id, so that bench.results.runs can read the shards' run folders as one run and say what is missing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

import architectures

from ..measure import counts
from ..errors import UserError
from ..results.schema import Pair

SHARD_COUNT_ENV = "ARCHBENCH_SHARD_COUNT"  # the count that goes with Kubernetes' JOB_COMPLETION_INDEX
LOCAL_SETTINGS = ("out", "data_root", "download", "quiet", "strict")  # may differ between shards of one sweep


@dataclass(frozen=True)
class Shard:
    """Part `index` (1-based) of `count`; `source` says where it came from (the flag or a scheduler)."""

    index: int
    count: int
    source: str = "--shard"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse(text: str, source: str = "--shard") -> Shard:
    """`K/N` with 1 <= K <= N as a Shard; anything else is a UserError saying what is expected."""
    index, slash, count = text.strip().partition("/")
    try:
        shard = Shard(int(index), int(count), source)
    except ValueError:
        raise UserError(f"{source} {text!r}: expected K/N, shard K of N counted from 1 (e.g. 2/3)") from None
    if not slash or shard.count < 1 or not 1 <= shard.index <= shard.count:
        raise UserError(f"{source} {text!r}: K must be from 1 to N, and N at least 1 (e.g. 1/3, 2/3, 3/3)")
    return shard


def from_environment(env: Mapping[str, str] | None = None, count: int | None = None) -> Shard | None:
    """The shard a scheduler asks for, or None when no scheduler sets one.

    SLURM job arrays: index (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP of
    SLURM_ARRAY_TASK_COUNT. Kubernetes Indexed Jobs: JOB_COMPLETION_INDEX (0-based) of `count`, else of
    $ARCHBENCH_SHARD_COUNT (Kubernetes does not pass the count). Inconsistent values are a UserError.
    """
    env = os.environ if env is None else env
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        names = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP", "SLURM_ARRAY_TASK_COUNT")
        task, low, step, total = (_whole(env, name, default) for name, default in zip(names, (None, 0, 1, None)))
        return _checked(Shard((task - low) // max(step, 1) + 1, total, "SLURM_ARRAY_TASK_ID"))
    if "JOB_COMPLETION_INDEX" in env:
        if count is None and SHARD_COUNT_ENV not in env:
            raise UserError(f"JOB_COMPLETION_INDEX is set but not the shard count: pass --shard-count N or set {SHARD_COUNT_ENV}")
        total = count if count is not None else _whole(env, SHARD_COUNT_ENV, None)
        return _checked(Shard(_whole(env, "JOB_COMPLETION_INDEX", None) + 1, total, "JOB_COMPLETION_INDEX"))
    return None


def _whole(env: Mapping[str, str], name: str, default: int | None) -> int:
    if name not in env:
        return default
    try:
        return int(env[name])
    except ValueError:
        raise UserError(f"${name} {env[name]!r}: expected a whole number") from None


def _checked(shard: Shard) -> Shard:
    if shard.count < 1 or not 1 <= shard.index <= shard.count:
        raise UserError(f"{shard.source}: shard {shard.index - 1} (0-based) is outside 0..{shard.count - 1}")
    return shard


def assign(costs: Mapping[Pair, float], count: int) -> list[list[Pair]]:
    """`count` disjoint lists covering every pair of `costs`, balanced by cost: largest first, each to the
    least-loaded shard (the lowest-numbered on a tie); equal costs are taken in the pairs' sorted order, so
    every process computes the same split."""
    shards: list[list[Pair]] = [[] for _ in range(count)]
    loads = [(0.0, i) for i in range(count)]
    for pair in sorted(costs, key=lambda p: (-costs[p], p)):
        load, i = heapq.heappop(loads)
        shards[i].append(pair)
        heapq.heappush(loads, (load + costs[pair], i))
    return shards


def estimate_costs(pairs: list[Pair], config: Any, data: Any) -> dict[Pair, float]:
    """Each pair's expected training cost: FLOPs per sample of its architecture built for the data's shape,
    times training samples, times its task's epochs. A model that takes neither an image nor a code
    (`latent_dim`) is counted at 2 FLOPs per parameter."""
    with torch.random.fork_rng(devices=[]):  # building the models must not move the runs' random state
        per_sample = {name: _flops_per_sample(name, config, data) for name in dict.fromkeys(p[0] for p in pairs)}
    samples = data.train_samples
    return {
        pair: float(per_sample[pair[0]] * samples * getattr(config.settings_of(pair[0]), "epochs", 1))
        for pair in pairs
    }


def _flops_per_sample(name: str, config: Any, data: Any) -> int:
    settings = config.settings_of(name)
    overrides = settings.model_overrides() if settings else {}
    try:
        model = architectures.create(name, data.input_shape, data.num_classes, **overrides).eval()
    except Exception:  # the run itself records why it cannot be built
        return 1
    x = torch.zeros(1, *data.input_shape)  # FLOPs depend on the shape only
    inputs = [x] + ([torch.zeros(1, model.latent_dim)] if hasattr(model, "latent_dim") else [])
    with torch.inference_mode():
        for sample in inputs:
            try:
                return max(1, counts.flops(lambda: model(sample)))
            except Exception:
                continue
    return max(1, 2 * counts.parameter_counts(model)[0])


def sweep_id(config: Any, planned: list[Pair], count: int) -> str:
    """What the shards of one sweep share: a hash of its configuration (less machine-local settings), its pairs
    and the shard count."""
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in LOCAL_SETTINGS}
    described = json.dumps([settings, [list(p) for p in planned], count], sort_keys=True, default=str)
    return hashlib.sha1(described.encode()).hexdigest()[:10]


def plan(
    pairs: list[Pair], shard: Shard, config: Any, data: Any, estimate: Callable[..., dict[Pair, float]] = estimate_costs
) -> dict[str, Any]:
    """What run.json keeps of a shard: the shard, the sweep id, every pair of the sweep (`planned`), this shard's
    `pairs` in the suite's order, and its estimated share of the sweep's cost."""
    costs = estimate(pairs, config, data) if shard.count > 1 else {p: 1.0 for p in pairs}
    mine = set(assign(costs, shard.count)[shard.index - 1])
    total = sum(costs.values()) or 1.0
    return {
        "shard": str(shard),
        "source": shard.source,
        "sweep": sweep_id(config, pairs, shard.count),
        "planned": [list(p) for p in pairs],
        "pairs": [list(p) for p in pairs if p in mine],
        "cost_share": sum(costs[p] for p in mine) / total,
    }
