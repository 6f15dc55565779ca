"""Tiny image folders written for the tests: a few images per class, in several formats and colour modes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# (suffix, PIL format, colour mode): every decoding path the folder loader promises
KINDS = (
    (".jpg", "JPEG", "RGB"), (".png", "PNG", "RGBA"), (".webp", "WEBP", "RGB"), (".jpeg", "JPEG", "L"),
    (".png", "PNG", "P"), (".jpg", "JPEG", "CMYK"), (".PNG", "PNG", "L"),
)


def image(path: Path, size: tuple[int, int] = (24, 20), seed: int = 0, shade: int = 0, kind=KINDS[0]) -> Path:
    """An image at `path` (width x height `size`): a bright square on a dark field, tinted by `shade`, in `kind`."""
    rng = np.random.default_rng(seed)
    width, height = size
    pixels = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    pixels[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = (200, 60 + 60 * shade % 190, 40 * shade % 250)
    picture = Image.fromarray(pixels).convert(kind[2])
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, kind[1])
    return path


def folder(
    root: Path, classes: int = 3, per_class: int = 5, val_per_class: int | None = 2, size=(24, 20), mixed: bool = True
) -> Path:
    """An image folder at `root`: with `val_per_class`, root/train/<class>/ and root/val/<class>/; without,
    root/<class>/ only. With `mixed`, the images cycle through KINDS; else all are RGB JPEGs."""
    splits = (("train", per_class), ("val", val_per_class)) if val_per_class is not None else (("", per_class),)
    n = 0
    for split, count in splits:
        for c in range(classes):
            for i in range(count):
                kind = KINDS[n % len(KINDS)] if mixed else KINDS[0]
                image(root / split / f"class{c}" / f"img{i}{kind[0]}", size, seed=n, shade=c, kind=kind)
                n += 1
    return root
