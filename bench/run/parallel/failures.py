"""Which rank ended a data-parallel group, and why.

Each rank reports how it ended (a JSON file per rank: no error, or its error with a traceback). torch's elastic
agent tells the launcher only the first process it saw end badly, with its exit code or signal; a rank that
lost a peer or timed out in a collective fails too, so the reports and the agent's word are weighed together
to name the rank whose failure ended the group.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch.distributed as dist

# A rank whose collective failed waits this long before ending, so that the agent, polling every 0.1 s, sees
# first the rank that caused it (the one that died, raised or hung) and the record names that one.
COMMUNICATION_GRACE_S = 2.0


@contextmanager
def reporting(folder: Path | None) -> Iterator[None]:
    """Write how this rank ended to `folder/rank-<RANK>.json` for the launcher (when given) and let errors go on.

    An error of a collective (a peer gone, or a timeout) is held back COMMUNICATION_GRACE_S seconds first.
    """
    rank = int(os.environ.get("RANK", "0"))
    report: dict[str, Any] = {"rank": rank, "error": None}
    try:
        yield
    except BaseException as error:
        report.update(
            error=f"{type(error).__name__}: {error}",
            traceback=traceback.format_exc(),
            communication=is_communication_error(error),
            time=time.time(),
        )
        raise
    finally:
        if folder is not None:
            (folder / f"rank-{rank}.json").write_text(json.dumps(report))
        if report.get("communication"):
            time.sleep(COMMUNICATION_GRACE_S)


def is_communication_error(error: BaseException) -> bool:
    """Whether `error` is a collective failing (a peer gone, a timeout) rather than this rank's own fault."""
    return isinstance(error, dist.DistError) or "gloo/transport" in str(error)


def read_reports(folder: Path) -> dict[int, dict[str, Any]]:
    reports = (json.loads(path.read_text()) for path in folder.glob("rank-*.json"))
    return {report["rank"]: report for report in reports}


def failure_fields(failures: dict[int, Any], reports: dict[int, dict[str, Any]], world_size: int) -> dict[str, Any]:
    """Record fields naming the rank whose failure ended the group, its error, and every rank's error.

    In order: the first rank that raised an error of its own; else the rank the agent saw end first, when
    it ended outside Python (a signal, os._exit); else a rank that never reported (stuck, or killed while the
    agent stopped the group), shown with the collective error a peer got; else the first collective error.
    """
    errors = {rank: r for rank, r in reports.items() if r["error"]}
    own = sorted((r for r in errors.values() if not r["communication"]), key=lambda r: (r["time"], r["rank"]))
    died = {rank: f for rank, f in failures.items() if rank not in reports}
    silent = [rank for rank in range(world_size) if rank not in reports and rank not in failures]
    peers = sorted((r for r in errors.values() if r["communication"]), key=lambda r: (r["time"], r["rank"]))
    rank_errors = [{"rank": r["rank"], "error": r["error"]} for r in sorted(errors.values(), key=lambda r: r["rank"])]
    rank_errors += [{"rank": rank, "error": _ended(f)} for rank, f in sorted(died.items())]
    rank_errors += [{"rank": rank, "error": "ended without reporting (stuck, or killed)"} for rank in silent]
    if own:
        rank, error, trace = own[0]["rank"], own[0]["error"], own[0]["traceback"]
    elif died:
        rank, failure = min(died.items())
        error, trace = _ended(failure), None
    elif silent:
        rank, trace = silent[0], None
        error = "ended without an error of its own (stuck, or killed)" + (
            f"; rank {peers[0]['rank']}: {peers[0]['error']}" if peers else ""
        )
    elif peers:
        rank, error, trace = peers[0]["rank"], peers[0]["error"], peers[0]["traceback"]
    else:
        rank, failure = min(failures.items())
        error, trace = f"{failure.message}", None
    return {
        "status": "failed",
        "error": f"rank {rank} of {world_size}: {error}",
        "failed_rank": rank,
        "rank_errors": rank_errors,
        "traceback": trace,
    }


def _ended(failure: Any) -> str:
    """How a process that raised no Python error ended, from torch's ProcessFailure."""
    if failure.exitcode < 0:
        return f"killed by signal {failure.signal_name()}"
    return f"exited with code {failure.exitcode} and no error report (see its output)"
