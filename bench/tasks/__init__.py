"""The task table: every task archbench runs, one entry each, and the figures records are judged by.

An entry names the task's settings (its suite table), the module of its parts (`parts(model, data, settings,
context, record)`, which `Task.run` hands to the one sequence, bench.tasks.sequence; imported only when a task
runs), its judged quality figures, the report table it appears in (`Table`: the figure it ranks by, its columns
and plots), the keys its records add and what it needs (the FID reference classifier; whether it can train
data-parallel). The runner, configuration, record schema, aggregation, report, compare, ab and the data-parallel
launcher read this table; adding a task is one entry (`register`, from a plugin module). Importing it imports
no torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from .figures import (
    FLOPS, INFER, LATENCY_P50, MILLIONS, PEAK_MEMORY, PERCENT, SIG3, TRAIN, TRAIN_TIME, TRAIN_UTILIZATION, Column,
    Figure, Number, Table,
)
from .settings import ClassifySettings, GanSettings, TrainingSettings, VaeSettings

# The figures every task's records may carry: costs (relative tolerances, timed) and structure (exact).
COMMON_FIGURES = (
    Figure(key="train_throughput", kind="cost", higher_is_better=True, repeats="train_throughput_repeats", speed=True),
    Figure(key="infer_throughput", kind="cost", higher_is_better=True, repeats="infer_throughput_repeats", speed=True),
    Figure(
        key="generate_throughput", kind="cost", higher_is_better=True, repeats="generate_throughput_repeats", speed=True
    ),
    Figure(key="latency_p50_ms", kind="cost", higher_is_better=False, repeats="latency_p50_ms_repeats", speed=True),
    Figure(key="peak_memory_mb", kind="cost", higher_is_better=False, floor="peak_memory_min_mb"),
    Figure(key="params", kind="structure"),
    Figure(key="generator_params", kind="structure"),
    Figure(key="discriminator_params", kind="structure"),
    Figure(key="flops_per_sample", kind="structure"),
)


@dataclass(frozen=True, kw_only=True)
class Task:
    """One task: its settings class, its parts' module, its judged quality `figures` (the first is what a run's
    line names first), its report `table`, the record keys its parts add, whether its quality is an FID (which
    needs the cached reference classifier) and whether it can train data-parallel, and what its training step
    costs in forward passes of the model whose FLOPs its records count (None where it is no multiple of them: a
    GAN's step runs two networks)."""

    name: str
    settings: type[TrainingSettings]
    module: str
    figures: tuple[Figure, ...]
    table: Table
    keys: tuple[str, ...]
    generative: bool = False
    data_parallel: bool = False
    training_flops_factor: float | None = None  # a training step's FLOPs per forward FLOP (bench.measure.utilization)

    def loop(self) -> ModuleType:
        """The module of this task's parts (imports torch)."""
        return importlib.import_module(self.module)

    def run(self, model, data, settings: TrainingSettings, context, record: dict, train: bool = True) -> None:
        """Run the one sequence (bench.tasks.sequence.run) over this task's `parts` for `model`, filling `record`;
        without `train`, its costs only (imports torch)."""
        sequence = importlib.import_module(".sequence", __name__)
        parts = self.loop().parts(model, data, settings, context, record)
        sequence.run(parts, settings, context, record, train)


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add `task` to the table (a plugin module adds its own task this way, beside its architectures). The same
    module registering it again (imported again) replaces it; another module taking a registered name is a
    ValueError naming both."""
    if task.name in TASKS and TASKS[task.name].module != task.module:
        raise ValueError(f"task {task.name!r} registered twice: by {TASKS[task.name].module} and by {task.module}")
    TASKS[task.name] = task
    return task


def figures() -> tuple[Figure, ...]:
    """Every judged figure: each task's quality figures, in the table's order (a figure two tasks share once),
    then the common costs and structure."""
    quality = {figure.key: figure for task in TASKS.values() for figure in task.figures}
    return (*quality.values(), *COMMON_FIGURES)


def tables() -> dict[str, Table]:
    """The report tables of the tasks, by name, in the table's order (tasks may share one)."""
    return {task.table.name: task.table for task in TASKS.values()}


ACCURACY = Figure(
    key="test_accuracy", kind="quality", higher_is_better=True, scale=100, unit=" pts",
    tolerance=1.0,  # accuracy points lost
)
FID = Figure(
    key="fid", kind="quality", higher_is_better=False,
    tolerance=25.0,  # FID gained, on the reference classifier's features
)
NLL = Figure(
    key="test_nll", kind="quality", higher_is_better=False, unit=" nats",
    tolerance=5.0,  # nats per image gained
)

CLASSIFIERS = Table(
    name="classify", title="Classifiers", figure=ACCURACY, quality_name="test accuracy",
    quality_label="test accuracy (%)", curve="curve_test_accuracy", curve_label="test accuracy (%)",
    columns=(
        Column("test_accuracy", "test acc (%)", PERCENT),
        Column("generalization_gap", "gap (pts)", PERCENT),
        Column("params", "params (M)", MILLIONS),
        FLOPS, TRAIN, TRAIN_UTILIZATION, INFER, LATENCY_P50,
        Column("latency_p95_ms", "latency p95 (ms)", SIG3),
        PEAK_MEMORY, TRAIN_TIME,
        Column("time_to_target_s", "time to target (s)", SIG3),
    ),
)

GENERATORS = Table(
    name="generators", title="Generators", figure=FID, quality_name="FID",
    quality_label="FID on the reference classifier's features", params_key="generator_params",
    samples_key="sample_grid", show_task=True,
    columns=(
        Column("fid", "FID", SIG3),
        Column("kid", "KID", SIG3),
        Column("test_nll", "test NLL (nats)", Number(significant=4)),
        Column("test_neg_elbo", "test -ELBO (nats)", Number(significant=4)),
        Column("generator_params", "params G (M)", MILLIONS),
        Column("discriminator_params", "params D (M)", MILLIONS),
        FLOPS,
        Column("generate_throughput", "generate (samples/s)", SIG3),
        TRAIN, PEAK_MEMORY, TRAIN_TIME,
        Column("fid_classifier_accuracy", "FID ref acc (%)", PERCENT),
    ),
)

GENERATOR_KEYS = (
    "generator_params", "fid", "kid", "kid_std", "fid_samples", "fid_features", "fid_classifier",
    "fid_classifier_accuracy", "fid_classifier_cached", "fid_classifier_file", "generate_throughput",
    "generate_throughput_iqr", "generate_throughput_repeats", "sample_grid", "latent_dim",
    "fid_calibration_real", "fid_calibration_mean_image", "fid_calibration_noise",
)

register(Task(
    name="classify", settings=ClassifySettings, module="bench.tasks.classify", figures=(ACCURACY,), table=CLASSIFIERS,
    keys=(
        "test_accuracy", "test_loss", "train_accuracy", "train_loss", "generalization_gap",
        "curve_test_accuracy", "curve_test_loss", "curve_train_accuracy", "curve_train_loss",
        "infer_throughput", "infer_throughput_iqr", "infer_throughput_repeats",
        "target_accuracy", "epochs_to_target", "time_to_target_s",
    ),
    data_parallel=True, training_flops_factor=3,
))
register(Task(
    name="vae", settings=VaeSettings, module="bench.tasks.vae", figures=(FID, NLL), table=GENERATORS,
    keys=(
        *GENERATOR_KEYS, "encoder_params", "test_neg_elbo", "test_reconstruction", "test_kl", "test_nll",
        "train_loss", "curve_train_loss", "curve_test_neg_elbo", "likelihood", "gaussian_std", "iwae_samples",
    ),
    generative=True,
))
register(Task(
    name="gan", settings=GanSettings, module="bench.tasks.gan", figures=(FID,), table=GENERATORS,
    keys=(
        *GENERATOR_KEYS, "discriminator_params", "d_loss", "g_loss", "curve_d_loss", "curve_g_loss",
        "collapse_loss", "collapse_steps",
    ),
    generative=True,
))
