"""Datasets as tensors: each split is loaded once into memory, moved to the run's device, and batched by indexing.

`load(name, ...)` returns an `ImageData` whose pixels are float32 in [0, 1]; `standardized()` gives the
per-channel zero-mean unit-variance copy classifiers train on. `batches` draws mini-batches by indexing
tensors already on the device: no per-sample Python, no DataLoader workers on the hot path.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from functools import cache, cached_property
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from . import synthetic
from .errors import UserError

DEFAULT_ROOT = Path(os.environ.get("ARCHBENCH_DATA", Path.home() / ".cache" / "archbench" / "data"))
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SYNTHETIC_TRAIN, SYNTHETIC_TEST = 10_000, 2_000


@dataclass(frozen=True)
class ImageData:
    """Train and test images (N, C, H, W) with integer labels (N,), all on one device."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    def to(self, device: torch.device | str) -> "ImageData":
        return replace(self, **{f: getattr(self, f).to(device) for f in ("train_x", "train_y", "test_x", "test_y")})

    @cached_property
    def channel_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and standard deviation (1, C, 1, 1) of the training split; the std is at least 1e-6."""
        mean = self.train_x.mean(dim=(0, 2, 3), keepdim=True)
        return mean, self.train_x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)

    @cached_property
    def standardized(self) -> "ImageData":
        """A copy with every channel at zero mean and unit variance, by the training split's statistics."""
        mean, std = self.channel_stats
        return replace(self, train_x=(self.train_x - mean) / std, test_x=(self.test_x - mean) / std)


def batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator | None = None,
    rank: int = 0, world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches covering (x, y) once; in a random order drawn from `generator` when one is given.

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
            yield x[start : start + batch_size], y[start : start + batch_size]
        return
    order = torch.randperm(n, generator=generator).to(x.device)
    if world_size > 1:
        order = order[: n - n % world_size][rank::world_size]
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        yield x[index], y[index]


def batch_count(n: int, batch_size: int, world_size: int = 1) -> int:
    """Batches `batches` draws from `n` samples on each of `world_size` ranks."""
    return math.ceil(n // world_size / batch_size)


def load(
    name: str,
    root: str | Path | None = None,
    download: bool = False,
    limit_train: int | None = None,
    limit_test: int | None = None,
) -> ImageData:
    """Dataset `name` with pixels in [0, 1], cut to the first `limit_train`/`limit_test` samples.

    Raises UserError for an unknown name, missing files (saying where it looked) or impossible limits.
    """
    if name not in LOADERS:
        raise UserError(f"unknown dataset {name!r} (valid: {', '.join(LOADERS)})")
    for flag, limit in (("--limit-train", limit_train), ("--limit-test", limit_test)):
        if limit is not None and limit < 1:
            raise UserError(f"{flag} must be a positive number of samples, got {limit}")
    data = LOADERS[name](Path(root) if root else DEFAULT_ROOT, download)
    return replace(
        data,
        train_x=data.train_x[:limit_train],
        train_y=data.train_y[:limit_train],
        test_x=data.test_x[:limit_test],
        test_y=data.test_y[:limit_test],
    )


@cache
def _synthetic(root: Path, download: bool) -> ImageData:
    train, test = synthetic.shapes(SYNTHETIC_TRAIN, seed=0), synthetic.shapes(SYNTHETIC_TEST, seed=1)
    return ImageData("synthetic", *train, *test, len(synthetic.CLASSES))


def _torchvision(dataset_class: str, name: str, how_to_get: str) -> Callable[[Path, bool], ImageData]:
    def loader(root: Path, download: bool) -> ImageData:
        import torchvision.datasets as tv

        cls = getattr(tv, dataset_class)
        if name == "fashion-mnist" and not download:
            _extract_debian_fashion_mnist(root)
        try:
            train, test = cls(str(root), train=True, download=download), cls(str(root), train=False, download=download)
        except RuntimeError as error:
            if download:
                raise UserError(f"{name}: downloading into {root} failed: {error}") from None
            raise UserError(
                f"{name}: data files not found or corrupted under {root / _folder(cls)}; {how_to_get}"
            ) from None
        except OSError as error:
            raise UserError(f"{name}: cannot read or download data under {root}: {error}") from None
        return ImageData(name, *_pixels(train), *_pixels(test), len(train.classes))

    return loader


def _folder(cls) -> str:
    return getattr(cls, "base_folder", None) or f"{cls.__name__}/raw"


def _pixels(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) float32 in [0, 1] and int64 labels from a torchvision MNIST- or CIFAR-style dataset."""
    images = torch.as_tensor(np.asarray(dataset.data))
    images = images[:, None] if images.ndim == 3 else images.permute(0, 3, 1, 2)
    return images.float().div_(255), torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64)


def _extract_debian_fashion_mnist(root: Path) -> None:
    """Unpack Debian's dataset-fashion-mnist files into torchvision's layout under `root`, when they are missing."""
    from torchvision.datasets.utils import extract_archive

    raw = root / "FashionMNIST" / "raw"
    archives = sorted(DEBIAN_FASHION_MNIST.glob("*-ubyte.gz"))
    if len(archives) != 4 or all((raw / a.name[:-3]).exists() for a in archives):
        return
    raw.mkdir(parents=True, exist_ok=True)
    for archive in archives:
        if not (raw / archive.name[:-3]).exists():
            extract_archive(str(archive), str(raw))


LOADERS: dict[str, Callable[[Path, bool], ImageData]] = {
    "synthetic": _synthetic,
    "fashion-mnist": _torchvision(
        "FashionMNIST",
        "fashion-mnist",
        f"install Debian's package dataset-fashion-mnist (files in {DEBIAN_FASHION_MNIST}), "
        "or pass --download, or put the IDX files there",
    ),
    "mnist": _torchvision("MNIST", "mnist", "pass --download, or put the MNIST IDX files there"),
    "cifar10": _torchvision(
        "CIFAR10", "cifar10", "pass --download, or unpack cifar-10-python.tar.gz there"
    ),
}
