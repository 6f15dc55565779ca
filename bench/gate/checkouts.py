"""Each side of an A/B comparison as a checkout: a revision in a temporary, detached git worktree, or the
working tree as it is. Promises that the worktrees it adds are removed again, whatever happens meanwhile."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..scratch import folder as scratch_folder


@dataclass(frozen=True, kw_only=True)
class Side:
    """One side of the comparison: `label` (base or candidate), the revision as given, its commit, its checkout."""

    label: str
    rev: str
    commit: str | None
    path: Path


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"git {' '.join(args)}: {(done.stderr.strip().splitlines() or ['failed'])[-1]}")
    return done.stdout.strip()


def commit_of(repo: Path, rev: str) -> str:
    """The full commit id `rev` names in `repo`; UserError for an unknown revision."""
    done = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise UserError(f"unknown revision {rev!r} in {repo}")
    return done.stdout.strip()


@contextmanager
def checkouts(repo: Path, base: str, candidate: str | None) -> Iterator[tuple[Side, Side]]:
    """Base (and candidate, unless None: the working tree of `repo`) checked out into temporary worktrees,
    detached; removed afterwards."""
    root = toplevel(repo, "archbench ab compares two revisions of one")
    with worktrees(root, {"base": base, **({} if candidate is None else {"candidate": candidate})}) as sides:
        if candidate is None:
            sides["candidate"] = Side(label="candidate", rev="working tree", commit=None, path=root)
        yield sides["base"], sides["candidate"]


def toplevel(repo: Path, why: str) -> Path:
    """The top folder of the git repository at `repo`; a UserError saying `why` one is needed where there is none."""
    done = subprocess.run(["git", "-C", str(repo), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"{repo} is not a git repository ({why})")
    return Path(done.stdout.strip())


@contextmanager
def worktrees(root: Path, revisions: dict[str, str]) -> Iterator[dict[str, Side]]:
    """Each of `revisions` (label -> revision) of the repository at `root` checked out into a temporary, detached
    worktree, as a Side by label; every worktree removed afterwards, whatever happens meanwhile."""
    commits = {label: commit_of(root, rev) for label, rev in revisions.items()}
    scratch = scratch_folder("ab")
    added = []
    try:
        sides = {}
        for label, commit in commits.items():
            path = scratch / label
            git(root, "worktree", "add", "--detach", "--quiet", str(path), commit)
            added.append(path)
            sides[label] = Side(label=label, rev=revisions[label], commit=commit, path=path)
        yield sides
    finally:
        for path in added:
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(path)], capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)
