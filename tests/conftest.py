"""Shared fixtures: an isolated registry, tiny suites and measurement settings that keep tests fast."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from architectures import registry
from bench.measure import MeasureSettings

FAST_MEASURE = MeasureSettings(  # one call per repeat, no windows during training
    repeats=5, warmup_time=0.0, min_repeat_time=0.0, max_time=0.0, latency_time=0.0, latency_min_calls=3,
    window_repeats=0,
)
WINDOWED_MEASURE = dataclasses.replace(FAST_MEASURE, window_every=1e-9, window_repeats=1)  # a window after every step

TINY_SUITE = """
description = "tiny test suite"
dataset = "synthetic"
architectures = {architectures}
seeds = [0]
limit_train = 96
limit_test = 48

[classify]
epochs = 2
batch_size = 16
optimizer = "adam"
lr = 0.001

[measure]
repeats = 5
warmup_time = 0.0
min_repeat_time = 0.0
max_time = 0.0
latency_time = 0.0
latency_min_calls = 3
"""


@pytest.fixture(autouse=True)
def isolated_registry():
    """Each test sees the built-in registry; whatever it registers (also through --arch-module files) is gone afterwards."""
    saved, loaded = dict(registry._REGISTRY), registry._entry_points_loaded
    yield
    for name in [name for name in sys.modules if name.startswith("archbench_user_")]:
        del sys.modules[name]
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)
    registry._entry_points_loaded = loaded


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def fid_cache(tmp_path_factory):
    """FID reference classifiers of the whole session go to one temporary folder, never to ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        path = tmp_path_factory.mktemp("fid-cache")
        patch.setenv("ARCHBENCH_FID_CACHE", str(path))
        yield path


@pytest.fixture
def tiny_suite(tmp_path):
    """Write a tiny suite file for the given architectures; returns its path."""

    def write(*architectures: str, extra: str = "") -> Path:
        path = tmp_path / "tiny.toml"
        names = "[" + ", ".join(f'"{a}"' for a in architectures) + "]"
        path.write_text(TINY_SUITE.format(architectures=names) + extra)
        return path

    return write


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """Write `array` (uint8) in the IDX format of MNIST and Fashion-MNIST."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if compress else payload)


def write_mnist_files(folder: Path, n_train: int = 40, n_test: int = 20, compress: bool = False) -> None:
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)), compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(n) % 10, compress)


def write_cifar10_files(root: Path, monkeypatch, n_per_batch: int = 10) -> None:
    """Small CIFAR-10 python batches under root/cifar-10-batches-py; torchvision's MD5s patched to match."""
    import torchvision.datasets as tv

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def dump(name: str, content: dict) -> list[str]:
        (folder / name).write_bytes(pickle.dumps(content))
        return [name, hashlib.md5((folder / name).read_bytes()).hexdigest()]

    def batch(name: str) -> list[str]:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        return dump(name, {"data": data, "labels": [i % 10 for i in range(n_per_batch)]})

    train = [batch(f"data_batch_{i}") for i in range(1, 6)]
    test = [batch("test_batch")]
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    meta = dump("batches.meta", {"label_names": names})
    monkeypatch.setattr(tv.CIFAR10, "train_list", train)
    monkeypatch.setattr(tv.CIFAR10, "test_list", test)
    monkeypatch.setattr(tv.CIFAR10, "meta", {"filename": meta[0], "key": "label_names", "md5": meta[1]})
