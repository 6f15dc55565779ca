"""Shared fixtures: an isolated registry, a session-wide FID cache, seeded tests and tiny suite files. Helpers
that tests import live in tests/support."""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

# Under pytest-xdist (README: `pytest -n auto`) each worker has a core to itself: left at the default, every
# worker's torch starts a thread per core and they spin against each other (2 workers on 2 cores: 365 s against
# 220 s serial; one thread each: 138 s). Set before torch is imported, so the runs the tests start inherit it.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

from architectures import registry
from bench.tasks import TASKS
from support.settings import TINY_SUITE


def pytest_configure(config):
    if config.getoption("numprocesses", None) and not hasattr(config, "workerinput"):  # xdist's controller
        config.test_locks = tempfile.mkdtemp(prefix="archbench-test-locks-")


def pytest_unconfigure(config):
    if hasattr(config, "test_locks"):
        shutil.rmtree(config.test_locks, ignore_errors=True)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    node.workerinput["test_locks"] = node.config.test_locks


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Under xdist, a test marked `alone` (it reads the whole machine's load) runs with no other test beside it,
    its fixtures' set-up included: every test holds a shared lock on one file of the run while it runs, an `alone`
    one an exclusive lock; a second file, which an `alone` test holds while it waits, keeps new tests from starting."""
    folder = getattr(item.config, "workerinput", {}).get("test_locks")
    alone = item.get_closest_marker("alone") is not None
    with ExitStack() as held:
        if folder is not None:
            waiting, running = (held.enter_context(open(Path(folder) / name, "a")) for name in ("waiting", "running"))
            fcntl.flock(waiting, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
            if not alone:
                fcntl.flock(waiting, fcntl.LOCK_UN)
            fcntl.flock(running, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        yield


@pytest.fixture(autouse=True)
def isolated_registry():
    """Each test sees the built-in registry and task table; whatever it registers (also through --arch-module files)
    is gone afterwards."""
    saved, loaded, tasks = dict(registry._REGISTRY), registry._entry_points_loaded, dict(TASKS)
    yield
    TASKS.clear()
    TASKS.update(tasks)
    for name in [name for name in sys.modules if name.startswith("archbench_user_")]:
        del sys.modules[name]
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)
    registry._entry_points_loaded = loaded


@pytest.fixture(autouse=True)
def quick_peak(monkeypatch):
    """Every pair times its matmul peak after its run (a fraction of a second); here with a small matmul and the
    shortest warm-up and repeats, in this process: what tests check of it is that it is measured and used, which
    tests/test_utilization.py does at full length."""
    from bench.measure import utilization
    from bench.measure.timing import MeasureSettings

    monkeypatch.setattr(utilization, "PEAK_TIMING", MeasureSettings(repeats=5, warmup_time=0.0, min_repeat_time=0.0, max_time=0.0))
    monkeypatch.setattr(utilization, "PLATEAU_CALL_S", 0.001)
    monkeypatch.setattr(utilization, "WARMUP_MAX_S", 0.0)


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
