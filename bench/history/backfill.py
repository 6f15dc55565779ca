"""`archbench history run REV_RANGE`: a backfill. Each first-parent commit of the range (every Nth, counted back from
the newest, which is always measured) is checked out into a temporary worktree and measured by its own code, as
`archbench ab` measures a side: that checkout's `python -m bench run`, into a scratch run folder whose records are
then filed into the history. A commit whose records the history already holds for this machine and suite (every
architecture asked for) is skipped, so a backfill that stopped (Ctrl-C, SIGTERM: the run in progress is stopped
and its worktree removed) resumes where it stopped. A commit whose run fails is said in one line; the rest go on.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..gate.checkouts import commit_of, git, toplevel, worktrees
from ..results.records import RECORDS
from ..scratch import folder as scratch_folder
from . import store


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What to measure at each commit: the suite (a built-in name, or a file: the same one for every commit), the
    architectures (patterns; empty: the suite's), and further `archbench run` flags."""

    suite: str
    architectures: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()

    def command(self, out: Path) -> list[str]:
        command = [sys.executable, "-m", "bench", "run", "--suite", self.suite, "--out", str(out), "--quiet", "--yes"]
        return command + (["--arch", *self.architectures] if self.architectures else []) + list(self.flags)


def commits_in(repo: Path, rev_range: str, every: int = 1) -> list[str]:
    """The first-parent commits of `rev_range` ("A..B": after A up to B; "B": B alone), oldest first, every
    `every`th counted back from the newest."""
    root = toplevel(repo, "a backfill measures its commits")
    if ".." in rev_range:
        old, _, new = rev_range.partition("..")
        listed = git(root, "rev-list", "--first-parent", "--reverse", f"{commit_of(root, old or 'HEAD')}..{commit_of(root, new or 'HEAD')}")
        commits = listed.split()
    else:
        commits = [commit_of(root, rev_range)]
    if not commits:
        raise UserError(f"{rev_range} holds no commits (A..B lists those after A up to B)")
    return commits[::-1][::every][::-1]


def measured(root: Path, machine: str, commit: str, plan: Plan) -> bool:
    """Whether the history at `root` holds records of `commit` on `machine` from `plan`'s suite: one for every
    architecture pattern asked for, or any where the suite's own are measured."""
    with store.index(root) as db:
        names = [row[0] for row in db.execute(
            "SELECT architecture FROM records WHERE commit_id = ? AND machine = ? AND suite = ?",
            (commit, machine, Path(plan.suite).stem),
        )]
    if not plan.architectures:
        return bool(names)
    return all(fnmatch.filter(names, pattern) for pattern in plan.architectures)


def backfill(
    repo: Path, root: Path, commits: list[str], plan: Plan, machine: str, echo: Callable[[str], None]
) -> tuple[int, int, int]:
    """Measures each of `commits` not yet in the history (`measured`) and files its records; (measured, skipped,
    failed) counts."""
    counts = [0, 0, 0]
    top = toplevel(repo, "a backfill measures its commits")
    for number, commit in enumerate(commits, start=1):
        where = f"[{number}/{len(commits)}] {commit[:10]}"
        if measured(root, machine, commit, plan):
            echo(f"{where}: in the history already, skipped")
            counts[1] += 1
            continue
        error = _measure(top, root, commit, plan)
        counts[2 if error else 0] += 1
        echo(f"{where}: {error or 'measured and filed'}")
    return counts[0], counts[1], counts[2]


def _measure(top: Path, root: Path, commit: str, plan: Plan) -> str | None:
    """One commit measured in its worktree and its records filed; the failure's last line, or None."""
    out = scratch_folder("history")
    try:
        with worktrees(top, {"commit": commit}) as sides:
            checkout = sides["commit"].path
            environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(checkout), os.environ.get("PYTHONPATH", "")])}
            process = subprocess.Popen(
                plan.command(out), cwd=checkout, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                text=True,
            )
            try:
                _, stderr = process.communicate()
            finally:
                if process.poll() is None:  # interrupted: stop the run before its worktree goes
                    process.terminate()
                    process.wait()
        files = sorted(out.glob(f"*/{RECORDS}"))
        if files:
            store.add(root, files, commit=commit)
        if process.returncode != 0 and not files:
            return f"the run failed: {(stderr.strip().splitlines() or ['exit status ' + str(process.returncode)])[-1]}"
        return None
    finally:
        shutil.rmtree(out, ignore_errors=True)
