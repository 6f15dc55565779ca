"""The in-memory source: batches gathered by an index tensor from splits already on the device.

A `Source` is what the task loops ask for batches; they never index a split themselves. This one holds a split
as tensors (the images, and labels where the task has them) and draws mini-batches by indexing them on their
device: no per-sample Python, no DataLoader workers on the hot path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Protocol

import torch

Batch = tuple[torch.Tensor, torch.Tensor | None]  # images, and labels (None for a task without them)


class Source(Protocol):
    """Batches of one split, as the task loops draw them."""

    def __len__(self) -> int: ...

    def steps_per_epoch(self, batch_size: int, world_size: int = 1) -> int:
        """Batches `epoch` yields on each of `world_size` ranks."""

    def epoch(self, batch_size: int, generator: torch.Generator, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        """One pass over the split in a random order drawn from `generator` (rank `rank`'s shard of it)."""

    def drawn(self, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        """Epoch after epoch from `seed` without end, full batches only: what a timed training step runs on."""

    def in_order(self, batch_size: int) -> Iterator[Batch]:
        """One pass over the split in its stored order, for evaluation."""

    def head(self, n: int) -> torch.Tensor:
        """The split's first `n` images in stored order, as its batches hold them (cost figures run on these)."""


@dataclass(kw_only=True)
class Splits:
    """What a classifier trains and is evaluated on, ready on the run's device in the run's mode: the training
    and test splits, the probe (the first len(test) training samples, as evaluation sees them: the
    generalization gap compares like with like), and the loader that streams the training split, where one does
    (None for tensors in memory)."""

    train: Source
    test: Source
    probe: Source
    num_classes: int
    loader: Any = None


class TensorSource:
    """A split held as tensors on one device: images `x` (N, ...) and, unless None, labels `y` (N,)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor | None = None):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def steps_per_epoch(self, batch_size: int, world_size: int = 1) -> int:
        return batch_count(len(self.x), batch_size, world_size)

    def epoch(self, batch_size: int, generator: torch.Generator, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        return batches(self.x, self.y, batch_size, generator, rank, world_size)

    def drawn(self, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        return training_batches(self.x, self.y, batch_size, seed, rank, world_size)

    def in_order(self, batch_size: int) -> Iterator[Batch]:
        return batches(self.x, self.y, batch_size)

    def head(self, n: int) -> torch.Tensor:
        return self.x[:n]


def batches(
    x: torch.Tensor, y: torch.Tensor | None, batch_size: int, generator: torch.Generator | None = None,
    rank: int = 0, world_size: int = 1,
) -> Iterator[Batch]:
    """Mini-batches covering (x, y) once; in a random order drawn from `generator` when one is given. Without
    labels (`y` None) each batch's second item is None.

    The last batch may be smaller. With a generator, batches are gathered by an index tensor on x's device.
    With `world_size` > 1 (data-parallel training; a generator is required) the order, drawn alike on every
    rank, is cut to a multiple of `world_size` and rank `rank` takes every `world_size`-th index of it from
    position `rank`: the ranks' shards never overlap, and their k-th batches together hold exactly the
    samples of the k-th batch of `batch_size * world_size` that one process would draw in that order.
    """
    n = len(x)
    if generator is None:
        if world_size > 1:
            raise ValueError("sharding batches over ranks needs a generator for the shared order")
        for start in range(0, n, batch_size):
            yield x[start : start + batch_size], None if y is None else y[start : start + batch_size]
        return
    order = drawn_order(n, generator, rank, world_size).to(x.device)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        yield x[index], None if y is None else y[index]


def drawn_order(n: int, generator: torch.Generator, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """The indices of one pass over `n` samples in a random order from `generator`, as `batches` draws them: with
    `world_size` > 1, rank `rank`'s shard of it (every `world_size`-th index from `rank` of the order cut to a
    multiple of `world_size`)."""
    order = torch.randperm(n, generator=generator)
    return order[: n - n % world_size][rank::world_size] if world_size > 1 else order


def training_batches(
    x: torch.Tensor, y: torch.Tensor | None, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
) -> Iterator[Batch]:
    """Batches of (x, y) as training draws them (`batches`, in a random order from `seed`, rank `rank`'s shard of
    it when `world_size` > 1), epoch after epoch without end, each of the same size: an epoch's last, smaller
    batch is left out (unless the shard is smaller than one batch)."""
    per_rank = len(x) // world_size
    if per_rank == 0:
        raise ValueError("no samples to draw batches from")
    generator, size = torch.Generator().manual_seed(seed), min(batch_size, per_rank)
    while True:
        for xb, yb in batches(x, y, batch_size, generator, rank, world_size):
            if len(xb) == size:
                yield xb, yb


def batch_count(n: int, batch_size: int, world_size: int = 1) -> int:
    """Batches `batches` draws from `n` samples on each of `world_size` ranks."""
    return math.ceil(n // world_size / batch_size)
