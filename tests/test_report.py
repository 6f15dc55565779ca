"""Reports: aggregation over seeds, Pareto fronts, and real plots and pages from a small real run."""

import json

import pytest
from PIL import Image

from bench.results import aggregate, report
from bench.results.legend import legend as legend_of
from bench.tasks import CLASSIFIERS
from bench.results.records import read_records
from bench.cli import main


def record(arch, seed, accuracy, throughput, status="ok", config="c1", **extra):
    return {
        "run_id": "r1", "suite": "s", "task": "classify", "dataset": "synthetic", "architecture": arch,
        "config_id": config, "seed": seed, "status": status, "error": None if status == "ok" else "boom",
        "test_accuracy": accuracy, "train_throughput": throughput, "params": 1000, **extra,
    }


def test_seeds_of_one_configuration_aggregate_to_mean_and_its_confidence_interval():
    rows = aggregate.aggregate([record("a", 0, 0.80, 100), record("a", 1, 0.84, 120), record("a", 2, 0.82, 110)])
    (row,) = rows
    assert row.seeds == 3 and row.mean("test_accuracy") == pytest.approx(0.82)
    assert row.std("test_accuracy") == pytest.approx(0.02)  # sample std of 0.80, 0.82, 0.84
    headers, body = report.table_cells(rows)
    cells = dict(zip(headers, body[0]))
    # ± the 95% half-width, t(0.975, 2) = 4.303 times std / sqrt(3): 4.97 points, 24.8 samples/s
    assert cells["seeds"] == "3" and cells["test acc (%)"] == "82.0 ± 5.0" and cells["train (samples/s)"] == "110 ± 25"


def test_different_configurations_and_failures_stay_apart():
    rows = aggregate.aggregate(
        [record("a", 0, 0.8, 100), record("a", 0, 0.9, 100, config="c2"), record("a", 1, None, None, status="failed")]
    )
    assert [(r.seeds, len(r.records)) for r in rows] == [(1, 2), (1, 1)]
    assert rows[0].status() == "1/2 ok; failed: boom" and rows[0].std("test_accuracy") is None


def test_pareto_front_holds_the_architectures_no_other_beats_on_both():
    rows = aggregate.aggregate(
        [
            record("accurate", 0, 0.9, 10),
            record("fast", 0, 0.5, 1000),
            record("balanced", 0, 0.8, 500),
            record("dominated", 0, 0.7, 400),  # balanced is more accurate and faster
            record("tied-but-slower", 0, 0.9, 5),
        ]
    )
    assert {r.architecture for r in rows if r.pareto} == {"accurate", "fast", "balanced"}
    _, body = report.table_cells(rows)
    assert [cells[0] for cells in body] == ["★ accurate", "★ fast", "★ balanced", "dominated", "tied-but-slower"]


def test_modes_show_as_a_column_with_speedup_and_quality_change_against_the_first_mode():
    fast = {"mode": "auto+channels_last", "precision": "bf16"}
    rows = aggregate.aggregate(
        [
            record("a", 0, 0.80, 100, mode="fp32"),
            record("a", 1, 0.84, 100, mode="fp32"),
            record("a", 0, 0.81, 250, config="c2", **fast),
            record("a", 1, 0.81, 250, config="c2", **fast),
            record("b", 0, 0.70, 50, config="c3", **fast),
            record("b", 0, 0.72, 40, config="c4", mode="fp32"),
        ]
    )
    headers, body = report.table_cells(rows)
    cells = [dict(zip(headers, line)) for line in body]
    assert [c["mode"] for c in cells] == ["fp32", "auto+channels_last (=bf16)", "auto+channels_last (=bf16)", "fp32"]
    assert [c["train speedup"] for c in cells] == ["", "×2.50", "", "×0.80"]  # b's first mode is the fast one
    assert [c["Δ test accuracy"] for c in cells] == ["", "-1.0", "", "+2.0"]
    assert rows[1].label == "a (auto+channels_last)" and rows[0].label == "a"
    single = report.table_cells(aggregate.aggregate([record("a", 0, 0.8, 100, mode="bf16")]))[0]
    assert "mode" not in single and "train speedup" not in single


def test_lower_is_better_quality_flips_the_front():
    rows = aggregate.aggregate([record("a", 0, 0.9, 10), record("b", 0, 0.5, 10)])
    aggregate.mark_pareto(rows, "test_accuracy", higher_is_better=False)
    assert [r.architecture for r in rows if r.pareto] == ["b"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    suite = out / "suite.toml"
    suite.write_text(
        'dataset = "synthetic"\narchitectures = ["cnn-baseline", "cnn-bn"]\nseeds = [0, 1]\nlimit_train = 64\n'
        'limit_test = 32\n[classify]\nepochs = 2\nbatch_size = 16\noptimizer = "adam"\n'
        "[measure]\nwarmup_time = 0.0\nmin_repeat_time = 0.0\nmax_time = 0.0\nlatency_time = 0.0\nlatency_min_calls = 3\n"
    )
    assert main(["run", "--suite", str(suite), "--out", str(out), "--quiet", "--isolation", "none"]) == 0
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


@pytest.mark.slow
def test_a_run_ends_with_a_report_with_valid_plots(small_run):
    text = (small_run / "REPORT.md").read_text()
    assert "## Classifiers on synthetic" in text and "archbench run --suite" in text
    assert "| cnn-baseline" in text or "| ★ cnn-baseline" in text
    images = [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert len(images) == 4
    for name in images:
        with Image.open(small_run / name) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 150
            image.verify()
    assert (small_run / "records.csv").read_text().count("\n") == 1 + 4  # header + 2 archs x 2 seeds


@pytest.mark.slow
def test_report_of_several_runs_and_html_page(small_run, tmp_path, capsys):
    records_file = small_run / "records.jsonl"
    assert main(["report", str(small_run), str(records_file), "--output", str(tmp_path), "--html"]) == 0
    page = (tmp_path / "REPORT.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "<table>" in page
    captured = capsys.readouterr()
    assert "cnn-baseline" in captured.out
    seeds = {json.loads(line)["seed"] for line in records_file.read_text().splitlines()}
    assert seeds == {0, 1}
    # The same run given twice (its folder, then its records file): each record counted once, said on stderr.
    assert (tmp_path / "records.csv").read_text().count("\n") == 1 + 4
    assert "4 record(s) from " in captured.err and "each counted once" in captured.err
    headers, body = report.table_cells(aggregate.aggregate(read_records(records_file)))
    assert {dict(zip(headers, cells))["seeds"] for cells in body} == {"2"}


def test_a_moved_run_folder_keeps_its_sample_grids_in_the_report(tmp_path):
    moved = tmp_path / "published" / "run"
    moved.mkdir(parents=True)
    Image.new("RGB", (40, 40), "white").save(moved / "vae-mlp-seed0-samples.png")
    gone = tmp_path / "runs" / "run" / "vae-mlp-seed0-samples.png"  # where the run wrote it, since moved
    line = {"architecture": "vae-mlp", "task": "vae", "dataset": "d", "status": "ok", "config_id": "c", "seed": 0,
            "fid": 10.0, "train_throughput": 100.0, "sample_grid": str(gone)}
    (moved / "records.jsonl").write_text(json.dumps(line) + "\n")
    (found,) = read_records(moved / "records.jsonl")
    assert found["sample_grid"] == str(moved / "vae-mlp-seed0-samples.png")
    assert main(["report", str(moved), "--output", str(tmp_path / "out")]) == 0
    assert "(plots/generators-d-samples.png)" in (tmp_path / "out" / "REPORT.md").read_text()


def test_the_report_names_architectures_measured_under_load():
    ok = {"task": "classify", "dataset": "d", "status": "ok", "config_id": "c", "test_accuracy": 0.5, "train_throughput": 10}
    rows = aggregate.aggregate([{**ok, "architecture": "calm", "other_cpu_share": 0.01},
                                {**ok, "architecture": "busy", "other_cpu_share": 0.35}])
    legend = legend_of(CLASSIFIERS, rows)
    assert "Measured under load" in legend and "busy (35%)" in legend and "calm" not in legend.split("load")[-1]


def test_the_report_names_architectures_whose_timing_windows_disagree_with_their_training_loop():
    ok = {"task": "classify", "dataset": "d", "status": "ok", "config_id": "c", "test_accuracy": 0.5}
    rows = aggregate.aggregate([{**ok, "architecture": "steady", "train_throughput": 104, "train_loop_throughput": 100},
                                {**ok, "architecture": "deep", "train_throughput": 292, "train_loop_throughput": 410}])
    legend = legend_of(CLASSIFIERS, rows)
    assert "deep (292 vs 410 samples/s)" in legend and "steady" not in legend.split("training loop")[-1]


def test_rows_of_different_record_versions_are_shown_apart_and_never_compared():
    bf16 = {"mode": "bf16", "config": "c2"}
    records = [
        record("a", 0, 0.80, 100, mode="fp32", record_version=8),
        record("a", 1, 0.82, 110, mode="fp32", record_version=8),
        record("a", 0, 0.80, 250, record_version=7, **bf16),
        record("a", 1, 0.82, 260, record_version=7, **bf16),
        record("b", 0, 0.90, 200, mode="fp32", config="c3", record_version=7, run_id="r2"),
        record("b", 1, 0.92, 210, mode="fp32", config="c3", record_version=7, run_id="r2"),
    ]
    rows = aggregate.aggregate(records)
    # b is better and faster than a with every seed, but measured by other code: both stay on the front.
    assert [row.pareto for row in rows] == [True, True, True]
    headers, body = report.table_cells(rows)
    cells = [dict(zip(headers, line)) for line in body]
    assert cells[1]["train speedup"] == cells[1]["Δ test accuracy"] == "not comparable"
    view = CLASSIFIERS
    lines = report.summary_lines(rows, view, reference="a")
    assert lines == ["a (bf16): not comparable with a (record version 7 against 8).",
                     "b: not comparable with a (record version 7 against 8)."]
    legend = legend_of(view, rows)
    assert "**Record versions differ** (8: a; 7: a (bf16), b)" in legend
    (_, env_headers, env_body), *_ = report._environment_blocks(records)
    versions = [dict(zip(env_headers, line))["record version"] for line in env_body]
    assert versions == ["7, 8", "7"]  # run r1 holds records of both versions, r2 of version 7
