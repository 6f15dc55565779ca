"""A dataset held whole in memory: its splits as tensors on one device."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

import torch

from .memory import Splits, TensorSource


@dataclass(frozen=True, kw_only=True)
class ImageData:
    """Train and test images (N, C, H, W) with integer labels (N,), all on one device."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    # Where each of train_x, train_y, test_x, test_y came from (files, for messages); empty when not from files.
    sources: dict[str, str] | None = field(default=None, compare=False, repr=False)
    # The per-channel (mean, std) that `standardized` uses instead of the training split's own (a folder's
    # ImageNet statistics), and what the records of a run on this data add (bench.data.stream.folder_fields).
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = field(default=None, compare=False, repr=False)
    fields: dict | None = field(default=None, compare=False, repr=False)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    @property
    def train_samples(self) -> int:
        return len(self.train_x)

    @property
    def test_samples(self) -> int:
        return len(self.test_x)

    @property
    def dtype(self) -> str:
        return str(self.train_x.dtype).removeprefix("torch.")

    def to(self, device: torch.device | str) -> "ImageData":
        return replace(self, **{f: getattr(self, f).to(device) for f in ("train_x", "train_y", "test_x", "test_y")})

    def share_memory_(self) -> "ImageData":
        """The tensors moved to shared memory (in place), so that child processes map them instead of copying."""
        for tensor in (self.train_x, self.train_y, self.test_x, self.test_y):
            tensor.share_memory_()
        return self

    def splits(self, mode=None, seed: int = 0, standardize: bool = True) -> Splits:
        """The splits, standardized unless not `standardize`, in `mode`'s memory format (as they are without a
        mode), as in-memory sources (`seed` is for streamed data, whose augmentation draws from it)."""
        data = self.standardized if standardize else self
        data = mode.data(data) if mode is not None else data
        probe = len(data.test_x)
        return Splits(
            train=TensorSource(data.train_x, data.train_y), test=TensorSource(data.test_x, data.test_y),
            probe=TensorSource(data.train_x[:probe], data.train_y[:probe]), num_classes=data.num_classes,
        )

    @cached_property
    def channel_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and standard deviation (1, C, 1, 1) of the training split (or `stats` where given);
        the std is at least 1e-6."""
        if self.stats is not None:
            mean, std = (torch.tensor(v, device=self.train_x.device).view(1, -1, 1, 1) for v in self.stats)
            return mean, std
        mean = self.train_x.mean(dim=(0, 2, 3), keepdim=True)
        return mean, self.train_x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)

    @cached_property
    def standardized(self) -> "ImageData":
        """A copy with every channel at zero mean and unit variance, by `channel_stats`."""
        mean, std = self.channel_stats
        return replace(self, train_x=(self.train_x - mean) / std, test_x=(self.test_x - mean) / std)
