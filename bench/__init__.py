"""HOW archbench compares: the harness. It reaches models only through the `architectures` registry."""

import os as _os
import time as _time

__version__ = "0.1.0"

IMPORTED_AT = _time.monotonic()
"""time.monotonic() when this process first imported `bench` (a forked child: when it forked); the start of the
clock that `bench.measure.phases.process_age_s` trusts."""


def _forked() -> None:
    global IMPORTED_AT
    IMPORTED_AT = _time.monotonic()


if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(after_in_child=_forked)
