"""Several pairs at once on one machine's GPUs (`archbench run --devices`): one worker per GPU, each taking
pairs from a shared queue and running them one at a time in fresh child processes (bench.run.isolation) that see
only its GPU. Records go to the one run folder as each pair ends (bench.results.store appends safely).

CPUs are refused: pairs running side by side on one CPU take each other's cores and memory bandwidth, so
every throughput and latency they record would be wrong.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from typing import Any, Callable

import torch

from . import isolation, runner
from ..errors import UserError

CPU_REFUSAL = (
    "--devices runs pairs concurrently on CUDA GPUs only: concurrent runs on a CPU corrupt each other's timings "
    "({why}); drop --devices to run the pairs one after another"
)


def parse(text: str, device: str = "auto", available: int | None = None) -> list[str]:
    """The GPUs of `--devices` (`cuda:0,cuda:1,...` or `all`) as `cuda:N` strings; a UserError on a machine
    without CUDA, for a device that is not a GPU here, for a repeated one, or with a `--device` other than cuda."""
    available = (torch.cuda.device_count() if torch.cuda.is_available() else 0) if available is None else available
    names = [part.strip() for part in text.split(",") if part.strip()]
    other = next((name for name in names if name != "all" and name.partition(":")[0] != "cuda"), None)
    if other is not None or device not in ("auto", "cuda"):
        raise UserError(CPU_REFUSAL.format(why=f"{other or device} is not a GPU"))
    if available == 0:
        raise UserError(CPU_REFUSAL.format(why=f"this machine has no CUDA device, torch {torch.__version__}"))
    if names == ["all"]:
        return [f"cuda:{i}" for i in range(available)]
    valid = f"cuda:0 to cuda:{available - 1}, or all"
    for name in names:
        index = name.partition(":")[2]
        if not index.isdigit() or int(index) >= available:
            raise UserError(f"--devices {name}: not a GPU of this machine (valid: {valid})")
    if not names or len(set(names)) != len(names):
        raise UserError(f"--devices {text!r}: expected distinct GPUs separated by commas ({valid})")
    return names


def visible_device(name: str, environ: dict[str, str] | None = None) -> str:
    """The CUDA_VISIBLE_DEVICES entry that shows a child only GPU `name` (cuda:N of this process's view)."""
    environ = os.environ if environ is None else environ
    index = int(name.partition(":")[2])
    visible = [part for part in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if part.strip()]
    return visible[index].strip() if index < len(visible) else str(index)


class Devices(isolation.ChildProcess):
    """Run the pairs concurrently, one at a time on each of `devices`, each in a fresh child process.

    `worker(device)` makes the strategy that runs one device's pairs (default: a ChildProcess pinned to it).
    """

    def __init__(
        self, devices: list[str], timeout: float | None = None,
        worker: Callable[[str], runner.Strategy] | None = None,
    ):
        super().__init__(timeout)
        self.devices = devices
        threads = max(1, (os.cpu_count() or 1) // len(devices))
        self.worker = worker or (
            lambda device: isolation.ChildProcess(timeout, {"CUDA_VISIBLE_DEVICES": visible_device(device)}, threads)
        )

    def device(self, config) -> torch.device:
        return torch.device("cuda")  # each child sees its one GPU as cuda

    def describe(self, device: torch.device) -> str:
        return f"{len(self.devices)} GPUs at once ({', '.join(self.devices)}), each pair in a fresh process"

    def info(self) -> dict[str, Any]:
        return {"isolation": self.isolation, "devices": self.devices}

    def run_all(self, jobs: list[runner.Job], done: Callable[[runner.Job, dict[str, Any]], None]) -> None:
        """Every job on the first free device; `done` is called under a lock, so one record is written at a time.
        A worker's error stops the others taking new jobs and is raised here once they have ended."""
        queue, lock, errors = deque(jobs), threading.Lock(), []
        stop = threading.Event()

        def work(device: str) -> None:
            strategy = self.worker(device)
            try:
                while not stop.is_set():
                    with lock:
                        if not queue:
                            return
                        job = queue.popleft()
                    record = strategy.execute_timed(job)
                    with lock:
                        done(job, record)
            except BaseException as error:
                errors.append(error)
                stop.set()
            finally:
                strategy.close()

        threads = [threading.Thread(target=work, args=(d,), name=f"archbench {d}", daemon=True) for d in self.devices]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.2)  # in short waits, so that Ctrl-C and SIGTERM reach this thread
        except BaseException:
            stop.set()  # running children end with this process (bench.run.isolation)
            raise
        if errors:
            raise errors[0]
