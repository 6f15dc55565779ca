"""Each (architecture, seed) in a fresh child process, the parent writing its record (the default strategy).

A child cannot take the suite down: one that raises, calls sys.exit or os._exit, dies from a signal (a
segfault, the OOM killer) or runs past the time limit becomes a `failed` record saying which, with the
last lines it wrote to stderr, and the suite goes on. A fresh process per model also keeps one model's
allocator state, cuDNN choices and memory high-water mark away from the next.

Children start from a fork server that has already imported torch and the harness (CUDA-safe: the server
never touches the GPU), so a child costs milliseconds to start rather than a fresh interpreter's seconds.
The dataset is loaded once by the parent and handed to each child in shared memory.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import multiprocessing.forkserver
import os
import select
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

import architectures

from .. import scratch
from ..data import datasets
from ..tasks import TASKS
from . import runner

STDERR_LINES = 40  # how many of a failed child's last stderr lines its record keeps (a crash's stack fits)


# Every child counts FLOPs, which imports torch._dynamo (~0.8 s): the server imports it once for all of them.
_PRELOAD = [__name__, "torch._dynamo"]
# A generator's child computes FID and KID through torchmetrics (~0.7 s to import), a classifier's never.
FID_PRELOAD = ["torchmetrics.image.fid", "torchmetrics.image.kid"]
# A folder's children build torchvision's v2 transforms (~1.5 s to import), other runs' never.
FOLDER_PRELOAD = ["torchvision.transforms.v2"]
_preload = list(_PRELOAD)


def start_method() -> str:
    """forkserver with the harness preloaded where the platform has it (Linux), else spawn; both CUDA-safe."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return "spawn"
    multiprocessing.get_context("forkserver").set_forkserver_preload(_preload)
    return "forkserver"


def start_server(names: list[str], folder: bool = False) -> None:
    """Start this process's fork server now, so that it imports while this process gets on with loading the data,
    with what the children of architectures `names` need preloaded: torchmetrics where one is a generator,
    torchvision's transforms where the data is a `folder`. Once the server runs, a later call changes nothing."""
    global _preload
    generative = any(TASKS[architectures.get_spec(name).task].generative for name in names)
    _preload = [*_PRELOAD, *(FID_PRELOAD if generative else []), *(FOLDER_PRELOAD if folder else [])]
    if start_method() == "forkserver":
        multiprocessing.forkserver.ensure_running()


class ChildProcess(runner.Strategy):
    """Run each pair in a fresh child process; `timeout` (seconds, or None) bounds each one.

    `env` adds environment variables to the child's (CUDA_VISIBLE_DEVICES pins it to a GPU), `threads` sets
    its CPU threads (default: this process's).
    """

    isolation = "process"

    def __init__(self, timeout: float | None = None, env: dict[str, str] | None = None, threads: int | None = None):
        self.timeout, self.env, self.threads = timeout, dict(env or {}), threads
        self._logs: Path | None = None

    def place(self, data: datasets.ImageData, device: torch.device) -> datasets.ImageData:
        """The data on the CPU, in shared memory: children map it instead of reading the files again (a streamed
        folder has nothing decoded to share: each child's loader reads the files)."""
        return data.share_memory_()

    def describe(self, device: torch.device) -> str:
        limit = f", at most {self.timeout:g} s each" if self.timeout else ""
        return f"{device}, each architecture in a fresh process{limit}"

    def prepare(self, names: list[str], dataset: str = "") -> None:
        start_server(names, folder=dataset.startswith(datasets.FOLDER_PREFIX))

    def execute(self, job: runner.Job) -> dict[str, Any]:
        if self._logs is None:
            self._logs = scratch.folder("children")
        handle, log = tempfile.mkstemp(suffix=".stderr", dir=self._logs)  # names may hold any character
        os.close(handle)
        context = multiprocessing.get_context(start_method())
        receive, send = context.Pipe(duplex=False)
        setting = _Setting(os.getcwd(), {**os.environ, **self.env}, job.arch_modules)
        started = time.perf_counter()
        child = context.Process(
            target=_child, args=(setting, job, send, log, time.monotonic(), os.getpid(), self.threads or torch.get_num_threads()),
            name=f"archbench {job.name}",
        )
        child.start()
        send.close()
        tail = _Tail(Path(log), show=not job.quiet)
        try:
            record, ended = _wait(child, receive, self.timeout)
        finally:
            if child.is_alive():
                child.kill()
            child.join()
            receive.close()
            tail.stop()
        if record is not None:
            return record
        return failed_record(job, ended, tail.last_lines(), time.perf_counter() - started)

    def close(self) -> None:
        if self._logs is not None:
            shutil.rmtree(self._logs, ignore_errors=True)
            self._logs = None


def failed_record(job: runner.Job, ended: str, stderr: list[str], wall_time_s: float) -> dict[str, Any]:
    """The record of a child that ended without handing one over: `ended` says how, `stderr` its last lines."""
    record = job.start_record()
    last = f" ({_gist(stderr)})" if stderr else ""
    record.update(error=f"{ended}{last}", stderr_tail=stderr, wall_time_s=wall_time_s)
    return record


def _gist(stderr: list[str]) -> str:
    """The stderr line that says most: where a crash happened (faulthandler's innermost frame), else the last."""
    fatal = next((i for i, line in enumerate(stderr) if line.startswith("Fatal Python error")), None)
    if fatal is not None:
        frame = next((line for line in stderr[fatal:] if line.startswith("File ")), "")
        return f"{stderr[fatal]}; {frame}".rstrip("; ")
    return f"last stderr: {stderr[-1]}"


def _wait(child: multiprocessing.Process, receive: Connection, timeout: float | None) -> tuple[dict | None, str]:
    """The child's record, or None and how the child ended: exited, killed by a signal, or timed out."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready = wait([receive, child.sentinel], remaining)
        if not ready:
            return None, f"timed out after {timeout:g} s"
        if receive in ready:
            try:
                return receive.recv(), ""
            except EOFError:  # the child's end closed without a record: it is exiting
                pass
        child.join()
        code = child.exitcode
        if code is not None and code < 0:
            return None, f"killed by signal {signal.Signals(-code).name}"
        return None, f"exited with code {code} before its record was written"


@dataclass(frozen=True)
class _Setting:
    """What a child takes on from its parent before anything else of its arguments is unpickled: the folder, the
    environment and the plugins (a plugin task's settings, which the job holds, are the plugin's classes)."""

    cwd: str
    environ: dict[str, str]
    plugins: tuple[str, ...]

    def __reduce__(self):
        return _settle, (self.cwd, self.environ, self.plugins)


def _settle(cwd: str, environ: dict[str, str], plugins: tuple[str, ...]) -> None:
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(environ)
    for module in plugins:
        architectures.load_module(module)


def _child(
    setting: None, job: runner.Job, send: Connection, log: str, spawned: float, archbench: int, threads: int
) -> None:
    """The child's side (`setting` took on the parent's folder, environment and plugins as it was unpickled, first
    of the arguments): the parent's threads; stderr into `log`; one record sent back;
    ended when the parent process `archbench` ends. `spawned` is when the parent started it (time.monotonic()).

    Ctrl-C reaches the whole process group; the child ignores it and the parent stops it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _end_with(archbench)
    tqdm.set_lock(threading.RLock())  # tqdm's default lock holds a semaphore that a killed child would leak
    stderr = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(stderr, 2)
    os.close(stderr)
    faulthandler.enable()  # a segfault or abort leaves the Python stack in the record's stderr_tail
    torch.set_num_threads(threads)
    record = runner.run_pair(replace(job, data=job.data.to(job.device)), spawned=spawned)
    send.send(record)
    send.close()


def _end_with(pid: int) -> None:
    """End this child when process `pid` (archbench) ends, even killed outright: no model runs on unwatched.

    The child's own parent is the fork server, which outlives archbench while a child runs, so a watcher thread
    waits on a pidfd of archbench itself (Linux 5.3 and newer; elsewhere nothing is watched).
    """
    try:
        watched = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return

    def watch() -> None:
        select.select([watched], [], [])
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


class _Tail:
    """Follows a child's stderr file: copies it to this process's stderr when `show` (else only the harness's
    warnings, lines starting `archbench: warning:`, which a quiet run must still show), keeps its end."""

    def __init__(self, path: Path, show: bool, keep: int = 16384):
        self.path, self.show, self.keep = path, show, keep
        self.text, self._offset, self._line = "", 0, ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._pump()

    def last_lines(self, count: int = STDERR_LINES) -> list[str]:
        """The last `count` non-empty lines (a progress bar's redraws count as lines)."""
        lines = [line.strip() for line in self.text.replace("\r", "\n").splitlines()]
        return [line for line in lines if line][-count:]

    def _follow(self) -> None:
        while not self._stop.wait(0.2):
            self._pump()

    def _pump(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        if not chunk:
            return
        self._offset += len(chunk)
        text = chunk.decode(errors="replace")
        self.text = (self.text + text)[-self.keep :]
        if self.show:
            sys.stderr.write(text)
            sys.stderr.flush()
            return
        *lines, rest = (self._line + text).split("\n")
        self._line = rest[-self.keep :]
        warnings = [line for line in lines if line.startswith("archbench: warning:")]
        if warnings:
            sys.stderr.write("".join(f"{line}\n" for line in warnings))
            sys.stderr.flush()
