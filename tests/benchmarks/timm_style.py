"""`archbench speed`'s figures against a bare loop timed in the manner of timm's benchmark.py (not that script,
which tests/benchmarks/beside_timm.py runs itself): 10 warm-up steps, then 40 timed steps under one clock (read
after a device synchronization), one fixed batch of random inputs; a training step is zero_grad, forward,
cross-entropy, backward and archbench's SGD step, inference an inference_mode forward.
Run from the project's root:

    .venv/bin/python tests/benchmarks/timm_style.py [--models torchvision:resnet18 ...] [--batch 32] [--size 128]
                                                   [--rounds 3] [--device cpu] [--mode fp32]

For each model, `--rounds` rounds, each archbench's point first (`archbench speed --isolation none`, in this
process, its own copy of the model), then the bare loop's (a fresh model built the same way); prints every
round's ratio archbench / bare for training and inference throughput, and their medians. The two agree when
archbench's harness (its timing windows, the batches a step draws, the copies it measures) costs nothing the
bare loop does not pay. Both run in this one process, under the glibc allocator settings archbench makes
(`memory.steady_allocator`: without them efficientnet_b0's inference here ran 157 samples/s, with them 230).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import architectures
from bench.cli import main as archbench
from bench.measure.modes import parse
from bench.measure.timing import synchronize

WARMUP, STEPS = 10, 40  # timm's benchmark.py defaults (--num-warm-iter, --num-bench-iter)


def archbench_figures(name: str, batch: int, size: int, device: str, mode: str, out: Path) -> dict:
    argv = ["speed", "--arch", name, "--batch-sizes", str(batch), "--image-sizes", str(size), "--modes", mode,
            "--device", device, "--isolation", "none", "--quiet", "--out", str(out)]
    with contextlib.redirect_stdout(io.StringIO()):  # its tables; the figures are read from its record
        code = archbench(argv)
    if code != 0:
        raise SystemExit(f"archbench speed failed: {' '.join(argv)}")
    (records,) = out.glob("*/records.jsonl")
    record = json.loads(records.read_text().splitlines()[-1])
    if record["status"] != "ok":
        raise SystemExit(f"{name}: {record['error']}")
    return {"train": record["train_throughput"], "infer": record["infer_throughput"]}


def bare_figures(name: str, batch: int, size: int, device: str, mode: str) -> dict:
    """timm's benchmark.py loops, each on a fresh model built as archbench builds it (untrained, 1000 classes), as
    timm's inference and training runners each build their own."""
    device = torch.device(device)
    resolved = parse(mode).resolved(device)
    x = resolved.inputs(torch.randn(batch, 3, size, size, device=device))
    y = torch.randint(0, 1000, (batch,), device=device)

    def fresh():
        return resolved.prepare(architectures.create(name, (3, size, size), 1000).to(device))

    def train_steps():
        model = fresh().train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

        def step():
            optimizer.zero_grad(set_to_none=True)
            with resolved.autocast(device):
                loss = F.cross_entropy(model(x).float(), y)
            loss.backward()
            optimizer.step()

        return step

    def infer_steps():
        model = fresh().eval()

        def step():
            with torch.inference_mode(), resolved.autocast(device):
                model(x)

        return step

    figures = {}
    for kind, make in (("train", train_steps), ("infer", infer_steps)):
        step = make()
        for _ in range(WARMUP):
            step()
        synchronize(device)
        started = time.perf_counter()
        for _ in range(STEPS):
            step()
        synchronize(device)
        figures[kind] = STEPS * batch / (time.perf_counter() - started)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["torchvision:resnet18", "torchvision:mobilenet_v3_large", "torchvision:efficientnet_b0"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mode", default="fp32")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, {args.size} px, "
          f"{args.mode}, {args.device}; ratio = archbench speed / timm-style loop", flush=True)
    with tempfile.TemporaryDirectory(prefix="timm-style-") as scratch:
        for name in args.models:
            ratios: dict[str, list[float]] = {"train": [], "infer": []}
            for round_ in range(args.rounds):
                out = Path(scratch) / f"{len(list(Path(scratch).iterdir()))}"
                ours = archbench_figures(name, args.batch, args.size, args.device, args.mode, out)
                bare = bare_figures(name, args.batch, args.size, args.device, args.mode)
                for kind in ratios:
                    ratios[kind].append(ours[kind] / bare[kind])
                print(f"  {name} round {round_ + 1}: train {ours['train']:.4g} vs {bare['train']:.4g} samples/s, "
                      f"infer {ours['infer']:.4g} vs {bare['infer']:.4g}", flush=True)
            print(f"{name}: median ratio train {statistics.median(ratios['train']):.3f} "
                  f"(rounds {', '.join(f'{r:.3f}' for r in ratios['train'])}), infer "
                  f"{statistics.median(ratios['infer']):.3f} (rounds {', '.join(f'{r:.3f}' for r in ratios['infer'])})",
                  flush=True)


if __name__ == "__main__":
    main()
