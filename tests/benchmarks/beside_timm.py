"""timm's own benchmark script beside `archbench speed`, on the same timm models, interleaved, in one sitting.
Run from the project's root:

    .venv/bin/python tests/benchmarks/beside_timm.py                       # resnet18, mobilenetv3_large_100,
                                                                           # efficientnet_b0; 2 rounds; batch 16, 224 px
    .venv/bin/python tests/benchmarks/beside_timm.py --rounds 3 --out results/beside-timm.md
    .venv/bin/python tests/benchmarks/beside_timm.py --dry-run            # the commands only

Every round, for every model, each arm runs once, in a fresh process of its own, one after the other (the order
of the arms alternates from one model and round to the next, so that neither side always runs first):

- `timm`: timm's benchmark.py itself (tests/benchmarks/vendor/timm_benchmark.py, vendored unmodified), both
  benchmarks (inference, then training) at the batch and image size asked, fp32 on the CPU, its warm-up and timed
  step counts (default 5 and 20, the counts of the command the comparison was asked for), without its batch-size
  retry, its figures read from the JSON results file it writes;
- `timm-steady`: the same command, with glibc's malloc set through its environment variables
  (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_MAX_) as archbench sets it with mallopt in every
  pair's process (bench.measure.memory.steady_allocator): the allocator difference alone, the script as it is;
- `archbench`: `archbench speed --arch timm:MODEL` at that one point in fp32 on the CPU, the suite `speed`
  unless --suite says otherwise; its `train_throughput` and `infer_throughput` read from the run's
  records.jsonl.

Prints, and with --out writes (markdown, and the raw figures as JSON beside it), a table per pair of arms: the
median of each figure over the rounds and the median over rounds of the paired ratio (the two arms' figures of
the same round), then every round's figures, the exact commands, the CPU (lscpu's model name, /proc/cpuinfo's
family, model and stepping), the threads and the load average before and after. What each side times, and why
the figures differ, is docs/beside-timm.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TIMM_SCRIPT = ROOT / "tests" / "benchmarks" / "vendor" / "timm_benchmark.py"
MODELS = ("resnet18", "mobilenetv3_large_100", "efficientnet_b0")
ARMS = ("timm", "timm-steady", "archbench")
# bench.measure.memory's MALLOC_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD and MALLOC_MMAP_MAX (read from there)
MMAP_THRESHOLD, TRIM_THRESHOLD, MMAP_MAX = 32 << 20, 1 << 30, 0


def allocator_environment() -> dict[str, str]:
    """glibc's environment variables that set its malloc as archbench's mallopt calls do (mallopt(3): the same
    effect, dynamic adjustment off)."""
    try:  # the values themselves, where archbench is importable (it is, run from the project's venv)
        from bench.measure.memory import MALLOC_MMAP_MAX as most, MALLOC_MMAP_THRESHOLD as mmap, MALLOC_TRIM_THRESHOLD as trim
    except ImportError:
        mmap, trim, most = MMAP_THRESHOLD, TRIM_THRESHOLD, MMAP_MAX
    return {"MALLOC_MMAP_THRESHOLD_": str(mmap), "MALLOC_TRIM_THRESHOLD_": str(trim), "MALLOC_MMAP_MAX_": str(most)}


def timm_command(model: str, args: argparse.Namespace, results: Path) -> list[str]:
    return [
        sys.executable, str(TIMM_SCRIPT.relative_to(ROOT)), "--model", model, "--bench", "both",
        "--batch-size", str(args.batch), "--img-size", str(args.image), "--device", "cpu", "--precision", "float32",
        "--num-warm-iter", str(args.warm), "--num-bench-iter", str(args.iters), "--no-retry",
        "--results-file", str(results), "--results-format", "json",
    ]


def archbench_command(model: str, args: argparse.Namespace, out: Path) -> list[str]:
    script = Path(sys.executable).parent / "archbench"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "bench"]
    return [
        *head, "speed", "--suite", args.suite, "--arch", f"timm:{model}", "--batch-sizes", str(args.batch),
        "--image-sizes", str(args.image), "--modes", "fp32", "--device", "cpu", "--out", str(out), "--quiet",
    ]


def shown(command: list[str]) -> str:
    """`command` as the report prints it: paths inside the project relative to its root, where it runs."""
    return shlex.join(os.path.relpath(part, ROOT) if part.startswith(str(ROOT) + os.sep) else part for part in command)


def run(command: list[str], env: dict[str, str] | None, timeout: float) -> tuple[float, str]:
    """Run `command` from the project's root; (its wall seconds, its output); SystemExit with its tail on failure."""
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise SystemExit(f"timed out after {timeout:g} s: {shlex.join(command)}") from None
    if done.returncode != 0:
        tail = "\n".join(done.stdout.splitlines()[-20:])
        raise SystemExit(f"exit code {done.returncode}: {shlex.join(command)}\n{tail}")
    return time.perf_counter() - started, done.stdout


ENVIRONMENTS = {"timm": None, "timm-steady": allocator_environment()}


def measure_timm(model: str, args: argparse.Namespace, env: dict[str, str] | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="beside-timm-") as folder:
        results = Path(folder) / "results.json"
        load = os.getloadavg()[0]
        wall, _ = run(timm_command(model, args, results), env, args.timeout)
        figures = json.loads(results.read_text())
    if "error" in figures:
        raise SystemExit(f"timm's benchmark.py failed on {model}: {figures['error']}")
    for kind in ("infer", "train"):  # --no-retry: no smaller batch is measured in its place, but say so if it were
        if figures.get(f"{kind}_batch_size") != args.batch or figures.get(f"{kind}_img_size") != args.image:
            raise SystemExit(f"timm's benchmark.py measured another point than asked: {figures}")
    return {"infer": figures["infer_samples_per_sec"], "train": figures["train_samples_per_sec"], "load_1min": load,
            "wall_s": wall, "raw": figures}


def measure_archbench(model: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="beside-timm-") as folder:
        load = os.getloadavg()[0]
        wall, _ = run(archbench_command(model, args, Path(folder)), None, args.timeout)
        (records,) = Path(folder).glob("*/records.jsonl")
        record = json.loads(records.read_text().splitlines()[-1])
    if record["status"] != "ok":
        raise SystemExit(f"archbench speed failed on timm:{model}: {record.get('error')}")
    keep = ("train_throughput_repeats", "infer_throughput_repeats", "train_throughput_iqr", "infer_throughput_iqr",
            "allocator", "cpu_threads", "load_1min", "other_cpu_share", "peak_memory_mb")
    return {"infer": record["infer_throughput"], "train": record["train_throughput"], "load_1min": load,
            "wall_s": wall, "raw": {key: record.get(key) for key in keep}}


def measure(arm: str, model: str, args: argparse.Namespace) -> dict:
    if arm == "archbench":
        return measure_archbench(model, args)
    return measure_timm(model, args, ENVIRONMENTS[arm])


def machine() -> dict:
    """The CPU as lscpu and /proc/cpuinfo name it, the cores, and the threads and versions the arms run with."""
    info: dict[str, object] = {"platform": platform.platform(), "cores": os.cpu_count(), "python": platform.python_version()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        info["lscpu_model_name"] = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                                         if line.startswith("Model name:")), None)
    except (OSError, subprocess.CalledProcessError):
        info["lscpu_model_name"] = None
    try:
        first = Path("/proc/cpuinfo").read_text().split("\n\n", 1)[0]
        fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first.splitlines())}
        info.update({f"cpuinfo_{key.replace(' ', '_')}": fields.get(key) for key in ("model name", "cpu family", "model", "stepping")})
    except OSError:
        pass
    versions = subprocess.run(
        [sys.executable, "-c", "import torch, timm; print(torch.__version__, timm.__version__, torch.get_num_threads())"],
        capture_output=True, text=True,
    ).stdout.split()
    if len(versions) == 3:
        info.update(torch=versions[0], timm=versions[1], torch_threads=int(versions[2]))
    info["thread_environment"] = {key: os.environ[key] for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if key in os.environ}
    return info


def ratio_row(model: str, rounds: list[dict], a: str, b: str) -> list[str]:
    """model, b infer, a infer, ratio, b train, a train, ratio: medians over rounds, the ratio a / b the median of the
    rounds' paired ratios."""
    row = [model]
    for kind in ("infer", "train"):
        mine = [r[a][kind] for r in rounds]
        theirs = [r[b][kind] for r in rounds]
        paired = [x / y for x, y in zip(mine, theirs)]
        row += [f"{statistics.median(theirs):.4g}", f"{statistics.median(mine):.4g}", f"{statistics.median(paired):.3f}"]
    return row


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def report(args: argparse.Namespace, results: dict[str, list[dict]], info: dict, commands: list[str]) -> str:
    arms = args.arms
    parts = [
        f"# timm's benchmark.py beside archbench speed\n",
        f"{info['started']} to {info['ended']}: {len(args.models)} model(s) x {args.rounds} round(s), batch {args.batch}, "
        f"{args.image} px, fp32, CPU; timm: {args.warm} warm-up and {args.iters} timed steps per benchmark; "
        f"archbench: suite `{args.suite}`. Samples/s; each figure the median over the rounds, each ratio the median of "
        "the rounds' paired ratios (the two arms of one round, run one after the other in fresh processes).\n",
    ]
    pairs = [(a, b) for a, b in (("archbench", "timm"), ("archbench", "timm-steady"), ("timm-steady", "timm"))
             if a in arms and b in arms]
    for a, b in pairs:
        header = ["model", f"{b} infer", f"{a} infer", f"{a} / {b}", f"{b} train", f"{a} train", f"{a} / {b}"]
        parts.append(f"## {a} against {b}\n\n" + table(header, [ratio_row(m, results[m], a, b) for m in args.models]) + "\n")
    rows = [
        [model, str(index + 1), arm, f"{r[arm]['infer']:.4g}", f"{r[arm]['train']:.4g}", f"{r[arm]['load_1min']:.2f}",
         f"{r[arm]['wall_s']:.0f}"]
        for model in args.models for index, r in enumerate(results[model]) for arm in r["order"]
    ]
    parts.append("## Every process, in the order they ran (per model and round)\n\n"
                 + table(["model", "round", "arm", "infer", "train", "load (1 min) at start", "wall s"], rows) + "\n")
    parts.append("## Commands\n\n```sh\n" + "\n".join(commands) + "\n```\n")
    machine_lines = [f"- {key}: {value}" for key, value in info.items() if key not in ("started", "ended")]
    parts.append("## Machine\n\n" + "\n".join(machine_lines) + "\n")
    return "\n".join(parts)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="timm model names (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every arm on every model (default: 2)")
    parser.add_argument("--batch", type=int, default=16, help="batch size (default: 16)")
    parser.add_argument("--image", type=int, default=224, help="image size in pixels (default: 224)")
    parser.add_argument("--warm", type=int, default=5, help="timm's warm-up steps per benchmark (default: 5)")
    parser.add_argument("--iters", type=int, default=20, help="timm's timed steps per benchmark, at least 5 (default: 20)")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS), help="which arms (default: all three)")
    parser.add_argument("--suite", default="speed", help="archbench's suite: its training step and timing (default: speed)")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds one process may take (default: 1200)")
    parser.add_argument("--out", type=Path, help="also write the markdown here, and the raw figures beside it (.json)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and the machine, measure nothing")
    args = parser.parse_args(argv)
    if args.iters < 5:  # benchmark.py logs every iters // 5 steps: below 5 it divides by zero
        parser.error("--iters must be at least 5 (timm's benchmark.py logs every iters // 5 steps)")
    if args.rounds < 1 or args.batch < 1 or args.image < 1 or args.warm < 0:
        parser.error("--rounds, --batch and --image must be positive, --warm not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    placeholder = Path("TMP")
    commands = [
        f"# {arm}:\n" + "".join(f"{key}={value} " for key, value in (ENVIRONMENTS.get(arm) or {}).items()) + shown(
            timm_command("MODEL", args, placeholder / "results.json") if arm.startswith("timm")
            else archbench_command("MODEL", args, placeholder)
        )
        for arm in args.arms
    ]
    info = {"started": datetime.datetime.now().isoformat(timespec="seconds"), **machine(),
            "load_average_before": os.getloadavg()}
    print("\n".join(commands), file=sys.stderr)
    print(json.dumps({k: v for k, v in info.items()}, default=str), file=sys.stderr)
    if args.dry_run:
        return 0
    results: dict[str, list[dict]] = {model: [] for model in args.models}
    for round_index in range(args.rounds):
        for model_index, model in enumerate(args.models):
            order = list(args.arms) if (round_index + model_index) % 2 == 0 else list(reversed(args.arms))
            figures: dict = {"order": order}
            for arm in order:
                figures[arm] = measure(arm, model, args)
                print(f"round {round_index + 1} {model:<24} {arm:<12} infer {figures[arm]['infer']:8.4g}/s  "
                      f"train {figures[arm]['train']:8.4g}/s  ({figures[arm]['wall_s']:.0f} s, load {figures[arm]['load_1min']:.2f})",
                      file=sys.stderr, flush=True)
            results[model].append(figures)
    info.update(ended=datetime.datetime.now().isoformat(timespec="seconds"), load_average_after=os.getloadavg())
    text = report(args, results, info, commands)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        raw = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "machine": info, "commands": commands, "results": results}
        args.out.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
