"""Every task's settings: the suite's `[classify]`, `[vae]`, `[gan]` and `[fid]` tables as frozen dataclasses.

Plain data with their own validation (`problems()`); this module imports nothing else from the project, nor
torch, so that configuration, the task table and reading results stay light.
"""

from __future__ import annotations

from dataclasses import dataclass

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True, kw_only=True)
class TrainingSettings:
    """Training budget and optimizer of one task, read from the suite's table for that task.

    The budget is `epochs`, or instead (then `epochs` is ignored) seconds of training (`budget_s`) or training
    FLOPs (`budget_flops`, counted on one training step of the eager model) per architecture: equal compute
    rather than equal passes over the data."""

    epochs: int = 10
    budget_s: float | None = None
    budget_flops: float | None = None
    batch_size: int = 100
    optimizer: str = "sgd"
    lr: float = 0.001
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    schedule: str = "constant"

    @property
    def budgeted(self) -> bool:
        """Whether training stops at a budget of seconds or FLOPs rather than after `epochs`."""
        return self.budget_s is not None or self.budget_flops is not None

    def problems(self) -> list[str]:
        """Human-readable reasons these settings are impossible; empty when they are fine."""
        found = []
        if self.epochs < 1:
            found.append(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            found.append(f"batch_size must be at least 1, got {self.batch_size}")
        for name in ("budget_s", "budget_flops"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                found.append(f"{name} must be positive, got {getattr(self, name):g}")
        if self.budget_s is not None and self.budget_flops is not None:
            found.append("give budget_s or budget_flops, not both")
        if self.budget_s is not None and self.schedule == "cosine":
            found.append("a cosine schedule needs the number of steps in advance: use epochs or budget_flops with it, not budget_s")
        if self.lr <= 0:
            found.append(f"lr must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1:
            found.append(f"momentum must be in [0, 1), got {self.momentum}")
        if not all(0 <= beta < 1 for beta in self.betas):
            found.append(f"betas must both be in [0, 1), got {list(self.betas)}")
        if self.weight_decay < 0:
            found.append(f"weight_decay must not be negative, got {self.weight_decay}")
        if self.optimizer not in OPTIMIZERS:
            found.append(f"unknown optimizer {self.optimizer!r} (valid: {', '.join(OPTIMIZERS)})")
        if self.schedule not in SCHEDULES:
            found.append(f"unknown schedule {self.schedule!r} (valid: {', '.join(SCHEDULES)})")
        return found

    def model_overrides(self) -> dict[str, object]:
        """Keyword arguments the harness passes to the builder of every architecture of this task; none here."""
        return {}


@dataclass(frozen=True, kw_only=True)
class ClassifySettings(TrainingSettings):
    """The suite's `[classify]` table. Defaults are the reference setup: SGD lr 0.001 momentum 0.9, batch 100."""

    target_accuracy: float | None = None
    eval_batch_size: int = 1000

    def problems(self) -> list[str]:
        found = super().problems()
        if self.target_accuracy is not None and not 0 < self.target_accuracy <= 1:
            found.append(f"target_accuracy must be in (0, 1], got {self.target_accuracy}")
        if self.eval_batch_size < 1:
            found.append(f"eval_batch_size must be at least 1, got {self.eval_batch_size}")
        return found


@dataclass(frozen=True, kw_only=True)
class GenerativeSettings(TrainingSettings):
    """Settings every generator task has: the latent size given to every builder, and the evaluation batch."""

    latent_dim: int = 16
    eval_batch_size: int = 1000

    def problems(self) -> list[str]:
        found = super().problems()
        if self.latent_dim < 1:
            found.append(f"latent_dim must be at least 1, got {self.latent_dim}")
        if self.eval_batch_size < 1:
            found.append(f"eval_batch_size must be at least 1, got {self.eval_batch_size}")
        return found

    def model_overrides(self) -> dict[str, object]:
        return {"latent_dim": self.latent_dim}


LIKELIHOODS = ("bernoulli", "gaussian")


@dataclass(frozen=True, kw_only=True)
class VaeSettings(GenerativeSettings):
    """The suite's `[vae]` table. Defaults: Adam lr 0.001, latent size 16, Bernoulli pixels, IWAE with k = 100."""

    optimizer: str = "adam"
    lr: float = 0.001
    likelihood: str = "bernoulli"
    gaussian_std: float = 0.1
    iwae_samples: int = 100

    def problems(self) -> list[str]:
        found = super().problems()
        if self.likelihood not in LIKELIHOODS:
            found.append(f"unknown likelihood {self.likelihood!r} (valid: {', '.join(LIKELIHOODS)})")
        if self.gaussian_std <= 0:
            found.append(f"gaussian_std must be positive, got {self.gaussian_std}")
        if self.iwae_samples < 1:
            found.append(f"iwae_samples must be at least 1, got {self.iwae_samples}")
        return found


@dataclass(frozen=True, kw_only=True)
class GanSettings(GenerativeSettings):
    """The suite's `[gan]` table. Defaults: DCGAN's batch 128, Adam lr 2e-4, betas (0.5, 0.999), latent size 100."""

    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 0.0002
    betas: tuple[float, float] = (0.5, 0.999)
    latent_dim: int = 100
    collapse_loss: float = 0.01
    collapse_steps: int = 100
    ema: float = 0.0  # decay of the moving average of the generator that is judged; 0: the generator as trained

    def problems(self) -> list[str]:
        found = super().problems()
        if self.collapse_loss < 0:
            found.append(f"collapse_loss must not be negative, got {self.collapse_loss}")
        if self.collapse_steps < 1:
            found.append(f"collapse_steps must be at least 1, got {self.collapse_steps}")
        if not 0 <= self.ema < 1:
            found.append(f"ema must be in [0, 1), got {self.ema}")
        return found


@dataclass(frozen=True, kw_only=True)
class FidSettings(TrainingSettings):
    """The suite's `[fid]` table: the reference classifier, its training, and KID's subsets.

    `classifier` names a registered classify architecture; it trains with these settings (defaults: Adam,
    cosine schedule, 5 epochs of batch 128) at `seed` on the run's training split, once: later runs load it
    from `cache_dir` (default `$ARCHBENCH_FID_CACHE`, else ~/.cache/archbench/fid). KID averages
    `kid_subsets` subsets of `kid_subset_size` images (fewer when a set is smaller).
    """

    classifier: str = "cnn-bn"
    seed: int = 0
    epochs: int = 5
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 0.001
    schedule: str = "cosine"
    eval_batch_size: int = 1000
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    cache_dir: str | None = None

    def problems(self) -> list[str]:
        found = super().problems()
        if self.eval_batch_size < 1:
            found.append(f"eval_batch_size must be at least 1, got {self.eval_batch_size}")
        if self.kid_subsets < 1:
            found.append(f"kid_subsets must be at least 1, got {self.kid_subsets}")
        if not 0 <= self.seed < 2**63:
            found.append(f"seed must be a whole number from 0 to 2**63 - 1, got {self.seed}")
        if self.kid_subset_size < 2:
            found.append(f"kid_subset_size must be at least 2, got {self.kid_subset_size}")
        return found
