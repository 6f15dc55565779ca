"""Sharding a sweep: the split, the scheduler's variables, concurrent appends, --devices, and merging the shards."""

from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path

import pytest

from bench import store
from bench.cli import main
from bench.errors import UserError


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---- concurrent appends -------------------------------------------------------------------------------

def _append_many(run_dir: str, writer: int, count: int, replace_every: int) -> None:
    for i in range(count):
        record = {
            "architecture": f"w{writer}", "task": "classify", "dataset": "synthetic", "status": "ok",
            "config_id": "x", "seed": i, "padding": "x" * (i % 7 * 1500),  # some lines longer than PIPE_BUF
        }
        replacing = (lambda r: False) if replace_every and i % replace_every == 0 else None
        store.append_record(Path(run_dir), record, replacing=replacing)


def test_concurrent_writers_leave_every_line_a_whole_record(tmp_path):
    writers, count = 4, 150
    context = multiprocessing.get_context("fork")
    processes = [
        context.Process(target=_append_many, args=(str(tmp_path), w, count, 25 if w == 0 else 0)) for w in range(writers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    lines = (tmp_path / store.RECORDS).read_text().splitlines()
    assert len(lines) == writers * count
    got = [json.loads(line) for line in lines]
    for w in range(writers):
        assert sorted(r["seed"] for r in got if r["architecture"] == f"w{w}") == list(range(count))
