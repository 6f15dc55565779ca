"""What writing a record whole costs: `store.append_record` (the folder's lock, the torn-line check, one write,
the fsync) with and without its fsync, on records of the committed baseline, into a folder on the disk given.
Run from the project's root:

    .venv/bin/python tests/benchmarks/append_cost.py results

Appends `--count` records (default 200) into a fresh folder under DIR, three times each way, interleaved, and
prints the median milliseconds per record. A record is appended in the parent process once its pair has ended,
outside every timed window, so this is what each pair's wall time grows by.
"""

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.results import store

BASELINE = Path(__file__).parents[2] / "results" / "baseline" / "records.jsonl"


def seconds_per_append(folder: Path, records: list[dict], count: int, fsync: bool) -> float:
    run_dir = Path(tempfile.mkdtemp(dir=folder, prefix="append-cost-"))
    real = os.fsync
    if not fsync:
        os.fsync = lambda fd: None
    try:
        started = time.perf_counter()
        for index in range(count):
            store.append_record(run_dir, records[index % len(records)])
        return (time.perf_counter() - started) / count
    finally:
        os.fsync = real
        shutil.rmtree(run_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="where the records go (the disk the runs write to)")
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    records = [json.loads(line) for line in BASELINE.read_text().splitlines()]
    size = statistics.median(len(json.dumps(r)) for r in records)
    timed = {True: [], False: []}
    for _ in range(3):
        for fsync in (True, False):
            timed[fsync].append(seconds_per_append(args.folder, records, args.count, fsync))
    with_fsync, without = (statistics.median(timed[f]) * 1e3 for f in (True, False))
    print(f"{args.folder}: records of {size:.0f} bytes (median); per record {with_fsync:.2f} ms with the fsync, "
          f"{without:.2f} ms without (medians of 3 x {args.count}, interleaved)")


if __name__ == "__main__":
    main()
