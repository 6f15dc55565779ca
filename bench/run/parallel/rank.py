"""Inside one rank of a data-parallel run: the process group, DistributedDataParallel training, and its costs.

The process group is torch.distributed's own, joined from the environment torchrun (or its launcher API)
sets up; the model is wrapped in torch's DistributedDataParallel. Every rank runs the same code and the
same collectives in the same order; rank 0's figures are the ones recorded.
"""

from __future__ import annotations

import os
import statistics
import time
from datetime import timedelta
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ...measure import memory, timing
from ...tasks import classify, costs, sequence
from ...tasks.base import Group, RunContext
from ...tasks.sequence import Parts
from ...tasks.settings import ClassifySettings

ALLREDUCE_WAIT_METHOD = (
    "1 - median step time under DDP no_sync() / median synced step time (DDP steps on a copy, every rank, "
    "slowest rank's clock): the part of a step not overlapped with computing, spent on gradient all-reduce"
)


class DDPGroup(Group):
    """This process's place in the torch.distributed process group, and the collectives the harness needs."""

    def __init__(self, rank: int, world_size: int, local_rank: int, backend: str, device: torch.device):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.backend, self.device = backend, device

    def synchronize(self, device: torch.device) -> None:
        timing.synchronize(device)
        dist.barrier()

    def barrier(self) -> None:
        dist.barrier()

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        total = values.clone()
        dist.all_reduce(total)
        return total / self.world_size

    def max(self, value: float) -> float:
        """The largest of every rank's `value`."""
        tensor = torch.tensor(value, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor.item()

    def broadcast(self, value: object) -> object:
        """Rank 0's `value`, on every rank (any picklable object)."""
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wrap(self, model: nn.Module) -> DistributedDataParallel:
        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def close(self) -> None:
        dist.destroy_process_group()


def join(backend: str, device_type: str, timeout: float) -> DDPGroup:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*).

    `timeout` (seconds) bounds the group's creation and every collective; a rank that waits longer raises.
    On CUDA each process takes the GPU of its local rank.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if device_type == "cuda" else torch.device(device_type)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend, timeout=timedelta(seconds=timeout), device_id=device if backend == "nccl" else None
    )
    return DDPGroup(dist.get_rank(), dist.get_world_size(), local_rank, backend, device)


def train(
    model: nn.Module, data, settings: ClassifySettings, context: RunContext, record: dict, scaling: bool
) -> None:
    """The classifier's sequence (bench.tasks.sequence.run) under DistributedDataParallel: this group's training
    costs, then training on every rank, then rank 0's inference costs.

    `context.group` is this rank's DDPGroup. With `scaling`, rank 0 first measures the single-process training
    throughput of the same setup while the other ranks wait, for the scaling efficiency.
    """
    parts = classify.parts(model, data, settings, context, record)
    sequence.run(parts, settings, context, record, training_costs=lambda p: training_costs(p, settings, context, scaling))
    context.group.barrier()


def training_costs(parts: Parts, settings: ClassifySettings, context: RunContext, scaling: bool) -> dict:
    """Parameters, FLOPs, DDP training throughput, all-reduce wait share and peak memory, on copies of the model.

    Throughput is timed on DDP steps of a copy at the per-rank batch size on every rank, each rank drawing its
    shard of the training order as the training loop does; the group's throughput counts the samples of all
    ranks. The wait share compares those steps with the same steps under `no_sync()` (no gradient all-reduce).
    Peak memory is rank 0's over two DDP steps of a fresh copy.
    """
    group, device, measuring = context.group, context.device, context.measure
    figures = costs.model_figures(parts.model, parts.forward, context)
    make_step = parts.make_step
    single = None
    if scaling:
        if group.rank == 0:
            seconds = timing.time_repeats(make_step(), device, measuring)
            single = timing.summarize_rates(seconds, parts.items_per_step)["median"]
        group.barrier()
    synced = time_steps(make_step(group=group), group, device, measuring)
    unsynced = time_steps(make_step(group=group, sync=False), group, device, measuring)
    with memory.peak_memory(device) as peak:
        step = make_step(group=group)
        step()
        step()
        del step
    per_rank_batch = min(settings.batch_size, parts.samples // group.world_size)  # what training_batches draws
    rates = timing.summarize_rates(synced, per_rank_batch * group.world_size)
    step_s, local_s = statistics.median(synced), statistics.median(unsynced)
    return {
        **figures,
        "train_throughput": rates["median"],
        "train_throughput_iqr": rates["iqr"],
        "train_throughput_repeats": rates["repeats"],
        "per_rank_throughput": rates["median"] / group.world_size,
        "single_process_throughput": single,
        "scaling_efficiency": None if single is None else rates["median"] / (group.world_size * single),
        "ddp_step_ms": step_s * 1000,
        "ddp_step_no_sync_ms": local_s * 1000,
        "allreduce_wait_share": min(1.0, max(0.0, 1 - local_s / step_s)),
        "allreduce_wait_method": ALLREDUCE_WAIT_METHOD,
        "peak_memory_mb": peak.mb,
        "peak_memory_method": f"rank 0, DDP steps: {peak.method}",
    }


def time_steps(
    step: Callable[[], object], group: DDPGroup, device: torch.device, settings: timing.MeasureSettings
) -> list[float]:
    """Seconds per `step()` in each repeat (timing.time_repeats), every rank running the same number of steps:
    each block of steps starts at a barrier and lasts until the slowest rank's device is done, and every rank
    takes that slowest figure, so all agree on the warm-up, the steps per repeat and when to stop."""
    return timing.time_repeats(step, device, settings, lambda call, calls: _slowest_rank(call, calls, group, device))


def _slowest_rank(step: Callable[[], object], calls: int, group: DDPGroup, device: torch.device) -> float:
    """Seconds that `calls` steps took on the slowest rank, started together at a barrier."""
    group.barrier()
    started = time.perf_counter()
    for _ in range(calls):
        step()
    timing.synchronize(device)
    return group.max(time.perf_counter() - started)
