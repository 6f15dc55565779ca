"""A task archbench does not ship, added as one entry from a plugin (tests/support/toy_task.py), runs through
`run`, `report`, `compare` and `ab`'s probe like the built-in ones, with no other module touched."""

import json
import subprocess
import sys
from pathlib import Path

from bench.cli import main
from bench.results import store
from bench.results.records import read_records

TOY = Path(__file__).parent / "support" / "toy_task.py"
ROOT = Path(__file__).parents[1]
LOSS = "test_reconstruction_loss"
RECONSTRUCT = '\n[reconstruct]\nepochs = 3\nbatch_size = 16\noptimizer = "adam"\nlr = 0.01\n'


def test_a_task_added_as_one_entry_runs_reports_compares_and_probes(tiny_suite, tmp_path, capsys):
    suite = tiny_suite("toy-ae", extra=RECONSTRUCT)
    argv = ["run", "--suite", suite, "--out", tmp_path / "runs", "--quiet", "--seed", "0", "1", "--arch-module", TOY]
    assert main([str(a) for a in argv]) == 0  # each pair in its own process: the children load the plugin too
    (records_file,) = (tmp_path / "runs").glob(f"*/{store.RECORDS}")
    records = read_records(records_file)
    assert [(r["task"], r["status"], r["seed"]) for r in records] == [("reconstruct", "ok", 0), ("reconstruct", "ok", 1)]
    for record in records:
        curve = record[f"curve_{LOSS}"]
        assert len(curve) == 3 and curve[-1] < curve[0] and record[LOSS] == curve[-1]
        assert record["train_throughput"] > 0 and record["infer_throughput"] > 0 and record["params"] > 0
    shown = capsys.readouterr().out
    assert "### Autoencoders on synthetic" in shown and "test MSE" in shown  # the entry's table and columns

    report = subprocess.run(  # a fresh process: what it knows of the task comes from the plugin alone
        [sys.executable, "-m", "bench", "report", str(records_file.parent), "--arch-module", str(TOY)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert report.returncode == 0, report.stderr
    page = (records_file.parent / "REPORT.md").read_text()
    assert "## Autoencoders on synthetic" in page and "| test MSE" in page
    assert (records_file.parent / "plots" / "autoencoders-synthetic-curves.png").is_file()

    assert main(["compare", str(records_file), str(records_file), "--arch-module", str(TOY)]) == 0
    worse = tmp_path / "worse.jsonl"
    worse.write_text("".join(json.dumps({**r, LOSS: r[LOSS] + 0.05, "record_id": f"{r['record_id']}-worse"}) + "\n"
                             for r in records))
    assert main(["compare", str(records_file), str(worse), "--arch-module", str(TOY)]) == 1
    assert f"toy-ae {LOSS}" in capsys.readouterr().err  # judged by the entry's own figure and tolerance

    probe = subprocess.run(
        [sys.executable, "-m", "bench.probe", "--suite", str(suite), "--arch-module", str(TOY)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    (measured,) = [json.loads(line) for line in probe.stdout.splitlines()]
    assert measured["status"] == "ok" and measured["train_throughput"] > 0 and LOSS not in measured


def test_records_of_a_task_no_entry_describes_are_refused_by_compare(tmp_path, capsys):
    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps({"task": "reconstruct", "architecture": "toy-ae", "dataset": "synthetic", "status": "ok", "seed": 0,
                                   "config_id": "c0"}) + "\n")
    assert main(["compare", str(records), str(records)]) == 2
    assert "give the plugin module that adds it with --arch-module" in capsys.readouterr().err
