"""Shared fixtures: an isolated registry, a session-wide FID cache, seeded tests and tiny suite files. Helpers
that tests import live in tests/support."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Under pytest-xdist (README: `pytest -n auto`) each worker has a core to itself: left at the default, every
# worker's torch starts a thread per core and they spin against each other (2 workers on 2 cores: 365 s against
# 220 s serial; one thread each: 138 s). Set before torch is imported, so the runs the tests start inherit it.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

from architectures import registry
from support.settings import TINY_SUITE


@pytest.fixture(autouse=True)
def isolated_registry():
    """Each test sees the built-in registry; whatever it registers (also through --arch-module files) is gone afterwards."""
    saved, loaded = dict(registry._REGISTRY), registry._entry_points_loaded
    yield
    for name in [name for name in sys.modules if name.startswith("archbench_user_")]:
        del sys.modules[name]
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)
    registry._entry_points_loaded = loaded


@pytest.fixture(autouse=True)
def quick_peak(monkeypatch):
    """Every run times its matmul peak (0.25 s a mode); here with the shortest repeats: what tests check of it is
    that it is measured and used, which tests/test_utilization.py does at full length."""
    from bench.measure import utilization
    from bench.measure.timing import MeasureSettings

    monkeypatch.setattr(utilization, "PEAK_TIMING", MeasureSettings(repeats=5, warmup_time=0.0, min_repeat_time=0.0, max_time=0.0))


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def fid_cache(tmp_path_factory):
    """FID reference classifiers of the whole session go to one temporary folder, never to ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        path = tmp_path_factory.mktemp("fid-cache")
        patch.setenv("ARCHBENCH_FID_CACHE", str(path))
        yield path


@pytest.fixture
def tiny_suite(tmp_path):
    """Write a tiny suite file for the given architectures; returns its path."""

    def write(*architectures: str, extra: str = "") -> Path:
        path = tmp_path / "tiny.toml"
        names = "[" + ", ".join(f'"{a}"' for a in architectures) + "]"
        path.write_text(TINY_SUITE.format(architectures=names) + extra)
        return path

    return write
