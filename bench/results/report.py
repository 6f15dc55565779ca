"""Rendering of aggregated records: per-task tables, REPORT.md or a self-contained HTML page, CSV, legends.

Reports read records only, never models. The rows (a configuration's records over seeds, mean ± std,
the Pareto front) come from `bench.results.aggregate`; this module decides what each table shows and writes it.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from . import plots
from .aggregate import (
    COST_KEY, SPEED, Row, aggregate, finite, fold_step_downs, reference_rows, subject,
    table_of, task_groups,
)
from .. import tasks
from ..tasks.figures import INFER, LATENCY_P50, PEAK_MEMORY, SIG3, TRAIN, TRAIN_UTILIZATION, Column, Number, Table
from .legend import CALIBRATION_ROWS, CLOSE, SPEED_LEGEND, WELL_BELOW, legend
from .records import named, versions, versions_text
from .store import write_whole

# What a speedup, Δ or summary line between rows of different record versions says instead of a figure.
NOT_COMPARABLE = "not comparable"

# The speed sweep's table, whatever its records' task: a task's own table is its entry's (bench.tasks).
SPEED_TABLE = (
    Column("image_size", "px", Number(decimals=0)),
    Column("batch_size", "batch", Number(decimals=0)),
    Column("params", "params (M)", Number(1e-6, decimals=2)),
    Column("flops_per_sample", "GFLOPs/sample", Number(1e-9, decimals=2)),
    TRAIN, TRAIN_UTILIZATION, INFER,
    Column("infer_utilization", "infer % peak", Number(100, decimals=1)),
    LATENCY_P50, PEAK_MEMORY,
)


# Shown when a table holds a compiled record: torch.compile's time, kept out of every other time and throughput.
COMPILE_COLUMN = Column("compile_time_s", "compile (s)", SIG3)

# Shown when a table holds a record trained to a time or FLOPs budget: what the budget bought.
BUDGET_COLUMNS = [
    Column("steps_trained", "steps trained", Number(decimals=0)),
    Column("epochs_trained", "epochs trained", Number(decimals=2)),
]

# Shown after a task's columns when its table holds a data-parallel record (world size above 1).
DISTRIBUTED_COLUMNS = [
    Column("world_size", "ranks", Number(decimals=0)),
    Column("per_rank_throughput", "per rank (samples/s)", SIG3),
    Column("scaling_efficiency", "scaling eff (%)", Number(100, decimals=0)),
    Column("allreduce_wait_share", "all-reduce wait (%)", Number(100, decimals=0)),
]


# Shown when a table holds a record whose training data streamed from a folder: what bounded its training.
INPUT_COLUMNS = [
    Column("end_to_end_throughput", "loop (samples/s)", SIG3),
    Column("loader_throughput", "loader (samples/s)", SIG3),
]


def end_to_end(record: dict[str, Any]) -> float | None:
    """The samples/s a record's training loop achieved end to end: after its first epoch where it trained two or
    more, in its second half where it trained one (`train_loop_throughput`), else over all of its training."""
    if finite(record.get("train_loop_throughput")):
        return record["train_loop_throughput"]
    samples, seconds = (record.get("epochs_trained") or 0) * record.get("train_samples", 0), record.get("train_time_s")
    return samples / seconds if samples and finite(seconds) and seconds > 0 else None


def bound_by(loop: float | None, ceiling: float | None, loader: float | None) -> str:
    """What bounded training, from the loop's samples/s, the model's ceiling (timed steps on batches already on
    the device) and the loader's alone: `model` where the loop reaches at least WELL_BELOW of the ceiling;
    `input` where it runs well below the ceiling and within CLOSE of the loader; `both` (neither alone: the
    loader's workers and the model contend for the same cores, say) where it runs well below both; "" without
    the three figures."""
    if not (finite(loop) and finite(ceiling) and finite(loader)):
        return ""
    if loop >= WELL_BELOW * ceiling:
        return "model"
    return "input" if loop >= CLOSE * loader else "both"


def _input_cells(row: Row) -> list[str]:
    loops = [v for v in (end_to_end(r) for r in row.ok) if finite(v)]
    loop = sum(loops) / len(loops) if loops else None
    return [INPUT_COLUMNS[0].number(loop), INPUT_COLUMNS[1].number(row.mean("loader_throughput")),
            bound_by(loop, row.mean(COST_KEY), row.mean("loader_throughput"))]


def _mode_shown(row: Row) -> str:
    """The row's mode as written, with the precision it resolved to where it was `auto`."""
    precision = row.records[0].get("precision")
    return f"{row.mode} (={precision})" if row.mode.startswith("auto") and precision else row.mode


def _speedup(row: Row, reference: Row) -> str:
    ratio = _ratio(row.mean(COST_KEY), reference.mean(COST_KEY))
    return "" if ratio is None else f"×{ratio:.2f}"


def _quality_change(row: Row, reference: Row, view: Table | None) -> str:
    if view is None:
        return ""
    new, old = row.mean(view.quality), reference.mean(view.quality)
    if not (finite(new) and finite(old)):
        return ""
    return f"{(new - old) * view.quality_scale:+.{1 if view.quality_scale == 100 else 2}f}"


def _ratio(new: Any, old: Any) -> float | None:
    return new / old if finite(new) and finite(old) and old > 0 else None


def task_table(rows: list[Row], fmt: str = "github") -> str:
    """The table of one task's rows: ★ marks the Pareto front, mean ± std over `seeds`."""
    headers, body = table_cells(rows)
    return tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True)


def table_cells(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """The header and the body cells (strings) of one table's rows, as `task_table` shows them."""
    name = table_of(rows[0]) if rows else None
    view = tasks.tables().get(name)
    columns = list(SPEED_TABLE if name == SPEED else view.columns if view else [])
    if any((r.get("world_size") or 1) > 1 for row in rows for r in row.records):
        columns = columns + DISTRIBUTED_COLUMNS
    if any(finite(r.get("compile_time_s")) for row in rows for r in row.records):
        columns = columns + [COMPILE_COLUMN]
    if any(r.get("budget_s") is not None or r.get("budget_flops") is not None for row in rows for r in row.records):
        columns = columns + BUDGET_COLUMNS
    show_task = bool(view and view.show_task)
    show_modes = len({row.mode for row in rows}) > 1
    references = reference_rows(rows)
    headers = ["architecture", *(["mode"] if show_modes else []), *(["task"] if show_task else []), "seeds", "status"]
    if show_modes:
        headers += ["train speedup", *([f"Δ {view.quality_name}"] if view else [])]
    headers += [c.header for c in columns]
    streamed = any(finite(r.get("loader_throughput")) for row in rows for r in row.records)
    if streamed:
        headers += [c.header for c in INPUT_COLUMNS] + ["bound by"]
    body = []
    for row in rows:
        name = f"★ {row.architecture}" if row.pareto else row.architecture
        cells = [name, *([_mode_shown(row)] if show_modes else []), *([row.task] if show_task else []), str(row.seeds), _status(row)]
        if show_modes:
            reference = references[subject(row)]
            if reference is row:
                cells += ["", ""]
            elif not row.comparable(reference):
                cells += [NOT_COMPARABLE, NOT_COMPARABLE]
            else:
                cells += [_speedup(row, reference), _quality_change(row, reference, view)]
            cells = cells if view else cells[:-1]
        body.append([
            *cells, *(c.number(row.mean(c.key), _half_width(row, c.key)) for c in columns),
            *(_input_cells(row) if streamed else []),
        ])
    body += _calibration_cells(rows, headers, columns)
    return headers, body


def _status(row: Row) -> str:
    """The row's status, and where it is a step-down's row, the batch the sweep stepped down from (and to, where
    no batch fitted)."""
    if row.stepped_down_from is None:
        return row.status()
    to = "" if row.ok else f" to {row.point[1]}"
    return f"{row.status()}; stepped down from {row.stepped_down_from}{to}"


def folded_line(folded: list[Row]) -> str:
    """Under a speed table, how many out-of-memory attempts its step-down rows stand for, and which; "" for none."""
    if not folded:
        return ""
    batches: dict[tuple[str, int], list[str]] = {}
    for row in folded:
        batches.setdefault((named(row.architecture, row.mode), row.point[0]), []).append(str(row.point[1]))
    which = "; ".join(f"{name} at {size} px, batch {', '.join(b)}" for (name, size), b in batches.items())
    many = len(folded) > 1
    return (f"{len(folded)} out-of-memory attempt{'s' if many else ''} folded into {'their' if many else 'its'} "
            f"step-down row{'s' if many else ''} (the records keep {'them' if many else 'it'}): {which}.")


def _calibration_cells(rows: list[Row], headers: list[str], columns: list[Column]) -> list[list[str]]:
    """Under a generator table, one row per calibration image set (`CALIBRATION_ROWS`) that its records measured:
    the mean of their figures in the FID column, how many records it is over in `seeds`, the rest empty."""
    fid = next((i for i, c in enumerate(columns) if c.key == "fid"), None)
    if fid is None:
        return []
    body = []
    for key, label in CALIBRATION_ROWS:
        values = [r[key] for row in rows for r in row.ok if finite(r.get(key))]
        if values:
            cells = [f"({label})"] + [""] * (len(headers) - 1)
            cells[headers.index("seeds")], cells[headers.index("status")] = str(len(values)), "calibration"
            cells[len(headers) - len(columns) + fid] = columns[fid].number(sum(values) / len(values))
            body.append(cells)
    return body


def _half_width(row: Row, key: str) -> float | None:
    interval = row.interval(key)
    return interval.half_width if interval else None


def summary_lines(rows: list[Row], view: Table, reference: str | None = None) -> list[str]:
    """In words, how each row's quality differs from the reference architecture's (`reference`; the table's first
    row's where it names none or one not in this table), with the 95% interval of the difference, paired by seed
    where the seeds match, and whether it is significant. A row is compared with the reference in the row's own
    mode where the reference ran in it, else in the reference's first mode: architectures are compared within a
    mode, and modes by the table's speedup and Δ columns (and here, for the reference's own other modes). A row of
    another record version than its reference's is said to be not comparable, with no figure."""
    scored = [row for row in rows if finite(row.mean(view.quality))]
    first = next((row for row in scored if row.architecture == reference), scored[0] if scored else None)
    if first is None or len(scored) < 2:
        return []
    same_mode = {row.mode: row for row in reversed(scored) if row.architecture == first.architecture}
    if all(row.seeds < 2 for row in scored):
        return [f"One seed per architecture: no confidence intervals, no differences judged against {first.label} "
                "(run several seeds, e.g. --seed 0 1 2)."]
    scale = view.quality_scale
    unit = " points" if scale == 100 else ""

    def number(value: float) -> str:
        return f"{value * scale:.1f}" if scale == 100 else f"{value:.3g}"

    lines = []
    for row in scored:
        base = same_mode.get(row.mode, first) if row.architecture != first.architecture else first
        if row is base:
            continue
        if not row.comparable(base):
            lines.append(f"{row.label}: {NOT_COMPARABLE} with {base.label} (record version "
                         f"{versions_text(row.record_versions)} against {versions_text(base.record_versions)}).")
            continue
        found = row.difference(base, view.quality)
        delta = row.mean(view.quality) - base.mean(view.quality)
        if found is None:
            lines.append(f"{row.label}: {'+' if delta >= 0 else ''}{number(delta)}{unit} against {base.label} in "
                         f"{view.quality_name} (too few seeds for an interval: {row.seeds} and {base.seeds}).")
            continue
        how = "paired by seed" if found.paired else "unpaired"
        interval = f"95% CI {number(found.low)} to {number(found.high)}, {how}, {found.n} {'seeds' if found.paired else 'runs'}"
        if found.significant:
            side = "above" if found.estimate > 0 else "below"
            lines.append(f"{row.label} is {number(abs(found.estimate))}{unit} {side} {base.label} in {view.quality_name} ({interval}).")
        else:
            lines.append(f"{row.label}: no significant difference from {base.label} in {view.quality_name} "
                         f"({number(found.estimate)}{unit}, {interval}).")
    return lines


def tables(records: list[dict[str, Any]], reference: str | None = None) -> str:
    """Every task's table under a heading naming the task and dataset, and its summary lines, for the terminal."""
    parts, known = [], tasks.tables()
    for (table, dataset), rows in task_groups(aggregate(records)).items():
        title = _title(table)
        rows, folded = fold_step_downs(rows) if table == SPEED else (rows, [])
        summary = summary_lines(rows, known[table], reference) if table in known else []
        lines = [line for line in (folded_line(folded), *summary) if line]
        parts.append(f"### {title} on {dataset}\n\n{task_table(rows)}" + "".join(f"\n{line}" for line in lines))
    return "\n\n".join(parts)


def frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Every record as one flat row; list values (curves, repeats) become JSON strings."""
    flat = [{k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()} for r in records]
    return pd.DataFrame(flat)


def write_csv(records: list[dict[str, Any]], path: Path) -> Path:
    return write_whole(path, frame(records).to_csv(index=False))


def write_report(
    records: list[dict[str, Any]], folder: Path, html_page: bool = False, reference: str | None = None
) -> Path:
    """Write REPORT.md (or REPORT.html, self-contained), its plots under plots/, and records.csv into `folder`;
    under each table, how every row differs from `reference` (see `summary_lines`)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = aggregate(records)
    blocks: list[tuple] = [("h1", "archbench report"), *_environment_blocks(records)]
    for (table, dataset), group in task_groups(rows).items():
        view = tasks.tables().get(table)
        blocks.append(("h2", f"{_title(table)} on {dataset}"))
        group, folded = fold_step_downs(group) if table == SPEED else (group, [])
        headers, body = table_cells(group)
        blocks.append(("table", headers, body))
        if folded:
            blocks.append(("p", folded_line(folded)))
        if table == SPEED:
            blocks.append(("p", SPEED_LEGEND))
            path = folder / "plots" / f"speed-{dataset.replace(' ', '-')}.png"
            if plots.throughput_against_batch(group, path):
                blocks.append(("img", path, "samples/s against batch size, per architecture, mode and image size"))
        if not view:
            continue
        blocks.append(("p", legend(view, group)))
        summary = summary_lines(group, view, reference)
        if summary:
            blocks.append(("p", " ".join(summary)))
        stem = re.sub(r"[^\w.+-]", "-", f"{table}-{dataset}")  # a file name on every system: folder:NAME has a colon
        for path, alt in plots.task_figures(group, view, folder / "plots", stem):
            blocks.append(("img", path, alt))
    write_csv(records, folder / "records.csv")
    blocks.append(("p", "Every record, flattened: [records.csv](records.csv)."))
    if html_page:
        return write_whole(folder / "REPORT.html", _render_html(blocks))
    return write_whole(folder / "REPORT.md", _render_markdown(blocks, folder))


def _title(table: str) -> str:
    known = tasks.tables()
    if table in known or table == SPEED:
        return known[table].title if table in known else "Speed"
    return f"{table} (no task entry describes it: give its plugin with --arch-module)"


def _environment_blocks(records: list[dict[str, Any]]) -> list[tuple]:
    runs: dict[str, dict[str, Any]] = {}
    for record in records:
        runs.setdefault(str(record.get("run_id")), record)
    headers = ["run", "suite", "record version", "device", "device name", "CPU threads", "torch", "git commit", "records"]
    body = []
    for run_id, first in runs.items():
        own = [r for r in records if str(r.get("run_id")) == run_id]
        body.append(
            [
                run_id,
                str(first.get("suite", "")),
                versions_text(versions(own)),
                str(first.get("device", "")),
                str(first.get("device_name", "")),
                str(first.get("cpu_threads", "")),
                str(first.get("torch", "")),
                str(first.get("git_commit") or "")[:12],
                str(len(own)),
            ]
        )
    commands = [("code", f"{run_id}: {first.get('command', '')}") for run_id, first in runs.items()]
    return [("table", headers, body), ("p", "Produced by:"), *commands]


def _render_markdown(blocks: list[tuple], folder: Path) -> str:
    out = []
    for block in blocks:
        kind = block[0]
        if kind == "h1":
            out.append(f"# {block[1]}")
        elif kind == "h2":
            out.append(f"## {block[1]}")
        elif kind == "p":
            out.append(block[1])
        elif kind == "code":
            out.append(f"```\n{block[1]}\n```")
        elif kind == "table":
            out.append(tabulate(block[2], headers=block[1], tablefmt="github", disable_numparse=True))
        elif kind == "img":
            out.append(f"![{block[2]}]({Path(block[1]).relative_to(folder).as_posix()})")
    return "\n\n".join(out) + "\n"


def _render_html(blocks: list[tuple]) -> str:
    out = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2"):
            out.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "p":
            text = html.escape(block[1]).replace("**", "")
            out.append(f"<p>{text}</p>")
        elif kind == "code":
            out.append(f"<pre>{html.escape(block[1])}</pre>")
        elif kind == "table":
            out.append(tabulate(block[2], headers=block[1], tablefmt="html", disable_numparse=True))
        elif kind == "img":
            data = base64.b64encode(Path(block[1]).read_bytes()).decode()
            out.append(f'<img alt="{html.escape(block[2])}" src="data:image/png;base64,{data}">')
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%;display:block;margin:1em 0}"
    )
    body = "\n".join(out)
    return f"<!doctype html>\n<html><head><meta charset='utf-8'><title>archbench report</title><style>{style}</style></head>\n<body>\n{body}\n</body></html>\n"
