"""The folder loader's own throughput against its workers and image size, interleaved in one process: what the
input pipeline delivers with no model (bench.measure.throughput.loader_throughput, as a run records it). Run from the
project's root on an image folder, e.g. the one examples/make_image_folder.py writes:

    .venv/bin/python examples/make_image_folder.py /tmp/example-folder
    .venv/bin/python tests/benchmarks/folder_loader.py /tmp/example-folder 64,128 0,1,2

Per round, every (image size, workers) in turn: a fresh training source (RandomResizedCrop + flip, the
workers' start-up left out) timed for SECONDS. Prints the median samples/s over the rounds and its range.
"""

import statistics
import sys

from bench.data.folder import FolderSettings
from bench.data.stream import open_folder
from bench.measure.throughput import loader_throughput
from bench.measure.modes import Mode

ROUNDS, SECONDS, BATCH = 3, 4.0, 32


def main(path: str, sizes: str, workers: str) -> None:
    points = [(int(s), int(w)) for s in sizes.split(",") for w in workers.split(",")]
    rates: dict[tuple[int, int], list[float]] = {p: [] for p in points}
    for round_ in range(ROUNDS):
        for size, count in points:
            data = open_folder(path, FolderSettings(image_size=size, num_workers=count, data_path="stream"))
            source = data.splits(Mode(), seed=round_).train
            rates[(size, count)].append(loader_throughput(source, BATCH, SECONDS, seed=round_)["loader_throughput"])
            del source
    print(f"{'px':>4} {'workers':>7} {'samples/s (median)':>19} {'range':>17}")
    for (size, count), values in rates.items():
        print(f"{size:>4} {count:>7} {statistics.median(values):>19.0f} {min(values):>8.0f}-{max(values):<8.0f}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
