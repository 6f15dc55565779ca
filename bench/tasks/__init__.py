"""The task table: every task archbench runs, one entry each, and the figures records are judged by.

An entry names the task's settings (its suite table), the module of its parts (`parts(model, data, settings,
context, record)`, which `Task.run` hands to the one sequence, bench.tasks.sequence; imported only when a task
runs), the report table it appears in, the keys its
records add and what it needs (the FID reference classifier; whether it can train data-parallel). `FIGURES`
says how each judged figure is judged. The runner, configuration, record schema, aggregation, report, compare,
ab and the data-parallel launcher read this table; adding a task is one entry. Importing it imports no torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from .settings import ClassifySettings, GanSettings, TrainingSettings, VaeSettings


@dataclass(frozen=True)
class Figure:
    """A judged figure: `quality` (absolute tolerance in `unit` after `scale`), `cost` (relative, timed: the A/B
    gate pairs it), `structure` (exact).

    `repeats` names the record key holding every repeat (the spread); `speed` figures are divided by the
    reference architecture's from the same run.
    """

    key: str
    kind: str
    higher_is_better: bool = True
    scale: float = 1.0
    unit: str = ""
    repeats: str | None = None
    speed: bool = False
    floor: str | None = None  # tolerance key of an absolute change below which a cost change is "ok"


FIGURES = (
    Figure("test_accuracy", "quality", True, 100, " pts"),
    Figure("fid", "quality", False),
    Figure("test_nll", "quality", False, unit=" nats"),
    Figure("train_throughput", "cost", True, repeats="train_throughput_repeats", speed=True),
    Figure("infer_throughput", "cost", True, repeats="infer_throughput_repeats", speed=True),
    Figure("generate_throughput", "cost", True, repeats="generate_throughput_repeats", speed=True),
    Figure("latency_p50_ms", "cost", False, repeats="latency_p50_ms_repeats", speed=True),
    Figure("peak_memory_mb", "cost", False, floor="peak_memory_min_mb"),
    Figure("params", "structure"),
    Figure("generator_params", "structure"),
    Figure("discriminator_params", "structure"),
    Figure("flops_per_sample", "structure"),
)


@dataclass(frozen=True)
class Task:
    """One task: its settings class, its loop's module, its report table (`view`), the record keys its loop
    adds, whether its quality is an FID (which needs the cached reference classifier) and whether it can
    train data-parallel, and what its training step costs in forward passes of the model whose FLOPs its
    records count (None where it is no multiple of them: a GAN's step runs two networks)."""

    name: str
    settings: type[TrainingSettings]
    module: str
    view: str
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


GENERATOR_KEYS = (
    "generator_params", "fid", "kid", "kid_std", "fid_samples", "fid_features", "fid_classifier",
    "fid_classifier_accuracy", "fid_classifier_cached", "fid_classifier_file", "generate_throughput",
    "generate_throughput_iqr", "generate_throughput_repeats", "sample_grid", "latent_dim",
    "fid_calibration_real", "fid_calibration_mean_image", "fid_calibration_noise",
)

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task(
            "classify", ClassifySettings, "bench.tasks.classify", "classify",
            (
                "test_accuracy", "test_loss", "train_accuracy", "train_loss", "generalization_gap",
                "curve_test_accuracy", "curve_test_loss", "curve_train_accuracy", "curve_train_loss",
                "infer_throughput", "infer_throughput_iqr", "infer_throughput_repeats",
                "target_accuracy", "epochs_to_target", "time_to_target_s",
            ),
            data_parallel=True,
            training_flops_factor=3,
        ),
        Task(
            "vae", VaeSettings, "bench.tasks.vae", "generators",
            (
                *GENERATOR_KEYS, "encoder_params", "test_neg_elbo", "test_reconstruction", "test_kl", "test_nll",
                "train_loss", "curve_train_loss", "curve_test_neg_elbo", "likelihood", "gaussian_std", "iwae_samples",
            ),
            generative=True,
        ),
        Task(
            "gan", GanSettings, "bench.tasks.gan", "generators",
            (
                *GENERATOR_KEYS, "discriminator_params", "d_loss", "g_loss", "curve_d_loss", "curve_g_loss",
                "collapse_loss", "collapse_steps",
            ),
            generative=True,
        ),
    )
}
