"""Where the task loops' batches come from: datasets loaded into memory (`datasets`), sources that batch them
(`memory`), and image folders (`folder`), streamed by DataLoader workers or decoded once (`stream`)."""

from .datasets import LOADERS, ImageData, load
from .memory import Batch, Source, Splits, TensorSource, batch_count, batches, training_batches

__all__ = [
    "LOADERS", "ImageData", "load", "Batch", "Source", "Splits", "TensorSource", "batch_count", "batches", "training_batches",
]
