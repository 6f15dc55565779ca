"""The order of a history's commits: a branch's first-parent line, oldest first, as `git log --first-parent` walks
it. A merge counts as one commit of the line (the commits it brought in are off it); a run of a commit off the line
is kept and listed, never plotted between two of the line's."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..gate.checkouts import commit_of, git


@dataclass(kw_only=True)
class Line:
    """A branch's first-parent commits, oldest first, with each one's subject."""

    branch: str
    commits: tuple[str, ...]
    subjects: dict[str, str]
    positions: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.positions = {commit: i for i, commit in enumerate(self.commits)}

    def position(self, commit: str) -> int | None:
        """Where `commit` stands on the line (0: the oldest), None when it is off it."""
        return self.positions.get(commit)

    def short(self, commit: str) -> str:
        """A commit as a line of output names it: its first 10 hex digits and its subject."""
        subject = self.subjects.get(commit, "")
        return f"{commit[:10]} {subject[:60]}".rstrip()


def first_parent(repo: Path, branch: str = "HEAD", since: str | None = None) -> Line:
    """The first-parent line of `branch` in `repo`, oldest first; from `since` on (inclusive) where given.
    Unknown revisions are UserErrors."""
    head = commit_of(repo, branch)
    listed = git(repo, "log", "--first-parent", "--reverse", "--format=%H %s", head).splitlines()
    commits, subjects = [], {}
    for line in listed:
        commit, _, subject = line.partition(" ")
        commits.append(commit)
        subjects[commit] = subject
    if since is not None:
        start = commit_of(repo, since)
        if start not in subjects:
            raise UserError(f"{since} is not on the first-parent line of {branch}")
        commits = commits[commits.index(start):]
    return Line(branch=branch, commits=tuple(commits), subjects=subjects)


def between(repo: Path, good: str, bad: str) -> list[str]:
    """The first-parent commits after `good` up to and including `bad`, oldest first: where a bisection looks.
    A UserError when `good` is not an ancestor on that line of `bad`."""
    good_commit, bad_commit = commit_of(repo, good), commit_of(repo, bad)
    line = first_parent(repo, bad_commit).commits
    if good_commit not in line:
        raise UserError(f"{good} is not on the first-parent line of {bad}: give GOOD older than BAD")
    found = list(line[line.index(good_commit) + 1:])
    if not found:
        raise UserError(f"no commits between {good} and {bad}: GOOD must be older than BAD")
    return found
