"""Suites (TOML files) and command-line flags -> one validated RunConfig."""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import architectures

from .measure.modes import Mode, compile_backends, parse
from . import tomlfile
from .results import store
from .errors import UserError
from .measure.timing import MeasureSettings
from .tasks import TASKS
from .tasks.settings import FidSettings, TrainingSettings
from .data.folder import FOLDER_PREFIX, FolderSettings

SUITES_DIR = Path(__file__).parent / "suites"
DEFAULT_SUITE = "quick"

_TOP_LEVEL = {
    "description": str,
    "dataset": str,
    "architectures": list,
    "seeds": list,
    "limit_train": int,
    "limit_test": int,
    "arch_timeout": (int, float),
    "modes": list,
    "compile_backend": str,
    "reference": str,
}
_KIND_NAMES = {
    "description": "a string",
    "dataset": "a string",
    "architectures": "a list of names",
    "seeds": "a list of whole numbers",
    "limit_train": "a whole number",
    "limit_test": "a whole number",
    "arch_timeout": "a number of seconds",
    "modes": "a list of modes (e.g. [\"fp32\", \"bf16+channels_last\"])",
    "compile_backend": "a torch.compile backend name",
    "reference": "an architecture's name",
}
MAX_SEED = 2**63 - 1  # torch.manual_seed takes any 64-bit value; seeds are recorded as JSON integers


@dataclass(kw_only=True)
class RunConfig:
    """Everything one `archbench run` does: which architectures, on what data, under which settings."""

    suite: str = DEFAULT_SUITE
    description: str = ""
    dataset: str = "synthetic"
    architectures: list[str] = field(default_factory=lambda: ["*"])
    seeds: list[int] = field(default_factory=lambda: [0])
    limit_train: int | None = None
    limit_test: int | None = None
    arch_timeout: float | None = None  # seconds one (architecture, mode, seed) may take in its own process
    modes: list[str] = field(default_factory=lambda: ["fp32"])  # bench.measure.modes syntax; the first is the reference
    compile_backend: str = "inductor"
    reference: str | None = None  # the architecture the report compares every other one with (default: each table's first)
    tasks: dict[str, TrainingSettings] = field(default_factory=lambda: {n: t.settings() for n, t in TASKS.items()})
    # task -> architecture name or wildcard -> the settings it changes: a suite's `[classify.resnet18]` tables
    per_architecture: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    fid: FidSettings = field(default_factory=FidSettings)
    data: FolderSettings = field(default_factory=FolderSettings)  # the `[data]` table: how a folder dataset is read
    device: str = "auto"
    data_root: str | None = None
    download: bool = False
    out: Path = store.DEFAULT_OUT
    strict: bool = False
    quiet: bool = False

    def settings_of(self, name: str) -> TrainingSettings | None:
        """The settings architecture `name` trains with: its task's table, changed by each of the task's
        per-architecture tables whose name or wildcard matches `name`, in the suite's order."""
        task = architectures.get_spec(name).task
        if task not in self.tasks:
            return None
        tables = self.per_architecture.get(task, {})
        changes = {k: v for pattern, table in tables.items() if fnmatch.fnmatchcase(name, pattern) for k, v in table.items()}
        return dataclasses.replace(self.tasks[task], **changes)


def suite_names() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))


def suite_path(name: str) -> Path:
    """The file of a built-in suite `name`, or `name` itself when it is a path to a .toml file."""
    if name.endswith(".toml") or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise UserError(f"suite file {name} does not exist")
        return path
    path = SUITES_DIR / f"{name}.toml"
    if not path.is_file():
        raise UserError(f"unknown suite {name!r} (valid: {', '.join(suite_names())}, or a path to a .toml file)")
    return path


def load(suite: str = DEFAULT_SUITE, **overrides: Any) -> RunConfig:
    """The RunConfig of `suite`, with `overrides` (command-line values; None means "not given") applied on top.

    Each override is named as what it sets: a field of RunConfig; a training setting of every task (`epochs`,
    `batch_size`: per-architecture tables included); or a key of the `[data]` table (a folder dataset's). Raises
    UserError for a malformed suite or impossible settings, TypeError for a name that sets nothing.
    """
    path = suite_path(suite)
    config = _from_table(tomlfile.read(path, "suite"), path)
    config.suite = path.stem
    given = {key: value for key, value in overrides.items() if value is not None}
    top, training, data = (
        {f.name for f in dataclasses.fields(cls)} for cls in (RunConfig, TrainingSettings, FolderSettings)
    )
    unknown = set(overrides) - top - training - data
    if unknown:
        raise TypeError(f"configs.load: no setting named {sorted(unknown)[0]!r}")
    for key in given.keys() & top:
        setattr(config, key, given[key])
    config = overridden(config, **{key: given[key] for key in given.keys() - top if key in training})
    changes = {key: given[key] for key in given.keys() - top - training}
    config.data = _checked(dataclasses.replace(config.data, **changes), "[data]")
    _check(config)
    return config


def overridden(config: RunConfig, **changes: Any) -> RunConfig:
    """A copy of `config` whose every task's training settings take `changes` (e.g. `epochs`, `batch_size`),
    per-architecture tables included; UserError for settings that become impossible."""
    tasks = {name: _checked(dataclasses.replace(settings, **changes), f"[{name}]") for name, settings in config.tasks.items()}
    tables = {
        task: {pattern: {k: v for k, v in table.items() if k not in changes} for pattern, table in by_name.items()}
        for task, by_name in config.per_architecture.items()
    }
    return dataclasses.replace(config, tasks=tasks, per_architecture=tables)


def _from_table(table: dict[str, Any], path: Path) -> RunConfig:
    config = RunConfig()
    sections = {"measure", "fid", "data", *TASKS}
    for key, value in table.items():
        if key in sections:
            if not isinstance(value, dict):
                raise UserError(f"suite {path}: {key} must be a table ([{key}])")
        elif key not in _TOP_LEVEL:
            valid = ", ".join([*_TOP_LEVEL, *(f"[{s}]" for s in sorted(sections))])
            raise UserError(f"suite {path}: unknown key {key!r} (valid: {valid})")
        elif not isinstance(value, _TOP_LEVEL[key]) or isinstance(value, bool):
            raise UserError(f"suite {path}: {key} must be {_KIND_NAMES[key]}, got {value!r}")
        else:
            setattr(config, key, value)
    for name, task in TASKS.items():
        where, section = f"suite {path}: [{name}]", table.get(name, {})
        config.tasks[name] = _settings(task.settings, {k: v for k, v in section.items() if not isinstance(v, dict)}, where)
        config.per_architecture[name] = {
            pattern: _architecture_changes(config.tasks[name], name, pattern, changes, f"suite {path}: [{name}.{pattern}]")
            for pattern, changes in section.items() if isinstance(changes, dict)
        }
    config.measure = _settings(MeasureSettings, table.get("measure", {}), f"suite {path}: [measure]")
    config.fid = _fid_settings(table.get("fid", {}), f"suite {path}: [fid]")
    config.data = _settings(FolderSettings, table.get("data", {}), f"suite {path}: [data]")
    return config


def _settings(cls: type, table: dict[str, Any], where: str):
    """An instance of the settings dataclass `cls` from a TOML table, with keys and value types checked."""
    return _checked(cls(**_values(cls, table, where)), where)


def _values(settings: Any, table: dict[str, Any], where: str) -> dict[str, Any]:
    """A TOML table's values, each key checked to be a field of the settings dataclass (or instance) `settings`
    and each value against that field's type."""
    fields = {f.name: f for f in dataclasses.fields(settings)}
    values = {}
    for key, value in table.items():
        if key not in fields:
            raise UserError(f"{where}: unknown key {key!r} (valid: {', '.join(fields)})")
        values[key] = _typed(value, str(fields[key].type), f"{where} {key}")
    return values


def _architecture_changes(
    settings: TrainingSettings, task: str, pattern: str, table: dict[str, Any], where: str, named: bool = True
) -> dict[str, Any]:
    """The settings a per-architecture table `[task.pattern]` changes, keys and values checked, and the
    settings they make checked too; with `named`, `pattern` must match one of the task's architectures."""
    if named:
        valid = architectures.list_architectures(task=task)
        if not fnmatch.filter(valid, pattern):
            raise UserError(f"{where}: {pattern!r} matches no {task} architecture (valid: {', '.join(valid)})")
    changes = _values(settings, table, where)
    _checked(dataclasses.replace(settings, **changes), where)
    return changes


def _fid_settings(table: dict[str, Any], where: str) -> FidSettings:
    """The `[fid]` table's settings, its classifier checked against the registered classify architectures."""
    settings = _settings(FidSettings, table, where)
    classifiers = architectures.list_architectures(task="classify")
    if settings.classifier not in classifiers:
        raise UserError(f"{where}: unknown classifier {settings.classifier!r} (valid: {', '.join(classifiers)})")
    return settings


_KINDS = {"int": "a whole number", "float": "a finite number", "str": "a string", "bool": "true or false"}


def _typed(value: Any, annotation: str, where: str) -> Any:
    """`value` checked against a settings field's annotation (int, float, str, bool, `X | None`, `tuple[X, ...]`)."""
    if value is None and "None" in annotation:  # only from a run.json: TOML has no null
        return None
    if annotation.startswith("tuple["):
        kinds = [kind.strip() for kind in annotation[len("tuple[") : -1].split(",")]
        if not isinstance(value, (list, tuple)) or len(value) != len(kinds):
            raise UserError(f"{where} must be a list of {len(kinds)} {_KINDS[kinds[0]].removeprefix('a ')}s, got {value!r}")
        return tuple(_typed(item, kind, f"{where}[{i}]") for i, (item, kind) in enumerate(zip(value, kinds)))
    kind = annotation.split("|")[0].strip()
    ok = (
        (kind == "int" and isinstance(value, int) and not isinstance(value, bool))
        or (kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))
        or (kind == "str" and isinstance(value, str))
        or (kind == "bool" and isinstance(value, bool))
    )
    if not ok:
        raise UserError(f"{where} must be {_KINDS.get(kind, kind)}, got {value!r}")
    return float(value) if kind == "float" else value


def _checked(settings: Any, where: str) -> Any:
    problems = settings.problems() if hasattr(settings, "problems") else []
    if problems:
        raise UserError(f"{where}: {problems[0]}")
    return settings


def _check(config: RunConfig) -> None:
    if not config.seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in config.seeds):
        raise UserError(f"seeds must be a non-empty list of whole numbers, got {config.seeds!r}")
    for seed in config.seeds:
        if not 0 <= seed <= MAX_SEED:
            raise UserError(f"seed {seed} is out of range: seeds are whole numbers from 0 to 2**63 - 1")
    if len(set(config.seeds)) != len(config.seeds):
        raise UserError(f"seeds must be distinct, got {config.seeds!r}")
    if not config.architectures or not all(isinstance(a, str) for a in config.architectures):
        raise UserError(f"architectures must be a non-empty list of names, got {config.architectures!r}")
    for flag, limit in (("limit_train", config.limit_train), ("limit_test", config.limit_test)):
        if limit is not None and limit < 1:
            raise UserError(f"{flag} must be a positive number of samples, got {limit}")
    if not config.modes or not all(isinstance(m, str) for m in config.modes):
        raise UserError(f"modes must be a non-empty list of modes such as \"bf16+channels_last\", got {config.modes!r}")
    parsed = modes(config)
    if len({m.name for m in parsed}) != len(parsed):
        raise UserError(f"modes must be distinct, got {config.modes!r}")
    if any(m.compile for m in parsed) and config.compile_backend not in compile_backends():
        raise UserError(
            f"unknown compile_backend {config.compile_backend!r} (valid: {', '.join(compile_backends())})"
        )
    if not config.dataset.startswith(FOLDER_PREFIX) and config.data != FolderSettings():
        changed = [f.name for f in dataclasses.fields(FolderSettings) if getattr(config.data, f.name) != f.default]
        raise UserError(
            f"{', '.join(changed)}: [data] settings (--image-size, --workers, --data-path, --no-augment, "
            f"--skip-bad-images) apply to folder datasets (--dataset folder:PATH), not to {config.dataset}"
        )
    if config.arch_timeout is not None and not (config.arch_timeout > 0 and math.isfinite(config.arch_timeout)):
        raise UserError(f"arch_timeout must be a positive number of seconds, got {config.arch_timeout}")
    store.writable_folder(Path(config.out), "--out", create=False)


def modes(config: RunConfig) -> list[Mode]:
    """The run's modes, parsed (the first is the reference the report compares the others with)."""
    return [parse(text, config.compile_backend) for text in config.modes]


def from_dict(table: dict[str, Any]) -> RunConfig:
    """The RunConfig a run recorded in its run.json (`dataclasses.asdict` of it), for `archbench run --resume`."""
    plain = {f.name for f in dataclasses.fields(RunConfig)} - {"tasks", "per_architecture", "measure", "fid", "data", "out"}
    config = RunConfig(**{k: v for k, v in table.items() if k in plain})
    config.out = Path(table.get("out", store.DEFAULT_OUT))
    for name, settings in table.get("tasks", {}).items():
        if name in TASKS:
            config.tasks[name] = _settings(TASKS[name].settings, settings, f"[{name}]")
    for name, tables in table.get("per_architecture", {}).items():
        if name in TASKS:  # the architectures' plugins are not loaded yet: names are not checked again
            config.per_architecture[name] = {
                pattern: _architecture_changes(config.tasks[name], name, pattern, changes, f"[{name}.{pattern}]", named=False)
                for pattern, changes in tables.items()
            }
    config.measure = _settings(MeasureSettings, table.get("measure", {}), "[measure]")
    config.fid = _fid_settings(table.get("fid", {}), "[fid]")
    config.data = _settings(FolderSettings, table.get("data", {}), "[data]")
    return config
