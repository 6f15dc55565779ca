"""Where the task loops' batches come from: datasets loaded into memory (`datasets`), and sources that batch
them (`memory`)."""

from .datasets import LOADERS, ImageData, load
from .memory import Batch, Source, TensorSource, batch_count, batches, training_batches

__all__ = ["LOADERS", "ImageData", "load", "Batch", "Source", "TensorSource", "batch_count", "batches", "training_batches"]
