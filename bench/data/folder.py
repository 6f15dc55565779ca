"""Image folders: the ImageNet layout (`PATH/train/<class>/*`, `PATH/val/<class>/*`) or class folders alone
(`PATH/<class>/*`, split by a seeded, stratified hold-out), checked before any training.

`index(path, settings)` finds the classes and the images and checks every image file's header and ending
without decoding it; `FolderImages` decodes them with torchvision's decoders and transforms (v2) into uint8
tensors. What a user can get wrong is a UserError naming the file: see `docs/datasets.md` for each case.
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError

# torchvision 0.29 deprecates its decoders in favour of TorchCodec's; they are what torchvision's datasets use
# and all that this reads, so the warning (raised on every decode, in every worker) says nothing to act on here.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision", category=DeprecationWarning)

FOLDER_PREFIX = "folder:"  # a dataset named folder:PATH is the image folder at PATH
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
FORMATS = ("JPEG", "PNG", "WEBP")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CROP_RATIO = 0.875  # evaluation: resize the shorter side to size / 0.875, then center-crop `size` (torchvision's recipe)
DATA_PATHS = ("auto", "memory", "stream")
NORMALIZATIONS = ("imagenet", "measured")
SPLIT_SEED = 0  # the hold-out split and the order of the files: one per folder, whatever the run's seed
MEASURED_IMAGES = 1000  # `normalize = "measured"` takes the statistics of up to this many training images


@dataclass(frozen=True, kw_only=True)
class FolderSettings:
    """How a `folder:PATH` dataset is read; the suite's `[data]` table (folder datasets only).

    `image_size` is the side of the square crops the models see. `data_path`: `memory` decodes every image
    once (the evaluation transform) and trains on tensors, as the built-in datasets do; `stream` decodes
    batches in `num_workers` DataLoader workers every epoch (None: see `workers`); `auto`
    takes memory when the decoded images fit `cache_mb` and training does not augment, stream otherwise.
    """

    image_size: int = 224
    data_path: str = "auto"
    num_workers: int | None = None
    prefetch_factor: int = 2
    cache_mb: int = 2048
    augment: bool = True  # training: RandomResizedCrop + horizontal flip; without: the evaluation transform
    normalize: str = "imagenet"  # or "measured" on the training split
    holdout: float = 0.2  # the share of each class held out for evaluation when the folder has no train/ and val/
    skip_bad_images: bool = False  # skip (and count) unreadable, corrupt or oversized images instead of stopping
    max_image_pixels: int = 89_478_485  # PIL's decompression-bomb limit: larger images are bad images

    def problems(self) -> list[str]:
        found = []
        if self.image_size < 8:
            found.append(f"image_size must be at least 8 pixels, got {self.image_size}")
        if self.data_path not in DATA_PATHS:
            found.append(f"data_path must be one of {', '.join(DATA_PATHS)}, got {self.data_path!r}")
        if self.num_workers is not None and self.num_workers < 0:
            found.append(f"num_workers must not be negative, got {self.num_workers}")
        if self.prefetch_factor < 1:
            found.append(f"prefetch_factor must be at least 1, got {self.prefetch_factor}")
        if self.cache_mb < 0:
            found.append(f"cache_mb must not be negative, got {self.cache_mb}")
        if self.normalize not in NORMALIZATIONS:
            found.append(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {self.normalize!r}")
        if not 0 < self.holdout < 1:
            found.append(f"holdout must be between 0 and 1, got {self.holdout:g}")
        if self.max_image_pixels < 1:
            found.append(f"max_image_pixels must be positive, got {self.max_image_pixels}")
        return found

    @property
    def workers(self) -> int:
        """`num_workers`, or the default: one fewer than the CPUs this process may use, at most 8; none (decode in
        the training process) on two CPUs or fewer, where workers and the model's threads contend for the same
        cores: on a 2-core Xeon, resnet18 at 128 px trained end to end at 0.86-0.89 of its ceiling with no worker
        and at 0.74-0.80 with one or two (docs/datasets.md)."""
        if self.num_workers is not None:
            return self.num_workers
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return 0 if cpus <= 2 else min(8, cpus - 1)


@dataclass(frozen=True, kw_only=True)
class FolderIndex:
    """The images of a folder dataset: paths and labels of each split, in a seeded order, and what was left out."""

    root: str
    classes: tuple[str, ...]
    train_files: np.ndarray  # of str: numpy, not a list, so that DataLoader workers do not copy it page by page
    train_labels: np.ndarray
    test_files: np.ndarray
    test_labels: np.ndarray
    layout: str  # "train/val" or "hold-out <fraction>"
    skipped: tuple[tuple[str, str], ...] = field(default=())  # (file, why), with skip_bad_images
    ignored: int = 0  # files that are not images by their suffix (README.txt, .DS_Store, ...)

    def cut(self, limit_train: int | None, limit_test: int | None) -> "FolderIndex":
        """The first `limit_train`/`limit_test` images of each split (a seeded sample of every class)."""
        return replace(
            self, train_files=self.train_files[:limit_train], train_labels=self.train_labels[:limit_train],
            test_files=self.test_files[:limit_test], test_labels=self.test_labels[:limit_test],
        )


def index(path: str | Path, settings: FolderSettings) -> FolderIndex:
    """The folder's classes and images, every image checked (`check_image`); UserError for a folder that is
    missing, holds no classes or images, has an empty class folder, validation classes other than its training
    classes, or a bad image (unless `settings.skip_bad_images`, which skips and counts it)."""
    root = Path(path).expanduser()
    if not root.exists():
        raise UserError(f"folder dataset {root}: no such folder; give PATH in --dataset folder:PATH")
    if not root.is_dir():
        raise UserError(f"folder dataset {root}: is a file, not a folder of class folders")
    train_dir, val_dir = root / "train", root / "val"
    ignored = 0
    if train_dir.is_dir():
        if not val_dir.is_dir():
            raise UserError(
                f"folder dataset {root}: has train/ but no val/; add val/<class>/ images, "
                f"or put the class folders directly in {root} to hold out {settings.holdout:g} of each class"
            )
        train, ignored_train = _class_files(train_dir)
        test, ignored_test = _class_files(val_dir)
        ignored = ignored_train + ignored_test
        if set(train) != set(test):
            only_train, only_val = sorted(set(train) - set(test)), sorted(set(test) - set(train))
            said = "; ".join(
                f"only in {where}/: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
                for where, names in (("train", only_train), ("val", only_val)) if names
            )
            raise UserError(f"folder dataset {root}: the classes of train/ and val/ differ ({said})")
        layout = "train/val"
    else:
        train, ignored = _class_files(root)
        train, test = _hold_out(train, settings.holdout)
        layout = f"hold-out {settings.holdout:g}"
    classes = tuple(sorted(train))
    skipped: list[tuple[str, str]] = []
    train_files, train_labels = _checked_split(train, classes, settings, skipped)
    test_files, test_labels = _checked_split(test, classes, settings, skipped)
    for split, labels in (("training", train_labels), ("evaluation", test_labels)):
        if len(labels) == 0:
            raise UserError(f"folder dataset {root}: no {split} images are left after skipping {len(skipped)} bad one(s)")
    return FolderIndex(
        root=str(root), classes=classes, train_files=train_files, train_labels=train_labels, test_files=test_files,
        test_labels=test_labels, layout=layout, skipped=tuple(skipped), ignored=ignored,
    )


def _checked_split(
    files_of: dict[str, list[Path]], classes: tuple[str, ...], settings: FolderSettings, skipped: list[tuple[str, str]]
) -> tuple[np.ndarray, np.ndarray]:
    """One split's images that pass `check_image` and their labels (each class's index in `classes`), in the
    order SPLIT_SEED shuffles them into; a bad image raises UserError, or with `settings.skip_bad_images` is
    appended to `skipped` as (file, problem)."""
    files, labels = [], []
    for label, name in enumerate(classes):
        for file in files_of[name]:
            problem = check_image(file, settings.max_image_pixels)
            if problem is None:
                files.append(str(file))
                labels.append(label)
            elif settings.skip_bad_images:
                skipped.append((str(file), problem))
            else:
                raise UserError(f"folder dataset: {file}: {problem} (pass --skip-bad-images to skip such files and count them)")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(files))
    return np.array(files)[order], np.array(labels, dtype=np.int64)[order]


def _class_files(folder: Path) -> tuple[dict[str, list[Path]], int]:
    """{class name: its image files (sorted, found in subfolders too)} for the class folders in `folder`, and how
    many other files they hold; UserError when there are no class folders or one holds no images."""
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(
            f"folder dataset {folder}: holds no class folders; expected PATH/train/<class>/*.jpg and "
            "PATH/val/<class>/*.jpg, or PATH/<class>/*.jpg (JPEG, PNG or WebP)"
        )
    found, ignored = {}, 0
    for class_dir in classes:
        files = sorted(
            Path(where) / name
            for where, dirs, names in os.walk(class_dir, onerror=_unreadable)
            for name in names if not name.startswith(".")
        )
        images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
        ignored += len(files) - len(images)
        if not images:
            other = f" (it holds {len(files)} other file(s), e.g. {files[0].name})" if files else ""
            raise UserError(
                f"folder dataset: class folder {class_dir} holds no images{other}; add images (JPEG, PNG or WebP) "
                "or remove the folder"
            )
        found[class_dir.name] = images
    return found, ignored


def _unreadable(error: OSError) -> None:
    raise UserError(f"folder dataset: cannot read {error.filename}: {error.strerror}")


def _hold_out(files: dict[str, list[Path]], fraction: float) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """(train, held out): a seeded `fraction` of each class's files held out (at least one where a class has two)."""
    train, test = {}, {}
    for name, paths in files.items():
        order = np.random.default_rng(SPLIT_SEED).permutation(len(paths))
        held = min(len(paths) - 1, max(1 if len(paths) > 1 else 0, round(fraction * len(paths))))
        test[name] = sorted(paths[i] for i in order[:held])
        train[name] = sorted(paths[i] for i in order[held:])
    return train, test


def check_image(path: Path, max_pixels: int) -> str | None:
    """Why `path` is not an image the loader can decode (unreadable, empty, not JPEG/PNG/WebP, cut short, over
    `max_pixels`), or None. Reads its header and its ending only; corruption inside the data shows at decoding."""
    from PIL import Image, UnidentifiedImageError

    try:
        size = path.stat().st_size
        if size == 0:
            return "empty file (0 bytes)"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                with Image.open(path) as image:
                    kind, (width, height) = image.format, image.size
            finally:
                Image.MAX_IMAGE_PIXELS = limit
        with open(path, "rb") as f:
            f.seek(max(0, size - 16))
            tail = f.read()
            f.seek(0)
            head = f.read(12)
    except PermissionError:
        return "cannot read it: permission denied"
    except UnidentifiedImageError:
        return "not an image (neither JPEG, PNG nor WebP)"
    except OSError as error:
        if error.errno is None:  # PIL's own: the header itself is cut or broken
            return f"a corrupt or cut short (truncated) image: {' '.join(str(error).split())}"
        return f"cannot read it: {error.strerror}"
    if kind not in FORMATS:
        return f"a {kind} image; the loader decodes JPEG, PNG and WebP"
    if width * height > max_pixels:
        return f"{width} x {height} pixels, over the limit of {max_pixels:,} (max_image_pixels)"
    if _cut_short(kind, head, tail, size):
        return f"a {kind} file cut short (truncated)"
    return None


def _cut_short(kind: str, head: bytes, tail: bytes, size: int) -> bool:
    if kind == "JPEG":
        return not tail.rstrip(b"\0").endswith(b"\xff\xd9")  # the end-of-image marker (some writers pad with zeros)
    if kind == "PNG":
        return not tail.endswith(b"IEND\xaeB`\x82")
    return struct.unpack("<I", head[4:8])[0] + 8 > size  # WebP: RIFF's own length


def decode(path: str) -> torch.Tensor:
    """The image at `path` as a (3, H, W) uint8 RGB tensor: greyscale, palette, RGBA and CMYK converted, 16-bit
    scaled; ValueError naming the file when it cannot be decoded."""
    from torchvision.io import ImageReadMode, decode_image, read_file
    from torchvision.transforms.v2.functional import to_dtype

    try:
        image = decode_image(read_file(path), mode=ImageReadMode.RGB)
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1].split(", ")[-1] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: cannot decode it: {reason}") from None
    return image if image.dtype == torch.uint8 else to_dtype(image, torch.uint8, scale=True)


def transform(size: int, train: bool):
    """torchvision's reference transform of uint8 images to `size` x `size`: for training RandomResizedCrop and a
    horizontal flip; for evaluation a resize of the shorter side to size / 0.875 and a center crop."""
    from torchvision.transforms import v2

    if train:
        return v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()])
    return v2.Compose([v2.Resize(round(size / CROP_RATIO), antialias=True), v2.CenterCrop(size)])


class FolderImages(torch.utils.data.Dataset):
    """Images `files` with labels `labels`, each decoded and transformed on access: (uint8 (3, size, size), label).

    An item is asked for by its index, or, for the random training transform, by (index, seed): the transform
    then draws from `seed` alone, so that a sample's augmentation depends on neither the worker that decodes it
    nor what that worker decoded before (which varies with timing: workers run ahead of the loop)."""

    def __init__(self, files: np.ndarray, labels: np.ndarray, size: int, train: bool):
        self.files, self.labels, self.size, self.train = files, labels, size, train
        self.transform = transform(size, train)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        i, seed = item if isinstance(item, tuple) else (item, None)
        image = decode(str(self.files[i]))
        if seed is None:
            return self.transform(image), int(self.labels[i])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image), int(self.labels[i])
