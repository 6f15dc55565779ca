"""Where and how a run's figures were taken: software versions, hardware, the archbench commit and the command
line, captured once per run into run.json and every record (`bench.results.schema.ENVIRONMENT_KEYS`)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # bench/run/environment.py -> the repository


def capture(device: torch.device, command: str | None = None) -> dict[str, Any]:
    """The environment of this process running on `device`: the keys `bench.results.schema.ENVIRONMENT_KEYS`.

    `command` defaults to this process's own command line.
    """
    cuda, cpu = device.type == "cuda", cpu_model()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision_version(),
        "device_name": torch.cuda.get_device_name(device) if cuda else cpu,
        "cpu": cpu,
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if cuda else None,
        "hostname": socket.gethostname(),
        "git_commit": git_commit(),
        "command": command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def torchvision_version() -> str | None:
    """torchvision's `__version__` ("0.29.1+cu130"), read from its version.py without importing it: the import
    takes ~1 s, and a run on in-memory data never needs it in the parent. The distribution's version (which may
    lack the local "+cu130") where that file cannot be read; None where torchvision is missing."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return None
    try:
        found = re.search(r"^__version__ = ['\"]([^'\"]+)['\"]", (Path(spec.origin).parent / "version.py").read_text(), re.M)
    except OSError:
        found = None
    return found[1] if found else importlib.metadata.version("torchvision")


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU as precisely as the machine tells: model name, then family, model and stepping, the vector
    instruction set PyTorch dispatches to, and the bf16 instructions present, e.g.
    "AMD EPYC (family 25 model 17 stepping 1; AVX512, avx512_bf16)". Virtual machines often name the CPU
    by brand alone; the rest tells two of them apart. `cpuinfo` is /proc/cpuinfo's text, read when None.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    first_cpu = {}
    for line in cpuinfo.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        first_cpu.setdefault(key.strip(), value.strip())
    name = first_cpu.get("model name") or platform.processor() or platform.machine()
    identity = " ".join(
        f"{label} {first_cpu[key]}" for key, label in (("cpu family", "family"), ("model", "model"), ("stepping", "stepping"))
        if first_cpu.get(key)
    )
    isa = [torch.backends.cpu.get_cpu_capability()]
    isa += [flag for flag in first_cpu.get("flags", "").split() if flag in ("avx512_bf16", "amx_bf16")]
    return f"{name} ({'; '.join(part for part in (identity, ', '.join(isa)) if part)})"


def git_commit() -> str | None:
    """HEAD of the archbench checkout, with "-dirty" when it has uncommitted changes; None outside git."""
    try:
        def git(*args: str) -> str:
            return subprocess.run(
                ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()

        commit = git("rev-parse", "HEAD")
        return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None
