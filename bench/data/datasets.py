"""Datasets by name: each split is loaded once into memory (an ImageData, bench.data.images) and moved to the
run's device; `folder:PATH` reads an image folder (bench.data.stream).

`load(name, ...)` returns an `ImageData` whose pixels are float32 in [0, 1]; `standardized()` gives the
per-channel zero-mean unit-variance copy classifiers train on. Batches come from a source over its tensors
(bench.data.memory).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import synthetic
from .folder import FOLDER_PREFIX, FolderSettings
from .images import ImageData
from ..errors import UserError

DEFAULT_ROOT = Path(os.environ.get("ARCHBENCH_DATA", Path.home() / ".cache" / "archbench" / "data"))
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SYNTHETIC_TRAIN, SYNTHETIC_TEST = 10_000, 2_000


def load(
    name: str,
    root: str | Path | None = None,
    download: bool = False,
    limit_train: int | None = None,
    limit_test: int | None = None,
    folder: FolderSettings | None = None,
) -> ImageData:
    """Dataset `name` with pixels in [0, 1], cut to the first `limit_train`/`limit_test` samples.

    `folder:PATH` is an image folder read with `folder`'s settings (bench.data.stream.open_folder): an ImageData,
    or a FolderStream that decodes batches as training draws them.

    Raises UserError for an unknown name, a root that is no folder, missing or malformed files (naming the
    file and saying where it looked), splits that do not fit together, or impossible limits.
    """
    if not name.startswith(FOLDER_PREFIX) and name not in LOADERS:
        raise UserError(f"unknown dataset {name!r} (valid: {', '.join(LOADERS)}, or {FOLDER_PREFIX}PATH for an image folder)")
    for flag, limit in (("--limit-train", limit_train), ("--limit-test", limit_test)):
        if limit is not None and limit < 1:
            raise UserError(f"{flag} must be a positive number of samples, got {limit}")
    if name.startswith(FOLDER_PREFIX):
        from .stream import open_folder

        return open_folder(name[len(FOLDER_PREFIX) :], folder or FolderSettings(), limit_train, limit_test)
    data_root = Path(root) if root else DEFAULT_ROOT
    if data_root.exists() and not data_root.is_dir():
        given = "--data-root" if root else "$ARCHBENCH_DATA"
        raise UserError(f"{given} {data_root}: is a file, not a folder; give the folder that holds the datasets")
    data = LOADERS[name](data_root, download)
    _check_consistent(data)
    return replace(
        data,
        train_x=data.train_x[:limit_train],
        train_y=data.train_y[:limit_train],
        test_x=data.test_x[:limit_test],
        test_y=data.test_y[:limit_test],
    )


@cache
def _synthetic(root: Path, download: bool) -> ImageData:
    train_x, train_y = synthetic.shapes(SYNTHETIC_TRAIN, seed=0)
    test_x, test_y = synthetic.shapes(SYNTHETIC_TEST, seed=1)
    return ImageData(
        name="synthetic", train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
        num_classes=len(synthetic.CLASSES),
    )


def _check_consistent(data: ImageData) -> None:
    """UserError when the splits of `data` do not fit together: counts, label range, image shapes, emptiness."""
    sources = data.sources or {}

    def at(*keys: str) -> str:
        places = list(dict.fromkeys(sources[k] for k in keys if k in sources))
        return f" ({', '.join(places)})" if places else ""

    for split, x, y in (("training", data.train_x, data.train_y), ("test", data.test_x, data.test_y)):
        prefix = "train" if split == "training" else "test"
        if len(x) != len(y):
            raise UserError(
                f"{data.name}: the {split} split has {len(x)} images{at(prefix + '_x')} "
                f"but {len(y)} labels{at(prefix + '_y')}; the two must hold as many samples"
            )
        if len(x) == 0:
            raise UserError(f"{data.name}: the {split} split holds no samples{at(prefix + '_x', prefix + '_y')}")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= data.num_classes:
            wrong = low if low < 0 else high
            raise UserError(
                f"{data.name}: {split} label {wrong} is outside [0, {data.num_classes}){at(prefix + '_y')}"
            )
    train_shape, test_shape = tuple(data.train_x.shape[1:]), tuple(data.test_x.shape[1:])
    if train_shape != test_shape:
        shown = lambda shape: "x".join(map(str, shape))
        raise UserError(
            f"{data.name}: training images are {shown(train_shape)}{at('train_x')} "
            f"but test images are {shown(test_shape)}{at('test_x')}"
        )


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _torchvision(dataset_class: str, name: str, how_to_get: str) -> Callable[[Path, bool], ImageData]:
    def loader(root: Path, download: bool) -> ImageData:
        import torchvision.datasets as tv

        cls = getattr(tv, dataset_class)
        idx = dataset_class in ("MNIST", "FashionMNIST")
        if idx:
            raw = root / dataset_class / "raw"
            _unpack_local_archives(name, raw)
            if name == "fashion-mnist" and not download:
                _extract_debian_fashion_mnist(root)
            _check_idx_files(name, root / dataset_class)
        try:
            train, test = cls(str(root), train=True, download=download), cls(str(root), train=False, download=download)
        except RuntimeError as error:
            if download:
                raise UserError(f"{name}: downloading into {root} failed: {_one_line(error)}") from None
            raise UserError(
                f"{name}: data files not found or corrupted under {root / _folder(cls)}; {how_to_get}"
            ) from None
        except OSError as error:
            raise UserError(f"{name}: cannot read or download data under {root}: {_one_line(error)}") from None
        if idx:
            sources = {
                f"{split}_{part}": str(raw / f"{prefix}-{kind}")
                for split, prefix in (("train", "train"), ("test", "t10k"))
                for part, kind in (("x", "images-idx3-ubyte"), ("y", "labels-idx1-ubyte"))
            }
        else:
            folder = root / _folder(cls)
            train_files = ", ".join(str(folder / entry[0]) for entry in cls.train_list)
            sources = {"train_x": train_files, "train_y": train_files}
            sources.update(dict.fromkeys(("test_x", "test_y"), ", ".join(str(folder / e[0]) for e in cls.test_list)))
        (train_x, train_y), (test_x, test_y) = _pixels(train), _pixels(test)
        return ImageData(
            name=name, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y, num_classes=len(train.classes),
            sources=sources,
        )

    return loader


def _folder(cls) -> str:
    return getattr(cls, "base_folder", None) or f"{cls.__name__}/raw"


def _pixels(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) float32 in [0, 1] and int64 labels from a torchvision MNIST- or CIFAR-style dataset."""
    images = torch.as_tensor(np.asarray(dataset.data))
    images = images[:, None] if images.ndim == 3 else images.permute(0, 3, 1, 2)
    return images.float().div_(255), torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64)


# The four IDX files of MNIST and Fashion-MNIST, and how many dimensions each holds.
IDX_FILES = {
    "train-images-idx3-ubyte": 3,
    "train-labels-idx1-ubyte": 1,
    "t10k-images-idx3-ubyte": 3,
    "t10k-labels-idx1-ubyte": 1,
}
_IDX_FIX = "delete it and pass --download, or put the original file there"


def _extract_debian_fashion_mnist(root: Path) -> None:
    """Unpack Debian's dataset-fashion-mnist files into torchvision's layout under `root`, when they are missing."""
    raw = root / "FashionMNIST" / "raw"
    archives = sorted(DEBIAN_FASHION_MNIST.glob("*-ubyte.gz"))
    if len(archives) != 4 or all(os.path.lexists(raw / a.name[:-3]) for a in archives):
        return
    for archive in archives:
        if not os.path.lexists(raw / archive.name[:-3]):
            _gunzip("fashion-mnist", archive, raw / archive.name[:-3])


def _unpack_local_archives(name: str, raw: Path) -> None:
    """Unpack FILE.gz in `raw` for each IDX file that is there only compressed (torchvision reads the unpacked)."""
    for stem in IDX_FILES:
        packed = raw / f"{stem}.gz"
        if not os.path.lexists(raw / stem) and packed.is_file():
            _gunzip(name, packed, raw / stem)


def _gunzip(name: str, archive: Path, target: Path) -> None:
    """Decompress `archive` into `target` through a temporary file beside it, so a failure leaves no half file."""
    temporary = target.with_name(f".{target.name}.partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{name}: cannot create {target.parent} to unpack {archive}: {error.strerror or error}") from None
    try:
        with gzip.open(archive, "rb") as source, open(temporary, "wb") as sink:
            while chunk := source.read(1 << 20):
                sink.write(chunk)
        os.replace(temporary, target)
    except (OSError, EOFError, zlib.error) as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, (gzip.BadGzipFile, EOFError, zlib.error)):
            raise UserError(f"{name}: {archive}: not a whole gzip file ({_one_line(error)}); {_IDX_FIX}") from None
        raise UserError(f"{name}: cannot unpack {archive} into {target.parent}: {error.strerror or _one_line(error)}") from None


def _check_idx_files(name: str, folder: Path) -> None:
    """UserError naming the first of the four IDX files under `folder`/raw that is there but malformed.

    Missing files are left to torchvision (download, or its "not found"). Skipped when torchvision's legacy
    processed files are there, which it reads instead.
    """
    if all((folder / "processed" / f).is_file() for f in ("training.pt", "test.pt")):
        return
    for stem, dimensions in IDX_FILES.items():
        path = folder / "raw" / stem
        if os.path.lexists(path):
            _check_idx(name, path, dimensions)


def _check_idx(name: str, path: Path, dimensions: int) -> None:
    """UserError unless `path` is an IDX file of unsigned bytes with `dimensions` dimensions and the size its header gives."""
    kind = "images" if dimensions == 3 else "labels"
    header_size = 4 + 4 * dimensions

    def wrong(what: str, fix: str = _IDX_FIX) -> UserError:
        return UserError(f"{name}: {path}: {what}; {fix}")

    if not path.is_file():
        raise wrong("not a file" + (" (a folder)" if path.is_dir() else ""))
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            header = f.read(header_size)
    except OSError as error:
        raise UserError(f"{name}: {path}: cannot read: {error.strerror or _one_line(error)}") from None
    if size == 0:
        raise wrong("empty file (0 bytes)")
    if len(header) < 4:
        raise wrong(f"cut inside its header ({len(header)} of {header_size} bytes)")
    if header[:2] == b"\x1f\x8b":
        raise wrong("gzip-compressed", f"unpack it, or name it {path.name}.gz")
    magic = 0x0800 + dimensions
    if header[:2] != b"\0\0":
        raise wrong(f"wrong magic number 0x{header[:4].hex()} (IDX {kind} start with 0x{magic:08x}): not an IDX file")
    if header[2] != 0x08:
        raise wrong(f"element type 0x{header[2]:02x}, expected 0x08 (unsigned byte)")
    if header[3] != dimensions:
        raise wrong(f"{header[3]} dimension(s), expected {dimensions} for {kind}")
    if len(header) < header_size:
        raise wrong(f"cut inside its header ({len(header)} of {header_size} bytes)")
    shape = struct.unpack(f">{dimensions}I", header[4:])
    expected = header_size + math.prod(shape)
    if size != expected:
        problem = "cut short" if size < expected else f"{size - expected} byte(s) too many"
        raise wrong(
            f"{size} bytes, but its header ({' x '.join(map(str, shape))} {kind}) makes {expected}: {problem}"
        )
    if math.prod(shape) == 0:
        raise wrong(f"holds no {kind} (its header says {' x '.join(map(str, shape))})")


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
