"""Running the command line in-process, and reading the records a run wrote."""

from __future__ import annotations

import json
from pathlib import Path

from bench.results.records import RECORDS
from bench.cli import main


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """`archbench ARGV...` in this process: its exit code, stdout and stderr (argv items may be paths)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_records(out_dir: Path) -> list[dict]:
    """The records of the one run folder under `out_dir`, in the order they were written."""
    (path,) = Path(out_dir).glob(f"*/{RECORDS}")
    return [json.loads(line) for line in path.read_text().splitlines()]
