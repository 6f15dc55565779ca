"""Small data files in the real formats: MNIST's IDX files and CIFAR-10's python batches."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np


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
