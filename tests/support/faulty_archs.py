"""Architectures that fail in every way a user's model can, for the tests of isolation, timeouts and resume.

Loaded with `--arch-module tests/support/faulty_archs.py`, so that child processes import it too. Each model
is a tiny linear classifier that misbehaves at its third training step.
"""

import ctypes
import os
import signal
import sys
import time
from pathlib import Path

import torch
from torch import nn

import architectures


class Faulty(nn.Module):
    def __init__(self, input_shape, num_classes, fault):
        super().__init__()
        c, h, w = input_shape
        self.linear, self.fault, self.steps = nn.Linear(c * h * w, num_classes), fault, 0

    def forward(self, x):
        if torch.is_grad_enabled() and self.training:
            self.steps += 1
            if self.steps == 3:
                x = self.fault(x)
        return self.linear(x.flatten(1))


def faulty(name, description, fault):
    @architectures.register(name, task="classify", family="test", description=description)
    def build(input_shape, num_classes):
        return Faulty(input_shape, num_classes, fault)


def _raise(x):
    raise RuntimeError("boom at step 3")


def _exit(x):
    sys.exit(3)


def _hard_exit(x):
    sys.stderr.write("about to os._exit\n")
    sys.stderr.flush()
    os._exit(7)


def _kill(x):
    os.kill(os.getpid(), signal.SIGKILL)


def _segfault(x):
    ctypes.string_at(0)


def _hang(x):
    time.sleep(3600)


def _pause_once(x):
    """Sleeps the first time any process reaches it (marked by the file $FAULTY_PAUSE_FILE), then never again."""
    marker = Path(os.environ["FAULTY_PAUSE_FILE"])
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        time.sleep(3600)
    return x


faulty("raises", "raises at training step 3", _raise)
faulty("sys-exit", "calls sys.exit(3) at training step 3", _exit)
faulty("os-exit", "calls os._exit(7) at training step 3", _hard_exit)
faulty("killed", "SIGKILLs itself at training step 3 (as the OOM killer would)", _kill)
faulty("segfaults", "reads address 0 at training step 3", _segfault)
faulty("hangs", "sleeps an hour at training step 3", _hang)
faulty("nan-loss", "NaN inputs from training step 3 on", lambda x: torch.full_like(x, float("nan")))
faulty("pauses-once", "sleeps at training step 3 the first time only", _pause_once)


class NanAtEvaluation(Faulty):
    """Trains like a linear model; its evaluation outputs (inference mode, whole eval batches) are NaN."""

    def forward(self, x):
        scores = super().forward(x)
        return scores * float("nan") if torch.is_inference_mode_enabled() and len(x) > 2 else scores


@architectures.register("nan-at-evaluation", task="classify", family="test", description="NaN scores at evaluation")
def nan_at_evaluation(input_shape, num_classes):
    return NanAtEvaluation(input_shape, num_classes, lambda x: x)


@architectures.register("twenty-scores", task="classify", family="test", description="20 scores for 10 classes")
def twenty_scores(input_shape, num_classes):
    return Faulty(input_shape, 2 * num_classes, lambda x: x)


@architectures.register("raises-in-builder", task="classify", family="test", description="its builder raises")
def raises_in_builder(input_shape, num_classes):
    raise ValueError("no such layer")
