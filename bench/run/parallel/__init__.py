"""Data-parallel runs: `archbench run --nproc N` (launcher.py) and the ranks of a torchrun group (rank.py).

Only this module is imported by a run that is not data-parallel: it reads the flags and the environment,
without importing torch.distributed's launcher or process-group machinery.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ...errors import UserError

DEFAULT_TIMEOUT = 300.0


@dataclass(frozen=True, kw_only=True)
class Options:
    """How a data-parallel run is launched: the --nproc, --backend, --scaling and --dist-timeout flags.

    `nproc` is None under torchrun, which has already started the processes.
    """

    nproc: int | None = None
    backend: str = "auto"
    scaling: bool = False
    timeout: float = DEFAULT_TIMEOUT


def under_torchrun() -> bool:
    """Whether this process is a rank that torchrun (torch's elastic agent) started."""
    return os.environ.get("TORCHELASTIC_RUN_ID") is not None


def from_flags(nproc: int | None, backend: str | None, scaling: bool, timeout: float | None) -> Options | None:
    """The data-parallel options of a run, or None for an ordinary single-process run.

    Raises UserError for --nproc under torchrun, and for the other flags without --nproc or torchrun.
    """
    if nproc is not None and under_torchrun():
        raise UserError("--nproc starts torchrun itself; under torchrun leave it out")
    if nproc is None and not under_torchrun():
        flags = (("--backend", backend), ("--scaling", scaling), ("--dist-timeout", timeout))
        given = [flag for flag, value in flags if value]
        if given:
            raise UserError(f"{given[0]} applies to data-parallel runs: add --nproc N, or launch with torchrun")
        return None
    return Options(nproc=nproc, backend=backend or "auto", scaling=bool(scaling), timeout=timeout or DEFAULT_TIMEOUT)


def strategy(options: Options):
    """The runner strategy of a data-parallel run: a group launched per pair, or this rank of a torchrun group."""
    from . import launcher

    return launcher.GroupLaunch(options) if options.nproc is not None else launcher.RankOfGroup(options)
