"""The reference classifier whose features FID and KID compare (the suite's `[fid]` table), trained once and cached.

It is a registered classify architecture trained by the classify task's own loop on the run's training
split (pixels in [0, 1], standardized per channel inside the model). The cache file's name carries the
architecture, dataset and seed, plus a digest of everything else the weights depend on: the split sizes,
the input shape and the training settings. A later run with the same key loads the file instead of training.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

import architectures

from ..data import ImageData
from ..results.store import write_whole
from ..measure.timing import MeasureSettings
from . import classify
from .base import Diverged, Progress, RunContext
from .settings import ClassifySettings, FidSettings, TrainingSettings

CACHE_ENV = "ARCHBENCH_FID_CACHE"


def cache_dir(settings: FidSettings) -> Path:
    """The `[fid]` table's cache_dir, else $ARCHBENCH_FID_CACHE, else ~/.cache/archbench/fid."""
    if settings.cache_dir:
        return Path(settings.cache_dir).expanduser()
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "archbench" / "fid")


class Standardized(nn.Module):
    """`classifier` applied to images in [0, 1] after per-channel standardization by fixed statistics."""

    def __init__(self, classifier: nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.classifier = classifier
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("std", std.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier((x - self.mean) / self.std)


class Features(nn.Module):
    """The input of a classifier's last nn.Linear layer (its penultimate activations), flattened to (N, d).

    This is the classifier's counterpart of Inception's pool features; `num_features` is d.
    """

    def __init__(self, classifier: nn.Module):
        super().__init__()
        linears = [m for m in classifier.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(f"{type(classifier).__name__} has no nn.Linear layer whose input could serve as features")
        self.classifier, self.head = classifier, linears[-1]
        self.num_features = self.head.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []
        handle = self.head.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
        try:
            self.classifier(x)
        finally:
            handle.remove()
        return captured[0].flatten(1)


@dataclass(kw_only=True)
class Reference:
    """A trained reference classifier: its feature network, test accuracy and cache file."""

    name: str
    features: Features
    accuracy: float
    path: Path
    cached: bool

    def record(self) -> dict[str, Any]:
        """The record keys that say which features an FID was computed on and how good they are."""
        return {
            "fid_classifier": self.name,
            "fid_classifier_accuracy": self.accuracy,
            "fid_classifier_cached": self.cached,
            "fid_classifier_file": str(self.path),
            "fid_features": self.features.num_features,
        }


def cache_key(settings: FidSettings, data: ImageData) -> dict[str, Any]:
    """Everything the reference classifier's weights depend on."""
    return {
        "classifier": settings.classifier,
        "dataset": data.name,
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "train_samples": len(data.train_x),
        "test_samples": len(data.test_x),
        "seed": settings.seed,
        "training": {f.name: getattr(settings, f.name) for f in fields(TrainingSettings)},
    }


def cache_path(settings: FidSettings, data: ImageData) -> Path:
    digest = hashlib.sha256(json.dumps(cache_key(settings, data), sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir(settings) / f"{settings.classifier}-{data.name}-seed{settings.seed}-{digest}.pt"


def load_or_train(
    settings: FidSettings, data: ImageData, device: torch.device, progress=lambda total, description: Progress()
) -> Reference:
    """The reference classifier of `settings` for `data`, from the cache or, when missing there, trained and cached.

    Training uses the classify task's loop with `settings` and seed `settings.seed`; `progress` makes its bar.
    An unreadable cache file is replaced. The global random state is left as it was, so a generator's run
    is the same whether the classifier came from the cache or not. The feature network is in eval mode.
    """
    path = cache_path(settings, data)

    def build() -> Standardized:
        torch.manual_seed(settings.seed)
        classifier = architectures.create(settings.classifier, data.input_shape, data.num_classes)
        return Standardized(classifier, *data.channel_stats).to(device)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = build()
        accuracy = _load(path, model, device)
        cached = accuracy is not None
        if not cached:
            model = build()  # a file that failed half-way through loading must not leave weights behind
            accuracy = _train(model, settings, data, device, progress)
            _save(path, {"state_dict": model.state_dict(), "accuracy": accuracy, "key": json.dumps(cache_key(settings, data))})
    model.eval().requires_grad_(False)
    return Reference(name=settings.classifier, features=Features(model), accuracy=accuracy, path=path, cached=cached)


def _save(path: Path, saved: dict[str, Any]) -> None:
    """`saved` written to `path` with its SHA-256 beside it (`<path>.sha256`, written last), each whole or absent."""
    content = io.BytesIO()
    torch.save(saved, content)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_whole(path, content.getvalue())
    write_whole(_checksum_path(path), hashlib.sha256(content.getvalue()).hexdigest())


def _checksum_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.sha256")


def _load(path: Path, model: nn.Module, device: torch.device) -> float | None:
    """Load the weights saved at `path` into `model` and return the saved test accuracy; None if missing.

    A file whose SHA-256 differs from the one saved beside it (bytes flipped on disk, a copy cut short, a
    cache from before checksums), or that fails to load, is removed with one warning on stderr and None
    returned: the caller trains the classifier again. Nothing is loaded from an unverified file, so no
    cached file can crash a run."""
    if not path.exists():
        return None
    try:
        content = path.read_bytes()
        expected = _checksum_path(path).read_text().strip()
        if hashlib.sha256(content).hexdigest() != expected:
            raise ValueError("its checksum does not match")
        saved = torch.load(io.BytesIO(content), map_location=device, weights_only=True)
        model.load_state_dict(saved["state_dict"])
        return float(saved["accuracy"])
    except (OSError, EOFError, RuntimeError, KeyError, TypeError, ValueError, pickle.UnpicklingError) as error:
        reason = "its checksum is missing" if isinstance(error, FileNotFoundError) else str(error).splitlines()[0][:200]
        print(f"archbench: warning: FID reference cache {path}: {reason}; discarded, training it again", file=sys.stderr)
        path.unlink(missing_ok=True)
        _checksum_path(path).unlink(missing_ok=True)
        return None


def _train(model: Standardized, settings: FidSettings, data: ImageData, device: torch.device, progress) -> float:
    """Train `model` with the classify task's loop; return its test accuracy."""
    shared = {f.name: getattr(settings, f.name) for f in fields(TrainingSettings)}
    training = ClassifySettings(**shared, eval_batch_size=settings.eval_batch_size)
    context = RunContext(
        device=device, seed=settings.seed, measure=MeasureSettings(), run_dir=cache_dir(settings),
        progress=lambda total, description: progress(total, f"FID reference {settings.classifier}"),
    )
    record: dict[str, Any] = {}
    try:
        classify.fit(model, data.splits(standardize=False), training, context, record)  # the model standardizes
    except Diverged as error:
        raise RuntimeError(f"FID reference classifier {settings.classifier} diverged: {error}") from None
    return record["test_accuracy"]
