"""`archbench list` and `archbench report`: what is registered, and the tables and report of recorded runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UserError
from ..results import runs, store
from ..results.records import distinct


def list_architectures(args: argparse.Namespace) -> int:
    import architectures

    names = architectures.resolve([args.pattern], task=args.task)
    rows = [architectures.get_spec(n) for n in names]
    width = max(len(s.name) for s in rows)
    for spec in rows:
        print(f"{spec.name:<{width}}  {spec.task:<8}  {spec.family:<8}  {spec.description}")
    return 0


def report(args: argparse.Namespace) -> int:
    from ..results import report as reports

    paths = [store.records_path(run, args.out) for run in args.runs or [None]]
    records = distinct([(", ".join(map(str, run.paths)), run.records) for run in merged(paths)])
    if not records:
        raise UserError(f"{', '.join(map(str, paths))}: no records")
    output = store.writable_folder(args.output, "--output") if args.output else paths[-1].parent
    reference = args.reference or next(
        (found for path in paths if (found := store.read_run_info(path.parent).get("config", {}).get("reference"))), None
    )
    print(reports.tables(records, reference))
    try:
        written = reports.write_report(records, output, html_page=args.html, reference=reference)
    except OSError as error:
        raise UserError(f"cannot write the report into {output}: {error.strerror or error}") from None
    print(f"\nreport: {written}")
    return 0


def merged(paths: list[Path]) -> list[runs.Run]:
    """The runs of `paths`, the shards of one sweep as one run; pairs missing from every shard said on stderr."""
    found = runs.merge(paths)
    for run in found:
        if run.missing:
            print(f"archbench: {runs.describe_missing(run)}", file=sys.stderr)
    return found
