"""Peak memory of a measured block (CUDA allocator, or the process's resident set on a CPU), and a glibc allocator
held steady so that a figure does not depend on what ran before it in the same process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import resource
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from .timing import synchronize


@dataclass
class PeakMemory:
    """Peak memory of a measured block: `bytes` above what was in use when it began, and how it was taken."""

    bytes: int | None = None
    method: str = ""

    @property
    def mb(self) -> float | None:
        return None if self.bytes is None else self.bytes / 2**20


@contextmanager
def peak_memory(device: torch.device) -> Iterator[PeakMemory]:
    """Peak memory the block needed beyond what was already in use when it began.

    CUDA: `torch.cuda.max_memory_allocated` minus the allocation at the start (tensors only).
    CPU and MPS: the process's peak resident set size (VmHWM) minus its resident size at the start,
    after returning freed heap to the system and resetting the high-water mark through
    /proc/self/clear_refs. Where that reset is impossible (not Linux), the process's lifetime peak
    (ru_maxrss), labelled as such.
    """
    result = PeakMemory()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        yield result
        synchronize(device)
        result.bytes = torch.cuda.max_memory_allocated(device) - before
        result.method = "cuda max_memory_allocated above start"
        return
    gc.collect()
    _malloc_trim()
    if _reset_peak_rss():
        before = _status_kib("VmRSS") * 1024
        yield result
        synchronize(device)
        result.bytes = _status_kib("VmHWM") * 1024 - before
        result.method = "process peak RSS above start (VmHWM)"
    else:
        yield result
        result.bytes, result.method = _lifetime_peak_rss(), "process lifetime peak RSS (ru_maxrss)"


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); False where that is impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        _status_kib("VmHWM")
        return True
    except OSError:
        return False


def _lifetime_peak_rss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


# glibc's allocator adapts its thresholds to the history of the process: a process that has freed large
# blocks keeps later ones on its heap, a fresh one maps and unmaps them (and faults their pages in) at every
# training step. Measured on vae-mlp (quick suite, one process per run): 2008-2272 samples/s fresh, 3376-3498
# after such a history or with these fixed thresholds. Fixing them makes a figure independent of what ran
# before it in the same process. The trim threshold must exceed what a step frees at the top of the heap:
# at 64 MiB, the copy a timing window trains (allocated last, so on top) gave 23,000 pages back after every
# fp32 cnn-wide step and faulted them in again in the next, and its windows ran 12% below the loop (20
# interleaved pairs); at 1 GiB no step faults and they agree within 2%. peak_memory trims explicitly.
MALLOC_MMAP_THRESHOLD = 32 << 20  # glibc's largest: blocks below this come from the heap
MALLOC_TRIM_THRESHOLD = 1 << 30  # free heap kept before it is returned to the system


def _glibc():
    """The C library where it is glibc on Linux (mallopt and malloc_trim exist), else None."""
    name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and libc.mallopt and libc.malloc_trim else None
    except (OSError, AttributeError):
        return None


def steady_allocator() -> str | None:
    """Fix glibc's malloc thresholds for this process (see above); returns what was set, or None elsewhere."""
    libc = _glibc()
    if libc is None or libc.mallopt(-3, MALLOC_MMAP_THRESHOLD) != 1 or libc.mallopt(-1, MALLOC_TRIM_THRESHOLD) != 1:  # M_MMAP_, M_TRIM_THRESHOLD
        return None
    return f"glibc mmap threshold {MALLOC_MMAP_THRESHOLD >> 20} MiB, trim threshold {MALLOC_TRIM_THRESHOLD >> 20} MiB"


GLIBC_MMAP_MAX = 65536  # glibc's default M_MMAP_MAX, which `heap_only` restores


@contextmanager
def heap_only(device: torch.device) -> Iterator[None]:
    """On a CPU under glibc, every block allocated inside comes from the heap (M_MMAP_MAX 0), so a forward's
    largest activations (over the 32 MiB mmap threshold) are reused from touched heap after the first call
    instead of being mapped and faulted in afresh at every call: an inference figure that is the same in a fresh
    process and after training grew the heap. glibc's default comes back after the block. Elsewhere, nothing."""
    libc = _glibc() if device.type == "cpu" else None
    if libc is None or libc.mallopt(-4, 0) != 1:  # M_MMAP_MAX
        yield
        return
    try:
        yield
    finally:
        libc.mallopt(-4, GLIBC_MMAP_MAX)


def _malloc_trim() -> None:
    """Hand freed heap back to the OS (glibc), so an earlier model's peak does not hide this one's."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
