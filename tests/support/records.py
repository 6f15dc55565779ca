"""What a record may hold: the keys bench.results.schema and the task table document."""

import dataclasses

from bench.results import schema
from bench.measure.timing import MeasureSettings
from bench.tasks import TASKS


def documented_keys(task: str, data_parallel: bool = False, folder: bool = False) -> set[str]:
    """The keys bench.results.schema documents for a record of `task`; with `data_parallel`, a data-parallel record's
    too; with `folder`, those of a run on a folder dataset."""
    settings = {f.name for f in dataclasses.fields(TASKS[task].settings)}
    measure = {f"measure_{f.name}" for f in dataclasses.fields(MeasureSettings)}
    parallel = schema.DATA_PARALLEL_KEYS if data_parallel else ()
    folders = schema.FOLDER_KEYS if folder else ()
    return {*schema.COMMON_KEYS, *TASKS[task].keys, *schema.ENVIRONMENT_KEYS, *settings, *measure, *parallel, *folders}
