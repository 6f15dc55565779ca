"""`archbench history publish`: the history as a static site that works offline from file:// (no server, no CDN).

`index.html` carries every series as JSON (`page_data`: its points with their 95% bands, its steps with their commit
range, size, verdict and paired A/B state, the latest step's verdict) and draws it with plotly.js, written beside it
from the plotly package (the `history` extra): a summary grid of each series' newest step coloured by verdict, a
machine selector, a "regressions only" switch, and per series its trend over the first-parent commits, with each
point linking to its run's REPORT.html (or REPORT.md) in the history.
"""

from __future__ import annotations

import html
import json
import os
from datetime import datetime, timezone
from pathlib import Path

from ..errors import UserError
from ..gate.compare import Tolerances
from ..results.store import writable_folder, write_whole
from . import check, verdicts
from .steps import Z95
from .commits import Line
from .series import Series

PLOTLY = "plotly.min.js"


def write(out: Path, root: Path, line: Line, found: list[Series], tolerances: Tolerances) -> Path:
    """Writes the site into `out` (index.html and plotly.min.js) and returns the page's path."""
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise UserError("the dashboard needs plotly: pip install -e '.[history]'") from None
    writable_folder(out, "dashboard folder")
    data = page_data(root, line, found, tolerances, out)
    if not (out / PLOTLY).exists():
        write_whole(out / PLOTLY, get_plotlyjs())
    return write_whole(out / "index.html", _page(data))


def page_data(root: Path, line: Line, found: list[Series], tolerances: Tolerances, out: Path) -> dict:
    """What the page draws, as plain data (see the module's docstring)."""
    confirmed = verdicts.confirmations(root)
    series = []
    for s in found:
        steps = check.steps_of(s, tolerances)
        newest = next((step for step in reversed(steps) if step.newest), None)
        series.append({
            "machine": s.key.machine, "name": s.key.name(), "architecture": s.key.architecture, "figure": s.key.figure,
            "relative": s.relative, "higher_is_better": s.figure.higher_is_better,
            "points": [_point(p, s, line, root, out) for p in s.points],
            "off_line": [p.commit for p in s.off_line],
            "steps": [{
                "before": step.before_commit, "after": step.after_commit,
                "x0": s.points[step.change.at - 1].position, "x1": s.points[step.change.at].position,
                "change": step.describe(), "verdict": step.verdict, "newest": step.newest,
                "state": confirmed.get(step.name, {}).get("state", ""), "name": step.name,
            } for step in steps],
            "latest": _latest(newest, confirmed),
        })
    return {
        "branch": line.branch, "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commits": [{"commit": c, "subject": line.subjects.get(c, "")} for c in line.commits],
        "machines": sorted({s["machine"] for s in series}), "series": series,
    }


def _latest(newest: check.Step | None, confirmed: dict[str, dict]) -> dict:
    """The summary grid's cell of a series: its newest step's verdict (with the paired A/B's state, which a
    dismissed step is coloured by instead), or steady."""
    if newest is None:
        return {"verdict": "steady", "change": "", "state": ""}
    state = confirmed.get(newest.name, {}).get("state", "")
    return {"verdict": newest.verdict, "change": newest.describe(), "state": state}


def _point(point, series: Series, line: Line, root: Path, out: Path) -> dict:
    spread = point.spread or 0.0
    if series.relative:
        low, high = point.value * (1 - Z95 * spread), point.value * (1 + Z95 * spread)
    else:
        scale = series.figure.scale
        low, high = (point.value - Z95 * spread) * scale, (point.value + Z95 * spread) * scale
    value = point.value if series.relative else point.value * series.figure.scale
    reports = [root / "runs" / run / name for name in ("REPORT.html", "REPORT.md") for run in point.runs]
    report = next((os.path.relpath(path, out) for path in reports if path.is_file()), None)
    return {
        "x": point.position, "commit": point.commit, "subject": line.subjects.get(point.commit, ""), "value": value,
        "low": low, "high": high, "records": point.records, "report": report,
    }


def _page(data: dict) -> str:
    payload = json.dumps(data).replace("</", "<\\/")
    return _TEMPLATE.replace("{{title}}", html.escape(f"archbench history of {data['branch']}")).replace(
        "{{data}}", payload
    ).replace("{{plotly}}", PLOTLY)


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{title}}</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
table.grid { border-collapse: collapse; margin: 1em 0; }
table.grid td, table.grid th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
.regressed { background: #f4b6b6; } .improved { background: #b9e4b9; }
.within-tolerance, .unjudged, .dismissed { background: #eee; } .steady { background: #fff; }
.series { margin: 1.5em 0; } .series h3 { margin: 0.2em 0; font-size: 15px; }
.controls { margin: 1em 0; }
</style>
<script src="{{plotly}}"></script></head>
<body>
<h1>{{title}}</h1>
<p id="about"></p>
<div class="controls">machine: <select id="machine"></select>
<label><input type="checkbox" id="regressions"> regressions only</label></div>
<h2>Newest step of each series</h2>
<table class="grid" id="summary"><thead><tr><th>series</th><th>newest step</th><th>change [95% CI]</th></tr></thead><tbody></tbody></table>
<h2>Trends over commits</h2>
<div id="plots"></div>
<script id="data" type="application/json">{{data}}</script>
<script>
const data = JSON.parse(document.getElementById("data").textContent);
const colour = {regressed: "#d62728", improved: "#2ca02c", "within tolerance": "#999", unjudged: "#999"};
const machineSelect = document.getElementById("machine"), regressionsOnly = document.getElementById("regressions");
document.getElementById("about").textContent = data.series.length + " series over " + data.commits.length +
  " first-parent commits of " + data.branch + "; generated " + data.generated + ". Click a point to open its run's report.";
for (const machine of data.machines) {
  const option = document.createElement("option"); option.value = option.textContent = machine; machineSelect.append(option);
}
function shown(series) {
  return series.machine === machineSelect.value &&
    (!regressionsOnly.checked || series.steps.some(step => step.verdict === "regressed"));
}
function draw() {
  const body = document.querySelector("#summary tbody"), plots = document.getElementById("plots");
  body.innerHTML = ""; plots.innerHTML = "";
  data.series.filter(shown).forEach((series, index) => {
    const row = body.insertRow();
    const latest = series.latest;
    row.className = latest.state === "dismissed" ? "dismissed" : latest.verdict.replace(" ", "-");
    [series.name, latest.verdict + (latest.state ? " (" + latest.state + ")" : ""), latest.change]
      .forEach(text => { row.insertCell().textContent = text; });
    const box = document.createElement("div"); box.className = "series";
    const title = document.createElement("h3"); title.textContent = series.name; box.append(title);
    const plot = document.createElement("div"); plot.id = "plot-" + index; plot.className = "plot"; box.append(plot);
    plots.append(box);
    const x = series.points.map(p => p.x), hover = series.points.map(p => p.commit.slice(0, 10) + " " + p.subject);
    const traces = [
      {x: x, y: series.points.map(p => p.high), mode: "lines", line: {width: 0}, hoverinfo: "skip", showlegend: false},
      {x: x, y: series.points.map(p => p.low), mode: "lines", line: {width: 0}, fill: "tonexty",
       fillcolor: "rgba(31,119,180,0.2)", hoverinfo: "skip", name: "95% band"},
      {x: x, y: series.points.map(p => p.value), mode: "lines+markers", name: series.figure, text: hover,
       customdata: series.points.map(p => p.report), hovertemplate: "%{text}<br>%{y:.4g}<extra></extra>"},
    ];
    const shapes = series.steps.map(step => ({type: "rect", xref: "x", yref: "paper", x0: step.x0, x1: step.x1, y0: 0,
      y1: 1, fillcolor: colour[step.verdict] || "#999", opacity: 0.25, line: {width: 0}}));
    const annotations = series.steps.map(step => ({x: step.x1, yref: "paper", y: 1, xanchor: "left", showarrow: false,
      text: step.change + " " + step.verdict + (step.state ? " (" + step.state + ")" : "")}));
    Plotly.newPlot(plot, traces, {height: 260, margin: {t: 20, b: 40, l: 60, r: 20}, shapes: shapes,
      annotations: annotations, xaxis: {title: "commit (first-parent order)"}, yaxis: {title: series.figure}},
      {displaylogo: false, responsive: true});
    plot.on("plotly_click", event => { const report = event.points[0].customdata; if (report) window.open(report); });
  });
}
machineSelect.addEventListener("change", draw); regressionsOnly.addEventListener("change", draw);
draw();
</script></body></html>
"""
