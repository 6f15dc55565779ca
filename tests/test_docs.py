"""The documentation against the code: README.md and docs/*.md name only flags the command line has, link
only to files of this repository that exist, keep the README's set-up commands first and as CI runs them, and
list the record versions the reader holds."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from bench.cli import build_parser
from bench.results.records import VERSIONS

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Flags of other tools that the docs name in prose code spans (code blocks are scoped by the command a line
# runs, so pytest's, pip's and torchrun's flags there need no entry here).
FOREIGN_FLAGS = {
    "--benchmark-disable",  # pytest-benchmark's, the default in pyproject.toml (docs/development.md)
    "--benchmark-enable",  # pytest-benchmark's, to measure with tests/benchmarks (docs/development.md)
}

FENCE = re.compile(r"^(```|~~~)")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
# Where archbench's own arguments start on a line: the console script (any path to it) or `python -m bench`
# (as torchrun runs it too), but not `python -m bench.probe`.
INVOCATION = re.compile(r"(?:^|[\s\"'/\[(`])archbench(?=\s|$)|-m\s+bench(?![.\w])")
# A line in a code block that starts another program: its flags are that program's.
OTHER_COMMAND = re.compile(r"^\s*(?:\S*/)?(?:pytest|pip|python3?|torchrun|git|apt-get|sbatch)\b")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def cli_flags(parser: argparse.ArgumentParser | None = None) -> set[str]:
    """Every option string of `parser` (default: archbench's) and of all its subcommands, nested ones included."""
    parser = parser or build_parser()
    flags = set()
    for action in parser._actions:
        flags.update(option for option in action.option_strings if option.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                flags |= cli_flags(subparser)
    return flags


def split_page(text: str) -> tuple[list[list[str]], list[str]]:
    """The code blocks of a markdown page (each a list of lines) and its other lines."""
    blocks, prose, block = [], [], None
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            if block is None:
                block = []
            else:
                blocks.append(block)
                block = None
        elif block is None:
            prose.append(line)
        else:
            block.append(line)
    assert block is None, "a code block is never closed"
    return blocks, prose


def block_flags(lines: list[str]) -> list[str]:
    """The flags a code block gives archbench: on each line, those after the `archbench` or `python -m bench`
    that the line runs; on an indented line that continues an archbench command (a backslash continuation, or
    the synopsis's wrapped `[--flag ...]` lines), all of them. Other programs' lines give none."""
    found, continuing = [], False
    for line in lines:
        invocation = INVOCATION.search(line)
        if invocation:
            found += FLAG.findall(line[invocation.end():])
            continuing = True
        elif continuing and line[:1].isspace() and not OTHER_COMMAND.match(line):
            found += FLAG.findall(line)
        else:
            continuing = False
    return found


def prose_flags(lines: list[str]) -> list[str]:
    """The flags named in inline code spans outside code blocks, other tools' known flags left out."""
    spans = [span for line in lines for _, span in CODE_SPAN.findall(line)]
    return [flag for span in spans for flag in FLAG.findall(span) if flag not in FOREIGN_FLAGS]


def named_flags(text: str) -> set[str]:
    """The archbench flags a markdown page names, in its code blocks and its inline code spans."""
    blocks, prose = split_page(text)
    return {*prose_flags(prose), *(flag for block in blocks for flag in block_flags(block))}


def relative_links(text: str) -> list[str]:
    """The targets of the page's markdown links and images that are neither web addresses nor same-page anchors,
    without their #fragment; links inside code are not links."""
    _, prose = split_page(text)
    targets = [target for line in prose for target in LINK.findall(CODE_SPAN.sub("", line))]
    return [target.split("#")[0] for target in targets if not re.match(r"[a-z][a-z0-9+.-]*:|#", target)]


def test_the_pages_exist():
    names = {page.name for page in PAGES}
    assert {"README.md", "running-and-resume.md", "gates.md", "development.md"} <= names
    assert (ROOT / "docs" / "README.md").is_file()


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_archbench_flag_named_exists(page):
    unknown = sorted(named_flags(page.read_text()) - cli_flags())
    assert not unknown, f"{page.relative_to(ROOT)} names flags archbench does not have: {', '.join(unknown)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_of_the_repository(page):
    for target in relative_links(page.read_text()):
        path = (page.parent / target).resolve()
        assert path.is_relative_to(ROOT), f"{page.relative_to(ROOT)}: {target} points outside the repository"
        assert path.exists(), f"{page.relative_to(ROOT)}: {target} does not exist"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_no_code_names_a_path_above_the_repository(page):
    """Commands and paths in code are read from the repository's root, where `../` leaves the project."""
    blocks, prose = split_page(page.read_text())
    spans = [span for line in prose for _, span in CODE_SPAN.findall(line)]
    code = [*(line for block in blocks for line in block), *spans]
    outside = [text for text in code if re.search(r"(?:^|[\s\"'=(])\.\./", text)]
    assert not outside, f"{page.relative_to(ROOT)} names paths outside the repository: {outside}"


def test_readme_starts_with_the_two_setup_commands_and_ci_runs_the_second():
    blocks, _ = split_page((ROOT / "README.md").read_text())
    assert blocks[:2] == [
        ["python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/archbench run"],
        ["python3 -m venv .venv && .venv/bin/pip install -e '.[dev]' && .venv/bin/pytest -n auto"],
    ]
    assert blocks[1][0] in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_records_page_lists_every_record_version_as_the_reader_holds_it():
    text = " ".join((ROOT / "docs" / "records.md").read_text().split())
    said = [v.number for v in VERSIONS if f"{v.number}: {' '.join(v.what_changed.split())}" in text]
    assert said == [v.number for v in VERSIONS], "docs/records.md must say each of bench.results.records.VERSIONS"


def test_the_checks_catch_what_they_are_for():
    """A flag the parser lacks is reported wherever archbench is run or a code span names it; other programs'
    flags are not; links are found outside code only."""
    page = """
Use `--no-such-flag` here, and `--arch` there.

```sh
archbench run --arch cnn-baseline --bogus
  [--wrapped-bogus N]
torchrun --nproc-per-node 2 -m bench run --also-bogus
.venv/bin/pytest -m 'not slow' --benchmark-enable
python -m bench.probe --probe-flag
```

[a page](docs/x.md#part), [the web](https://example.org), [here](#top), `[not a link](y.md)`
"""
    named = named_flags(page)
    assert named - cli_flags() == {"--no-such-flag", "--bogus", "--wrapped-bogus", "--also-bogus"}
    assert "--arch" in named and "--benchmark-enable" not in named and "--nproc-per-node" not in named
    assert relative_links(page) == ["docs/x.md"]
    assert {"--arch-module", "--to", "--calibrate", "--task", "--html", "--accept"} <= cli_flags()
