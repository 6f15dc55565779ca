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
    /proc/self/clear_refs, with large blocks mapped on their own meanwhile (`mapped_blocks`). Where that reset is impossible (not Linux), the process's lifetime peak
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
    with mapped_blocks():
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


# glibc adapts its thresholds to the process's history and maps blocks over its mmap threshold afresh at every
# allocation, faulting their pages in each time; fixed here, with every block served from the heap and freed heap
# kept, a figure does not depend on what ran before it in the process (evidence: docs/measurement.md).
MALLOC_MMAP_THRESHOLD = 32 << 20  # glibc's largest: blocks below this come from the heap ...
MALLOC_MMAP_MAX = 0  # ... and, with no block mapped on its own, those above it too
MALLOC_TRIM_THRESHOLD = 1 << 30  # free heap kept before it is returned to the system
GLIBC_MMAP_MAX = 65536  # glibc's default M_MMAP_MAX, which `mapped_blocks` brings back
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # mallopt's parameters (malloc.h)


def _glibc():
    """The C library where it is glibc on Linux (mallopt and malloc_trim exist), else None."""
    name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and libc.mallopt and libc.malloc_trim else None
    except (OSError, AttributeError):
        return None


def steady_allocator() -> str | None:
    """Fix glibc's malloc for this process (see above); returns what was set, or None elsewhere."""
    libc = _glibc()
    settings = ((M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD), (M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD), (M_MMAP_MAX, MALLOC_MMAP_MAX))
    if libc is None or not all(libc.mallopt(parameter, value) == 1 for parameter, value in settings):
        return None
    global _steady
    _steady = True
    return f"glibc: every block from the heap (M_MMAP_MAX 0), trim threshold {MALLOC_TRIM_THRESHOLD >> 20} MiB"


_steady = False  # whether steady_allocator has set this process's malloc


@contextmanager
def mapped_blocks() -> Iterator[None]:
    """Inside, glibc maps blocks over its mmap threshold on their own again (its default M_MMAP_MAX), so that each
    is counted once in the resident set and given back when freed, whatever the heap's state; after, every block
    from the heap again. Nothing where `steady_allocator` has not set the process's malloc."""
    libc = _glibc() if _steady else None
    if libc is None or libc.mallopt(M_MMAP_MAX, GLIBC_MMAP_MAX) != 1:
        yield
        return
    try:
        yield
    finally:
        libc.mallopt(M_MMAP_MAX, MALLOC_MMAP_MAX)


def _malloc_trim() -> None:
    """Hand freed heap back to the OS (glibc), so an earlier model's peak does not hide this one's."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
