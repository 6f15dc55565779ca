"""Write a realistic image folder to try `archbench run --dataset folder:PATH` with, from nothing but this repository.

The ten classes of archbench's synthetic shapes (disk, ring, square, ...) rendered at 128 px, each shape
tinted and placed on a textured background (stripes of a random frequency, angle and colour, blotches and
noise), saved as JPEGs in the ImageNet layout: OUT/train/<class>/*.jpg and OUT/val/<class>/*.jpg.

    python examples/make_image_folder.py                      # example-folder/, 100 + 20 images per class
    archbench run --suite folder                              # reads example-folder/
    archbench run --dataset folder:example-folder --arch cnn-baseline resnet18 --image-size 64
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.data import synthetic  # noqa: E402


def textured(images: torch.Tensor, seed: int) -> torch.Tensor:
    """`images` (N, 3, S, S) in [0, 1] with stripes of a random frequency, angle and colour over them, faintly
    where the shape is (so that the shape stays the thing to learn) and more where the background is."""
    n, _, size, _ = images.shape
    g = torch.Generator().manual_seed(seed)
    angle = torch.rand(n, generator=g) * math.pi
    frequency = 2 * math.pi * (3 + 9 * torch.rand(n, generator=g)) / size
    position = torch.arange(size, dtype=torch.float32)
    along = (torch.cos(angle)[:, None, None] * position[None, None, :] + torch.sin(angle)[:, None, None] * position[None, :, None])
    stripes = 0.5 + 0.5 * torch.sin(frequency[:, None, None] * along)
    colour = torch.rand(n, 3, 1, 1, generator=g)
    background = images.mean(1, keepdim=True)
    shape = (images - background).abs().amax(1, keepdim=True) > 0.15  # where the tinted shape differs from grey
    strength = torch.where(shape, 0.1, 0.35)
    return (images + strength * (stripes[:, None] * colour - 0.5 * colour)).clamp(0, 1)


def write(out: Path, train_per_class: int, val_per_class: int, size: int, quality: int) -> int:
    """Write the folder; returns how many images it holds."""
    classes = len(synthetic.CLASSES)
    written = 0
    for split, per_class, seed in (("train", train_per_class, 0), ("val", val_per_class, 1)):
        counts = [0] * classes
        total, chunk = per_class * classes, 200
        for start in range(0, total, chunk):
            n = min(chunk, total - start)
            images, labels = synthetic.shapes(n, size=size, seed=seed * 1000 + start)
            images = textured(images, seed * 1000 + start)
            pixels = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            for picture, label in zip(pixels, labels.tolist()):
                folder = out / split / synthetic.CLASSES[label]
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(picture).save(folder / f"{split}_{counts[label]:05d}.jpg", quality=quality)
                counts[label] += 1
                written += 1
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="example-folder", type=Path, help="where to write it (default: example-folder)")
    parser.add_argument("--train", type=int, default=100, help="training images per class (default 100)")
    parser.add_argument("--val", type=int, default=20, help="validation images per class (default 20)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    args = parser.parse_args()
    if args.train < 1 or args.val < 1 or args.size < 16:
        parser.error("--train and --val must be at least 1, --size at least 16")
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out} exists and is not empty; give another folder or remove it")
    written = write(args.out, args.train, args.val, args.size, args.quality)
    print(f"wrote {written} JPEGs ({args.size} px, {len(synthetic.CLASSES)} classes) to {args.out}/train and {args.out}/val")
    return 0


if __name__ == "__main__":
    sys.exit(main())
