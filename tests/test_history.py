"""The history: runs filed once, series per machine in first-parent order, steps found and judged, bisection and
confirmation through the paired A/B, the backfill's resume, the dashboard, and every user mistake in one line."""

import json
import math
import random
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.gate import ab, probes
from bench.history import backfill, commits, dashboard, series, steps, store, verdicts
from bench.results.records import RECORDS
from support.cli import run_cli, run_records


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout.strip()


def new_repo(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "test@example.com")
    git(root, "config", "user.name", "test")
    return root


def commit(root: Path, message: str, **files: str) -> str:
    for name, text in files.items():
        (root / name).write_text(text)
    git(root, "add", "-A")
    git(root, "commit", "-qm", message, "--allow-empty")
    return git(root, "rev-parse", "HEAD")


BASELINE = Path(__file__).parents[1] / "results" / "baseline" / "records.jsonl"


@pytest.fixture(scope="module")
def measured():
    """A real record as a template: cnn-baseline's from the committed baseline (fp32 as its mode, so that step
    names read simply)."""
    from bench.results.records import read_records

    record = next(r for r in read_records(BASELINE) if r["architecture"] == "cnn-baseline" and r["status"] == "ok")
    assert record["train_throughput_repeats"] and record["infer_throughput_repeats"]
    return {**record, "mode": "fp32"}


def write_run(folder: Path, template: dict, commit_id: str, speed: float = 1.0, **changes) -> Path:
    """A run folder of one record copied from `template`: at `commit_id`, its throughputs times `speed`."""
    record = {**template, "record_id": uuid.uuid4().hex, "run_id": f"run-{uuid.uuid4().hex[:8]}",
              "git_commit": commit_id, **changes}
    for key in ("train_throughput", "infer_throughput"):
        record[key] = template[key] * speed
        record[f"{key}_repeats"] = [v * speed for v in template.get(f"{key}_repeats") or []] or None
    run = folder / record["run_id"]
    run.mkdir(parents=True)
    (run / RECORDS).write_text(json.dumps(record) + "\n")
    return run


# --- filing runs


def test_a_run_added_twice_is_filed_once_and_the_index_is_rebuilt_from_the_records(tmp_path, measured, capsys):
    repo = new_repo(tmp_path / "repo")
    head = commit(repo, "one")
    run = write_run(tmp_path / "runs", measured, head)
    history = tmp_path / "history"
    code, out, _ = run_cli(capsys, "history", "add", run, "--history", history)
    assert code == 0 and "filed 1 new record(s) of 1 run(s)" in out
    code, out, _ = run_cli(capsys, "history", "add", run, run / RECORDS, "--history", history)
    assert code == 0 and "filed 0 new record(s)" in out and "2 were there already" in out
    (filed,) = (history / "runs").glob(f"*/{RECORDS}")
    assert json.loads(filed.read_text()) == json.loads((run / RECORDS).read_text())  # whole, as the run wrote it
    (history / store.INDEX).unlink()
    with store.index(history) as db:
        assert db.execute("SELECT count(*) FROM records").fetchone() == (1,)
        figures = dict(db.execute("SELECT figure, spread FROM figures").fetchall())
    assert "train_throughput" in figures and figures["train_throughput"] > 0 and "test_accuracy" in figures


def test_records_of_two_machines_are_two_series(tmp_path, measured):
    repo = new_repo(tmp_path / "repo")
    head = commit(repo, "one")
    runs = [write_run(tmp_path / "runs", measured, head), write_run(tmp_path / "runs", measured, head, device_name="Other CPU")]
    store.add(tmp_path / "history", [run / RECORDS for run in runs])
    found = series.load(tmp_path / "history", commits.first_parent(repo))
    throughput = [s for s in found if s.key.figure == "train_throughput"]
    assert len(throughput) == 2 and {s.key.machine.split(" x")[0] for s in throughput} == {measured["device_name"], "Other CPU"}
    assert all(len(s.points) == 1 for s in throughput)


def test_commits_follow_the_first_parent_line_and_runs_off_it_are_kept_but_not_plotted(tmp_path, measured):
    repo = new_repo(tmp_path / "repo")
    first = commit(repo, "first")
    git(repo, "checkout", "-qb", "side")
    side = commit(repo, "on the side", side="x")
    git(repo, "checkout", "-q", "main")
    second = commit(repo, "second", main="y")
    git(repo, "merge", "-q", "--no-ff", "-m", "merge side", "side")
    merge = git(repo, "rev-parse", "HEAD")
    line = commits.first_parent(repo, "main")
    assert line.commits == (first, second, merge) and line.position(side) is None
    runs = [write_run(tmp_path / "runs", measured, c) for c in (first, side, merge)]
    store.add(tmp_path / "history", [run / RECORDS for run in runs])
    (throughput,) = [s for s in series.load(tmp_path / "history", line) if s.key.figure == "train_throughput"]
    assert [p.commit for p in throughput.points] == [first, merge]
    assert [p.commit for p in throughput.off_line] == [side]


# --- steps


def test_a_step_is_found_where_it_is_and_a_flat_series_has_none():
    """Over 20 seeded series of 80 points with 1% noise: a flat one has no step, a 5% drop at 50 is found there
    with a 95% interval that holds it (one chance fluctuation of z 4.1 among the 20 is allowed)."""
    found, covered, false = 0, 0, 0
    for seed in range(20):
        flat = np.random.default_rng(seed).normal(0, 0.01, 80)
        stepped = flat + np.where(np.arange(80) >= 50, math.log(0.95), 0.0)
        spreads = [0.005] * 80
        false += len(steps.find(flat, spreads))
        changes = steps.find(stepped, spreads)
        hits = [c for c in changes if abs(c.at - 50) <= 1]
        found += bool(hits)
        covered += any(c.low < math.log(0.95) < c.high for c in hits)
        false += len(changes) - len(hits)
    assert found == 20 and covered >= 18 and false <= 1


def test_a_point_measured_more_precisely_weighs_more():
    values, spreads = [0.0, 0.0, 1.0, 1.0], [0.1, 0.1, 0.1, 10.0]
    sigma = steps.noise(values, spreads)
    assert sigma[3] > sigma[2] and sigma[0] == pytest.approx(sigma[1])


def history_of(tmp_path, template, speeds, repo_name="repo", code_speeds=None):
    """A repository of len(speeds) commits and a history with one run per commit, throughputs times speeds[i]; each
    commit's delay.txt makes the fake A/B measure it at code_speeds[i] (default: speeds[i])."""
    repo = new_repo(tmp_path / repo_name)
    code_speeds = code_speeds or speeds
    made = [commit(repo, f"commit {i}", **{"delay.txt": str(1 / c - 1)}) for i, c in enumerate(code_speeds)]
    rng = random.Random(1)
    runs = [write_run(tmp_path / "runs", template, c, speed * (1 + rng.gauss(0, 0.005))) for c, speed in zip(made, speeds)]
    store.add(tmp_path / "history", [run / RECORDS for run in runs])
    return repo, made


def test_check_fails_on_a_regression_in_the_newest_segment_only(tmp_path, measured, capsys):
    repo, made = history_of(tmp_path, measured, [1.0] * 8 + [0.8] * 4)
    code, out, err = run_cli(capsys, "history", "check", "--history", tmp_path / "history", "--repo", repo)
    assert code == 1 and "regression(s) in the newest segment" in err
    assert f"cnn-baseline:fp32:train_throughput@{made[7][:10]}..{made[8][:10]}" in err
    assert "regressed (newest)" in out and "0.8" in out
    code, out, err = run_cli(capsys, "history", "check", "--history", tmp_path / "history", "--repo", repo, "--since", made[8])
    assert code == 0 and "0 step(s) found" in out


def test_check_passes_an_improvement_and_a_steady_history(tmp_path, measured, capsys):
    repo, _ = history_of(tmp_path, measured, [1.0] * 6 + [1.3] * 4)
    code, out, _ = run_cli(capsys, "history", "check", "--history", tmp_path / "history", "--repo", repo)
    assert code == 0 and "improved (newest)" in out
    shutil.rmtree(tmp_path / "history")
    repo, _ = history_of(tmp_path, measured, [1.0] * 10, repo_name="flat")
    code, out, _ = run_cli(capsys, "history", "check", "--history", tmp_path / "history", "--repo", repo)
    assert code == 0 and "0 step(s) found" in out


def test_a_series_that_stopped_shows_its_steps_but_does_not_fail_check(tmp_path, measured, capsys):
    """A regression at the end of an older record version's series, which a newer version's series continues."""
    repo = new_repo(tmp_path / "repo")
    made = [commit(repo, f"commit {i}") for i in range(14)]
    speeds = [1.0] * 6 + [0.8] * 4 + [0.8] * 4
    versions = [measured["record_version"] - 1] * 10 + [measured["record_version"]] * 4
    runs = [write_run(tmp_path / "runs", measured, c, speed, record_version=v) for c, speed, v in zip(made, speeds, versions)]
    store.add(tmp_path / "history", [run / RECORDS for run in runs])
    code, out, _ = run_cli(capsys, "history", "check", "--history", tmp_path / "history", "--repo", repo)
    assert code == 0 and "regressed (newest)" in out and f"v{versions[0]}]" in out


# --- bisection and confirmation through the paired A/B


def delayed_measurer(architecture="a"):
    """A measurer that reads each side's delay.txt from its checkout: throughput 100 / (1 + delay), +-1% noise."""
    rng = random.Random(0)

    calls = {"flaky": 0}

    def measure(side):
        delay = (side.path / "delay.txt").read_text().strip()
        if delay == "flaky":  # 20% slower and 5% faster by turns: straddles a 5% tolerance whatever the rounds
            calls["flaky"] += 1
            delay = "0.25" if calls["flaky"] % 2 else "-0.05"
        speed = 1 / (1 + float(delay))
        figures = {key: 100 * speed * (1 + rng.uniform(-0.01, 0.01)) for key in ("train_throughput", "infer_throughput")}
        figures["params"] = 1
        return {architecture: {"architecture": architecture, "status": "ok", "bench_file": "/x/bench/probe.py", **figures}}

    return probes.one_after_the_other(measure)


def target(repo, budget=1e9, max_rounds=12):
    return verdicts.Target(repo=repo, architecture="a", figure="train_throughput", measure=delayed_measurer(),
                           tolerance=0.05, plan=ab.Rounds(budget_s=budget, max_rounds=max_rounds))


def test_bisect_names_the_planted_commit_within_log2_n_plus_one_probes(tmp_path):
    repo = new_repo(tmp_path / "repo")
    good = commit(repo, "good", **{"delay.txt": "0"})
    made = [commit(repo, f"commit {i}", **{"delay.txt": "0.2" if i >= 5 else "0"}) for i in range(9)]
    found = verdicts.bisect(target(repo), good, made[-1])
    assert found.first_bad == made[5] and found.reason == "found"
    assert len(found.probes) <= verdicts.probes_needed(9) == 5
    assert all(p.base == good for p in found.probes) and found.probes[0].verdict == "regressed"


def test_bisect_stops_and_says_so_when_bad_is_not_slower_or_a_probe_stays_inconclusive(tmp_path):
    repo = new_repo(tmp_path / "repo")
    good = commit(repo, "good", **{"delay.txt": "0"})
    same = commit(repo, "unchanged", **{"delay.txt": "0"})
    found = verdicts.bisect(target(repo), good, same)
    assert found.first_bad is None and "nothing to bisect" in found.reason and len(found.probes) == 1
    made = [commit(repo, "still fast", **{"delay.txt": "0"}), commit(repo, "noisy", **{"delay.txt": "flaky"}),
            commit(repo, "slow", **{"delay.txt": "0.2"})]
    found = verdicts.bisect(target(repo, max_rounds=8), good, made[-1])
    assert found.first_bad is None and found.reason.startswith(f"{made[1][:10]} stayed inconclusive within the budget")
    assert (found.good, found.bad) == (made[0], made[2]) and len(found.probes) == 3


def test_a_confirmed_step_fails_check_and_a_dismissed_one_does_not(tmp_path, measured, capsys, monkeypatch):
    monkeypatch.setattr(ab, "probe_measurer", lambda request: delayed_measurer("cnn-baseline"))
    repo, made = history_of(tmp_path, measured, [1.0] * 6 + [0.8] * 4)
    name = f"cnn-baseline:fp32:train_throughput@{made[5][:10]}..{made[6][:10]}"
    where = ["--history", tmp_path / "history", "--repo", repo]
    code, out, err = run_cli(capsys, "history", "confirm", name, *where)
    assert code == 1 and out.startswith(f"{name}: confirmed (paired A/B ")
    assert 0.78 < float(out.split("paired A/B ")[1].split()[0]) < 0.82
    code, out, _ = run_cli(capsys, "history", "check", *where)
    assert code == 1 and "| confirmed" in out
    shutil.rmtree(tmp_path / "history")
    repo, made = history_of(tmp_path, measured, [1.0] * 6 + [0.8] * 4, repo_name="same", code_speeds=[1.0] * 10)
    where = ["--history", tmp_path / "history", "--repo", repo]
    code, out, _ = run_cli(capsys, "history", "check", "--confirm", *where)
    assert code == 0 and "| dismissed" in out
    assert verdicts.confirmations(tmp_path / "history")[f"cnn-baseline:fp32:train_throughput@{made[5][:10]}..{made[6][:10]}"]["state"] == "dismissed"


# --- backfill


def test_a_backfill_measures_each_commit_once_and_resumes_where_it_stopped(tmp_path):
    from support.settings import FLAT_NET, TINY_SUITE

    repo = new_repo(tmp_path / "repo")
    suite = TINY_SUITE.format(architectures='["flat"]').replace("epochs = 2", "epochs = 1")
    made = [commit(repo, f"commit {i}", **{"suite.toml": suite, "models.py": FLAT_NET + f"# {i}\n"}) for i in range(3)]
    assert backfill.commits_in(repo, f"{made[0]}..{made[2]}") == made[1:]
    assert backfill.commits_in(repo, f"{made[0]}..{made[2]}", every=2) == [made[2]]
    assert backfill.commits_in(repo, made[1]) == [made[1]]
    plan = backfill.Plan(suite="suite.toml", architectures=("flat",), flags=("--arch-module", "models.py", "--isolation", "none"))
    history = tmp_path / "history"
    said = []
    assert backfill.backfill(repo, history, [made[1]], plan, machine="?", echo=said.append) == (1, 0, 0)
    assert "measured and filed" in said[-1]
    with store.index(history) as db:
        filed = db.execute("SELECT machine, commit_id, status FROM records").fetchall()
    ((machine, commit_id, status),) = filed
    assert (commit_id, status) == (made[1], "ok") and "archbench-ab" not in git(repo, "worktree", "list")
    # Stopped after made[1] and started again over the range: made[1] is in the history for this machine already.
    assert backfill.backfill(repo, history, [made[1]], plan, machine=machine, echo=said.append) == (0, 1, 0)
    assert "in the history already, skipped" in said[-1]
    assert not backfill.measured(history, machine, made[2], plan)


# --- the dashboard


def test_the_dashboard_carries_every_series_with_its_steps_and_links(tmp_path, measured):
    repo, made = history_of(tmp_path, measured, [1.0] * 6 + [0.8] * 4)
    run_folder = next((tmp_path / "history" / "runs").iterdir())
    (run_folder / "REPORT.html").write_text("<html>report</html>")
    line = commits.first_parent(repo)
    found = series.load(tmp_path / "history", line)
    from bench.gate.compare import load_tolerances

    data = dashboard.page_data(tmp_path / "history", line, found, load_tolerances(), tmp_path / "site")
    (throughput,) = [s for s in data["series"] if s["figure"] == "train_throughput"]
    assert [p["commit"] for p in throughput["points"]] == made and throughput["latest"]["verdict"] == "regressed"
    (step,) = throughput["steps"]
    assert (step["before"], step["after"], step["x0"], step["x1"]) == (made[5], made[6], 5, 6)
    linked = [p["report"] for p in throughput["points"] if p["report"]]
    assert len(linked) == 1 and (tmp_path / "site" / linked[0]).resolve() == (run_folder / "REPORT.html").resolve()
    assert data["machines"] == [measured["device_name"] + f" x1, {measured['cpu_threads']} threads, torch {measured['torch']}"]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (headless)")
def test_the_dashboard_draws_its_plots_in_a_real_browser(tmp_path, measured):
    pytest.importorskip("plotly")
    repo, _ = history_of(tmp_path, measured, [1.0] * 6 + [0.8] * 4)
    assert main(["history", "publish", "--history", str(tmp_path / "history"), "--repo", str(repo), "--out",
                 str(tmp_path / "site")]) == 0
    page = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom",
         (tmp_path / "site" / "index.html").as_uri()], capture_output=True, text=True, timeout=120,
    ).stdout
    plotted = page.count('class="plot js-plotly-plot"')
    assert plotted == len([s for s in series.load(tmp_path / "history", commits.first_parent(repo)) if s.points])
    assert page.count("main-svg") >= plotted and "regressed" in page


# --- user mistakes


def test_user_mistakes_are_one_line_errors(tmp_path, measured, capsys):
    repo = new_repo(tmp_path / "repo")
    head = commit(repo, "one")
    history = tmp_path / "history"
    cases = [
        (["history", "check", "--history", history, "--repo", repo], "no history at"),
        (["history", "add", write_run(tmp_path / "runs", measured, None), "--history", history], "without a git commit"),
        (["history", "add", write_run(tmp_path / "runs", measured, head + "-dirty"), "--history", history], "uncommitted changes"),
        (["history", "add", tmp_path / "nowhere", "--history", history], "no run records at"),
        (["history", "bisect", "nope", "HEAD", "--arch", "a", "--repo", repo], "unknown revision 'nope'"),
        (["history", "bisect", "HEAD", "HEAD", "--arch", "a", "--repo", repo], "no commits between"),
        (["history", "run", "nope..HEAD", "--history", history, "--repo", repo], "unknown revision 'nope'"),
    ]
    for argv, message in cases:
        code, out, err = run_cli(capsys, *argv)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
    store.add(history, [write_run(tmp_path / "runs", measured, head) / RECORDS])
    for argv, message in [
        (["history", "check", "--history", history, "--repo", repo, "--since", "nope"], "unknown revision 'nope'"),
        (["history", "confirm", "a:fp32:x@1..2", "--history", history, "--repo", repo], "no step 'a:fp32:x@1..2'"),
        (["history", "list", "--history", history, "--repo", tmp_path], "not a git repository"),
    ]:
        code, out, err = run_cli(capsys, *argv)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
