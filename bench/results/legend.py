"""The words under a report's tables: what a task table's marks and columns mean (`legend`), and what the speed
table's rows are (`SPEED_LEGEND`); the warnings a table's rows call for (timing windows against the loop's clock,
record versions, load) are part of its legend."""

from __future__ import annotations

from .aggregate import CLOCK_AGREEMENT, COST_KEY, LOADED_SHARE, Row, finite
from .records import versions_text
from ..tasks.figures import Table

WELL_BELOW, CLOSE = 0.8, 0.8  # the `bound by` verdict's thresholds (report.bound_by)

# Rows under a generator table that place its FIDs: the same features and number of images, other image sets.
CALIBRATION_ROWS = [
    ("fid_calibration_real", "real training images"),
    ("fid_calibration_mean_image", "mean image repeated"),
    ("fid_calibration_noise", "uniform noise"),
]


SPEED_LEGEND = (
    "Cost figures alone (`archbench speed`), on random inputs, no training: the training step (zero_grad, forward, "
    "backward, optimizer step) and inference (inference_mode forward) in samples/s, batch-1 latency, the training step's "
    "peak memory, and the share of this machine's matmul peak in the same precision each reaches (`% peak`). "
    "A batch out of memory is no row of its own: the sweep steps down to the largest batch that fits below it, "
    "whose row says the batch it `stepped down from` (the one first asked for), and the line under the table counts "
    "the attempts so folded. A failure other than out of memory is a failed row."
)


def legend(view: Table, rows: list[Row]) -> str:
    """The paragraph under a task table: which rows are best, fastest and on the Pareto front, what its figures and
    columns mean, and the warnings its rows call for."""
    return " ".join([*_ranking(view, rows), *_notes(view, rows), *_warnings(rows)])


def _ranking(view: Table, rows: list[Row]) -> list[str]:
    front = [r.label for r in rows if r.pareto]
    best = max(
        (r for r in rows if finite(r.mean(view.quality))),
        key=lambda r: (r.mean(view.quality) if view.higher_is_better else -r.mean(view.quality)),
        default=None,
    )
    cheapest = max((r for r in rows if finite(r.mean(COST_KEY))), key=lambda r: r.mean(COST_KEY), default=None)
    parts = []
    if best:
        parts.append(f"Best {view.quality_name}: **{best.label}**.")
    if cheapest:
        parts.append(f"Fastest to train: **{cheapest.label}**.")
    if front:
        parts.append(
            f"★ Pareto front ({', '.join(front)}): no other architecture is both better in "
            f"{view.quality_name} and faster to train (significantly so, where both have two or more seeds: "
            "architectures within each other's noise tie and share the front)."
        )
    parts.append(
        "Figures are the mean over `seeds` seeds, ± the half-width of its 95% confidence interval (Student t) where "
        "there is more than one."
    )
    return parts


def _notes(view: Table, rows: list[Row]) -> list[str]:
    parts = []
    if any(finite(r.get(key)) for row in rows for r in row.ok for key, _ in CALIBRATION_ROWS):
        parts.append(
            "The calibration rows place every FID: on the same features and as many images, real training images "
            "score what a perfect generator approaches, the mean training image repeated what a generator that "
            "learned only the average scores, uniform noise the ceiling."
        )
    if len({row.mode for row in rows}) > 1:
        scale = " (points)" if view.quality_scale == 100 else ""
        parts.append(
            f"`train speedup` and `Δ {view.quality_name}`{scale} compare a mode with the first mode of the same "
            "architecture (training throughput ratio; difference of the means)."
        )
    if any(finite(row.mean("loader_throughput")) for row in rows):
        parts.append(
            "Where training streamed its images from a folder, `train (samples/s)` is the model's ceiling (timed "
            "steps on batches already on the device), `loop` what the training loop achieved end to end (after its "
            "first epoch where it trained two or more, its second half where one), and `loader` what the input "
            "pipeline delivers alone (its workers, transforms and copy to the device, no model). `bound by`: **model** where the loop reaches "
            f"{WELL_BELOW:.0%} of the ceiling; **input** where it stays below that and within {CLOSE:.0%} of the "
            "loader (more CPU cores or workers, or a cheaper transform, would speed it up; a faster accelerator "
            "would not); **both** where it runs well below both: with no workers the loader and the model take "
            "turns (the loop near 1 / (1/ceiling + 1/loader)), with workers on a CPU they share its cores."
        )
    return parts


def _warnings(rows: list[Row]) -> list[str]:
    parts = []
    disagree = {
        row.label: (row.mean(COST_KEY), row.mean("train_loop_throughput"))
        for row in rows
        if not finite(row.mean("loader_throughput")) and finite(row.mean(COST_KEY)) and finite(row.mean("train_loop_throughput"))
        and abs(row.mean(COST_KEY) / row.mean("train_loop_throughput") - 1) > CLOCK_AGREEMENT
    }
    if disagree:
        named = ", ".join(f"{name} ({windows:.3g} vs {loop:.3g} samples/s)" for name, (windows, loop) in disagree.items())
        parts.append(
            f"**Timing windows disagree with the training loop** by over {CLOCK_AGREEMENT:.0%} (timed training "
            f"throughput vs the loop's own samples/s after its first epoch, or in a one-epoch run's second half): "
            f"{named}."
        )
    by_version: dict[tuple[int, ...], list[str]] = {}
    for row in rows:
        by_version.setdefault(row.record_versions, []).append(row.label)
    if len(by_version) > 1:
        named = "; ".join(f"{versions_text(v)}: {', '.join(labels)}" for v, labels in sorted(by_version.items(), reverse=True))
        parts.append(
            f"**Record versions differ** ({named}): rows of different versions were measured by different harness "
            "code and are not comparable, so no speedup, Δ or summary line is taken between them and each version "
            "has its own ★ front."
        )
    loaded = {row.label: max(row.values("other_cpu_share")) for row in rows if row.values("other_cpu_share")}
    loaded = {name: share for name, share in loaded.items() if share > LOADED_SHARE}
    if loaded:
        named = ", ".join(f"{name} ({share:.0%})" for name, share in loaded.items())
        parts.append(
            f"**Measured under load** (other processes took over {LOADED_SHARE:.0%} of the CPU during the run; "
            f"their speed figures are suspect): {named}."
        )
    return parts
