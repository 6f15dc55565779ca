"""One training/evaluation loop per task. Each module offers `Settings` (its suite table) and
`run(model, data, settings, context, record)`, which fills `record` with quality and cost figures."""

from types import ModuleType

from . import classify, gan, vae

TASKS: dict[str, ModuleType] = {"classify": classify, "vae": vae, "gan": gan}
