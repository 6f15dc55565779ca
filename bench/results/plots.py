"""Report figures (matplotlib, PNG): quality against cost with the Pareto front, curves, cost bars, samples.

Every function takes aggregated rows (bench.results.aggregate.Row) and writes one PNG, returning its path.
"""

from __future__ import annotations

import io
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

from .aggregate import COST_KEY, COST_LABEL, Row, finite  # noqa: E402
from ..tasks.figures import Table  # noqa: E402
from .records import named, versions_text  # noqa: E402
from .store import write_whole  # noqa: E402

DPI = 110


def task_figures(rows: list[Row], view: Table, folder: Path, stem: str) -> list[tuple[Path, str]]:
    """Every figure for one task's rows: (path, alt text) pairs, skipping figures with nothing to show."""
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for key, label, scale, name, front in (
        (COST_KEY, COST_LABEL, 1.0, "quality-vs-throughput", True),
        (view.params_key, "parameters (millions)", 1e-6, "quality-vs-params", False),
    ):
        path = folder / f"{stem}-{name}.png"
        if quality_vs_cost(rows, view, key, label, path, front, scale):
            made.append((path, f"{view.quality_label} against {label}"))
    if view.curve:
        path = folder / f"{stem}-curves.png"
        if curves(rows, view.curve, view.curve_label, view.quality_scale, path):
            made.append((path, f"{view.curve_label} per epoch"))
    path = folder / f"{stem}-costs.png"
    if cost_bars(rows, path):
        made.append((path, "peak training memory and throughput"))
    path = folder / f"{stem}-samples.png"
    if view.samples_key and sample_grids(rows, view.samples_key, path):
        made.append((path, "generated samples of each architecture"))
    return made


def quality_vs_cost(
    rows: list[Row], view: Table, cost: str, cost_label: str, path: Path, draw_front: bool, scale: float = 1.0
) -> Path | None:
    """Scatter of each row's quality against `cost` x `scale` (log when it spans a decade), labelled by name."""
    points = [(r, r.mean(cost), r.mean(view.quality)) for r in rows]
    points = [(r, x * scale, y * view.quality_scale) for r, x, y in points if finite(x) and finite(y)]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row, x, y in points:
        std = row.std(view.quality)
        ax.errorbar(
            x, y, yerr=std * view.quality_scale if finite(std) else None, fmt="o",
            color="tab:red" if row.pareto and draw_front else "tab:blue", capsize=3,
        )
        ax.annotate(row.label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if draw_front:
        # one front per record version: rows of equal versions are the comparable ones (bench.results.records)
        versions = sorted({r.record_versions for r, _, _ in points if r.pareto})
        for i, version in enumerate(versions):
            front = sorted((x, y) for r, x, y in points if r.pareto and r.record_versions == version)
            if len(front) > 1:
                label = "Pareto front (better and cheaper than the rest)"
                if len(versions) > 1:
                    label += f", record version {versions_text(version)}"
                ax.plot(*zip(*front), ("--", ":", "-.", "-")[i % 4], color="tab:red", label=label)
                ax.legend(loc="best", fontsize=8, framealpha=0.8)
    _log_if_wide(ax, [x for _, x, _ in points], "x")
    ax.set_xlabel(cost_label)
    ax.set_ylabel(view.quality_label + ("  (higher is better)" if view.higher_is_better else "  (lower is better)"))
    ax.set_title(f"{view.title}: {view.quality_name} against {cost_label.split(' (')[0]}")
    ax.grid(True, alpha=0.3, which="both")
    return _save(fig, path)


def curves(rows: list[Row], key: str, label: str, scale: float, path: Path) -> Path | None:
    """One line per architecture: `key` per epoch, the mean over its seeds."""
    lines = []
    for row in rows:
        series = [r[key] for r in row.ok if isinstance(r.get(key), list) and r[key]]
        if series:
            length = min(len(s) for s in series)
            lines.append((row.label, [statistics.fmean(s[i] for s in series) * scale for i in range(length)]))
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, values in lines:
        ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    ax.set_title(f"{label} per epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    return _save(fig, path)


def cost_bars(rows: list[Row], path: Path) -> Path | None:
    """Side-by-side bars of peak training memory and training/inference throughput per architecture."""
    named = [r for r in rows if finite(r.mean("train_throughput"))]
    if not named:
        return None
    names = [r.label for r in named]
    fig, (memory, speed) = plt.subplots(1, 2, figsize=(11, 0.45 * len(names) + 1.8))
    positions = range(len(names))
    memory.barh(positions, [r.mean("peak_memory_mb") or 0 for r in named], color="tab:purple")
    memory.set_xlabel("peak training memory (MB)")
    height = 0.4
    speed.barh([p - height / 2 for p in positions], [r.mean("train_throughput") for r in named], height, label="train")
    infer = [r.mean("infer_throughput") or 0 for r in named]
    speed.barh([p + height / 2 for p in positions], infer, height, label="inference")
    speed.set_xlabel("throughput (samples/s)")
    _log_if_wide(speed, [v for r in named for v in (r.mean("train_throughput"), r.mean("infer_throughput")) if v], "x")
    speed.legend(loc="lower right", fontsize=8)
    for ax in (memory, speed):
        ax.set_yticks(list(positions), names, fontsize=8)
        ax.invert_yaxis()
        ax.grid(True, axis="x", alpha=0.3, which="both")
    speed.set_yticklabels([])
    return _save(fig, path)


def sample_grids(rows: list[Row], key: str, path: Path) -> Path | None:
    """The sample-grid PNG of each row's first ok record (its path under `key`), side by side and titled."""
    grids = []
    for row in rows:
        found = [Path(r[key]) for r in row.ok if r.get(key) and Path(r[key]).is_file()]
        if found:
            grids.append((row.label, plt.imread(found[0])))
    if not grids:
        return None
    fig, axes = plt.subplots(1, len(grids), figsize=(3.2 * len(grids), 3.5), squeeze=False)
    for ax, (name, image) in zip(axes[0], grids):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    return _save(fig, path)


def _log_if_wide(ax, values: list[float], axis: str) -> None:
    positive = [v for v in values if finite(v) and v > 0]
    if positive and max(positive) / min(positive) >= 10:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        scale = ax.xaxis if axis == "x" else ax.yaxis
        scale.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        scale.set_minor_formatter(ticker.NullFormatter())


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return write_whole(path, image.getvalue())


def throughput_against_batch(rows: list[Row], path: Path) -> Path | None:
    """Training and inference samples/s against batch size (log-log) of a speed sweep's rows: a colour per
    architecture (and image size, where there are several), a line style per mode; None without two points on
    one line."""
    lines: dict[tuple[str, str], list[tuple[int, float, float | None]]] = {}
    several_sizes = len({row.point[0] for row in rows if row.point}) > 1
    for row in rows:
        if row.point and finite(row.mean("train_throughput")):
            size, batch = row.point
            subject = row.architecture + (f", {size} px" if several_sizes else "")
            lines.setdefault((subject, row.mode), []).append((batch, row.mean("train_throughput"), row.mean("infer_throughput")))
    if not any(len(points) > 1 for points in lines.values()):
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    subjects = list(dict.fromkeys(subject for subject, _ in lines))
    modes = list(dict.fromkeys(mode for _, mode in lines))
    colours = plt.get_cmap("tab20" if len(subjects) > 10 else "tab10")
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharex=True)
    for (subject, mode), points in lines.items():
        points.sort()
        for ax, index in zip(axes, (1, 2)):
            shown = [(p[0], p[index]) for p in points if finite(p[index])]
            ax.plot([b for b, _ in shown], [v for _, v in shown], marker="o", markersize=4,
                    color=colours(subjects.index(subject)), linestyle=styles[modes.index(mode) % len(styles)],
                    label=named(subject, mode))
    plain = ticker.FuncFormatter(lambda value, _: f"{value:g}")
    for ax, title in zip(axes, ("training step", "inference")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(plain)
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("batch size")
        ax.set_ylabel("samples/s")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)
