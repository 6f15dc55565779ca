"""Folder datasets as the task loops see them: streamed by DataLoader workers, or decoded once into memory.

`open_folder` indexes a folder (bench.data.folder) and takes one of two paths. `memory`: every image decoded
once with the evaluation transform into an ImageData, which then runs exactly as the built-in datasets do.
`stream`: a FolderStream, whose `splits` are StreamSources: each epoch's batches decoded and transformed by
persistent DataLoader workers in the order the in-memory path would draw (the same permutation of the same
generator, sharded over ranks alike), copied to the device (pinned and non-blocking on CUDA) and normalized
there. Without augmentation both paths give the same batches at the same seed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ..errors import UserError
from .images import ImageData
from .folder import IMAGENET_MEAN, IMAGENET_STD, MEASURED_IMAGES, FolderImages, FolderIndex, FolderSettings, index
from .memory import Batch, Splits, batch_count, drawn_order


_GOLDEN = 0x9E3779B97F4A7C15  # spreads a pass's per-sample seeds over the 64-bit range


class _Plan:
    """A DataLoader's batch sampler whose batches are set before each pass (so that persistent workers serve
    every epoch of a source, each in its own order)."""

    def __init__(self):
        self.batches: list[list[int]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _in_order(n: int, batch_size: int) -> _Plan:
    plan = _Plan()
    plan.batches = [list(range(start, min(start + batch_size, n))) for start in range(0, n, batch_size)]
    return plan


class StreamSource:
    """A split of a folder dataset (`images`) read by `workers` DataLoader workers, its batches normalized by
    `mean`/`std` (per channel, of pixels in [0, 1]) on `device` and put in the mode's memory format by `inputs`.

    Training passes (`epoch`) share one pool of persistent workers, evaluation passes (`in_order`) another per
    batch size. Augmentation is random in the workers, seeded from `seed`."""

    def __init__(
        self, images: FolderImages, workers: int, prefetch_factor: int, device: torch.device,
        mean: tuple[float, ...], std: tuple[float, ...], inputs: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
        seed: int = 0,
    ):
        self.images, self.workers, self.prefetch_factor, self.device = images, workers, prefetch_factor, device
        self.inputs, self.seed = inputs, seed
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self._plan, self._training, self._drawn, self._ordered = _Plan(), None, {}, {}
        self._augmentation = torch.Generator().manual_seed(seed)  # one seed per training pass, its samples' from it

    def __len__(self) -> int:
        return len(self.images)

    def steps_per_epoch(self, batch_size: int, world_size: int = 1) -> int:
        return batch_count(len(self), batch_size, world_size)

    def epoch(self, batch_size: int, generator: torch.Generator, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        order = drawn_order(len(self), generator, rank, world_size)
        batches = [order[start : start + batch_size].tolist() for start in range(0, len(order), batch_size)]
        if self.images.train:
            base = int(torch.randint(2**62, (), generator=self._augmentation))
            batches = [[(i, (base + i * _GOLDEN) % 2**63) for i in batch] for batch in batches]
        self._plan.batches = batches
        if self._training is None:
            self._training = self._loader(self._plan, persistent=True)
        return self._delivered(self._training)

    def drawn(self, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        """The first two full training batches from `seed`'s order, decoded once and kept on the device, over and
        over: steps on them measure the model's ceiling, not the input pipeline."""
        key = (batch_size, seed, rank, world_size)
        if key not in self._drawn:
            per_rank = len(self) // world_size
            if per_rank == 0:
                raise ValueError("no samples to draw batches from")
            size = min(batch_size, per_rank)
            full = (b for b in self.epoch(batch_size, torch.Generator().manual_seed(seed), rank, world_size) if len(b[0]) == size)
            self._drawn[key] = list(itertools.islice(full, 2))
        return itertools.cycle(self._drawn[key])

    def in_order(self, batch_size: int) -> Iterator[Batch]:
        if batch_size not in self._ordered:  # evaluation passes every epoch: their workers stay too
            self._ordered[batch_size] = self._loader(_in_order(len(self), batch_size), persistent=True)
        return self._delivered(self._ordered[batch_size])

    def head(self, n: int) -> torch.Tensor:
        """The first `n` images in stored order (this split's transform), normalized, on the device."""
        return next(iter(self._delivered(self._loader(_in_order(min(n, len(self)), n), persistent=False))))[0]

    def _loader(self, plan: _Plan, persistent: bool) -> torch.utils.data.DataLoader:
        return _loader(
            self.images, self.workers, batch_sampler=plan, pin_memory=self.device.type == "cuda",
            persistent_workers=persistent and self.workers > 0,
            prefetch_factor=self.prefetch_factor if self.workers else None, generator=torch.Generator().manual_seed(self.seed),
        )

    def _delivered(self, loader: torch.utils.data.DataLoader) -> Iterator[Batch]:
        for x, y in loader:
            x = x.to(self.device, non_blocking=True).float().div_(255).sub_(self.mean).div_(self.std)
            yield self.inputs(x), y.to(self.device, non_blocking=True)


def _loader(images: FolderImages, workers: int, **options) -> torch.utils.data.DataLoader:
    """A DataLoader over `images` with `workers` workers, forked where the platform can (they touch no GPU, and a
    fork costs milliseconds) whatever start method the process was given: a pair's child is started by a fork
    server, which would start each worker as slowly as a fresh process."""
    import multiprocessing

    fork = "fork" if workers and "fork" in multiprocessing.get_all_start_methods() else None
    return torch.utils.data.DataLoader(images, num_workers=workers, multiprocessing_context=fork, **options)


@dataclass(frozen=True, kw_only=True)
class FolderStream:
    """A folder dataset read batch by batch during training (see the module's docstring)."""

    name: str
    index: FolderIndex
    settings: FolderSettings
    mean: tuple[float, ...]
    std: tuple[float, ...]
    normalization: str
    device: torch.device = torch.device("cpu")

    @property
    def num_classes(self) -> int:
        return len(self.index.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.settings.image_size, self.settings.image_size)

    @property
    def train_samples(self) -> int:
        return len(self.index.train_files)

    @property
    def test_samples(self) -> int:
        return len(self.index.test_files)

    dtype = "uint8"  # what the workers hand over; batches become float32 on the device

    def to(self, device: torch.device | str) -> "FolderStream":
        return replace(self, device=torch.device(device))

    def share_memory_(self) -> "FolderStream":
        return self  # nothing decoded to share: each child's workers read the files

    def splits(self, mode, seed: int = 0) -> Splits:
        """The training, test and probe (the first len(test) training images, evaluation transform) sources."""
        index, settings, size = self.index, self.settings, self.settings.image_size

        def source(files: np.ndarray, labels: np.ndarray, train: bool) -> StreamSource:
            images = FolderImages(files, labels, size, train and settings.augment)
            return StreamSource(images, settings.workers, settings.prefetch_factor, self.device, self.mean, self.std, mode.inputs, seed)

        probe = len(index.test_files)
        train = source(index.train_files, index.train_labels, True)
        return Splits(
            train=train, test=source(index.test_files, index.test_labels, False),
            probe=source(index.train_files[:probe], index.train_labels[:probe], False), num_classes=self.num_classes,
            loader=train,
        )

    @property
    def fields(self) -> dict:
        """What a record of a run on this data adds (schema.FOLDER_KEYS)."""
        return {**folder_fields(self.index, self.settings, self.mean, self.std, self.normalization), "data_path": "stream",
                "num_workers": self.settings.workers}


def folder_fields(index: FolderIndex, settings: FolderSettings, mean, std, normalization: str) -> dict:
    """What a record says of a folder dataset besides its name and shape."""
    return {
        "data_folder": index.root, "data_layout": index.layout, "image_size": settings.image_size,
        "augmentation": "random-resized-crop+flip" if settings.augment else "none", "normalization": normalization,
        "normalize_mean": [round(m, 6) for m in mean], "normalize_std": [round(s, 6) for s in std],
        "images_skipped": len(index.skipped), "images_skipped_examples": [f"{f}: {why}" for f, why in index.skipped[:5]],
        "files_ignored": index.ignored,
    }


def open_folder(path: str, settings: FolderSettings, limit_train: int | None = None, limit_test: int | None = None):
    """The folder dataset at `path`: an ImageData (the memory path) or a FolderStream (see the module's docstring).
    Raises UserError for what `bench.data.folder.index` refuses and for a memory path that cannot fit."""
    if not path:
        raise UserError("--dataset folder:PATH needs the folder's path after 'folder:'")
    index_ = index(path, settings).cut(limit_train, limit_test)
    name = f"folder:{Path(index_.root).name}"
    decoded_mb = (len(index_.train_files) + len(index_.test_files)) * 3 * settings.image_size**2 * 4 / 2**20
    memory = settings.data_path == "memory" or (
        settings.data_path == "auto" and not settings.augment and decoded_mb <= settings.cache_mb
    )
    mean, std, normalization = _normalization(index_, settings)
    if not memory:
        return FolderStream(
            name=name, index=index_, settings=settings, mean=mean, std=std, normalization=normalization
        )
    if settings.augment:
        raise UserError(
            "data_path = \"memory\" decodes each image once, so it cannot augment; set augment = false "
            "(or --no-augment), or stream the folder (data_path = \"stream\")"
        )
    train_x = _decoded(index_.train_files, index_.train_labels, settings)
    test_x = _decoded(index_.test_files, index_.test_labels, settings)
    fields = {**folder_fields(index_, settings, mean, std, normalization), "data_path": "memory", "num_workers": None}
    return ImageData(
        name=name, train_x=train_x, train_y=torch.from_numpy(index_.train_labels), test_x=test_x,
        test_y=torch.from_numpy(index_.test_labels), num_classes=len(index_.classes), sources={"train_x": index_.root},
        stats=(mean, std), fields=fields,
    )


def _decoded(files: np.ndarray, labels: np.ndarray, settings: FolderSettings) -> torch.Tensor:
    """Every image of `files` through the evaluation transform, as float32 pixels in [0, 1] (N, 3, size, size)."""
    images = FolderImages(files, labels, settings.image_size, train=False)
    loader = _loader(images, settings.workers, batch_size=64)
    return torch.cat([x for x, _ in loader]).float().div_(255)


def _normalization(index_: FolderIndex, settings: FolderSettings) -> tuple[tuple[float, ...], tuple[float, ...], str]:
    """(mean, std, what they are): ImageNet's, or measured on up to MEASURED_IMAGES training images (evaluation
    transform, the first in the folder's seeded order)."""
    if settings.normalize == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD, "imagenet"
    n = min(MEASURED_IMAGES, len(index_.train_files))
    x = _decoded(index_.train_files[:n], index_.train_labels[:n], settings)
    mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return tuple(mean.tolist()), tuple(std.tolist()), f"measured on {n} training images"
