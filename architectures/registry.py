"""The architecture registry: a name -> ArchSpec table filled by the `register` decorator.

Models are plain `nn.Module`s built by a function `build(input_shape, num_classes, **overrides)`.
Outside packages add entries through the `archbench.architectures` entry-point group, or by being
imported (their decorators run on import).
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

from torch import nn

from . import zoo

ENTRY_POINT_GROUP = "archbench.architectures"
MANY_ZOO_MODELS = 20  # a command runs a zoo pattern matching more models than this only when confirmed (--yes)


@dataclass(frozen=True)
class ArchSpec:
    name: str
    task: str
    family: str
    build: Callable[..., nn.Module]
    description: str
    source: str
    source_hash: str | None = None

    @property
    def provenance(self) -> dict[str, str | None]:
        """Where the builder came from: its file and line, and a short hash of its source code."""
        return {"architecture_source": self.source, "architecture_source_hash": self.source_hash}


class UnknownArchitecture(KeyError):
    """Raised for a name or pattern that matches no registered architecture."""

    def __str__(self) -> str:
        return self.args[0]


class PluginError(RuntimeError):
    """Raised when a plugin module (an entry point, or a module given by name or path) fails to load."""


_REGISTRY: dict[str, ArchSpec] = {}
_entry_points_loaded = False


def register(name: str, *, task: str, family: str, description: str = ""):
    """Decorator registering `build(input_shape, num_classes, **overrides) -> nn.Module` as `name`.

    `task` names the entry of bench's task table that runs it (classify, vae, gan, or a plugin's own); bench
    refuses to run an architecture whose task it has no entry for. Registering a name twice from two places
    raises ValueError naming both.
    """

    def decorator(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        source = _source_of(build)
        if name in _REGISTRY and _REGISTRY[name].source != source:  # the same file imported again replaces it
            raise ValueError(
                f"architecture {name!r} registered twice: {_REGISTRY[name].source} and {source}"
            )
        doc = description or (inspect.getdoc(build) or "").split("\n")[0]
        _REGISTRY[name] = ArchSpec(name, task, family, build, doc, source, _source_hash(build))
        return build

    return decorator


def list_architectures(pattern: str | list[str] = "*", task: str | None = None) -> list[str]:
    """Sorted names matching the shell-style pattern(s), optionally only those of `task`. A pattern of a zoo
    (`torchvision:res*`, `timm:convnext_*`) matches that zoo's models (architectures.zoo); `*` only the registry's."""
    load_entry_points()
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    found = {
        name
        for name, spec in _REGISTRY.items()
        if (task is None or spec.task == task) and any(fnmatch.fnmatchcase(name, p) for p in patterns)
    }
    if task in (None, zoo.TASK):
        try:
            found.update(name for p in patterns if zoo.is_zoo_name(p) for name in zoo.names(p))
        except zoo.ZooError as error:
            raise UnknownArchitecture(str(error)) from None
    return sorted(found)


def resolve(patterns: list[str], task: str | None = None) -> list[str]:
    """Names matching `patterns` in the order given; a pattern matching nothing raises UnknownArchitecture."""
    names: list[str] = []
    for pattern in patterns:
        matched = list_architectures(pattern, task)
        if not matched and zoo.is_zoo_name(pattern):
            if not any(c in pattern for c in "*?["):
                get_spec(pattern)  # says which models are close
            zoo_name = pattern.partition(":")[0]
            raise UnknownArchitecture(f"no {zoo_name} model matches {pattern!r} (list them: archbench list '{zoo_name}:*')")
        if not matched:
            valid = ", ".join(list_architectures(task=task))
            raise UnknownArchitecture(f"unknown architecture {pattern!r} (valid: {valid})")
        names += [n for n in matched if n not in names]
    return names


def many_zoo_models(patterns: list[str]) -> list[tuple[str, int]]:
    """(pattern, how many models it matches) for each zoo pattern among `patterns` that matches more than
    MANY_ZOO_MODELS, which a command running them asks to be confirmed; other patterns are not looked up.
    UnknownArchitecture for a zoo prefix with no name after it, or a zoo that is not installed."""
    try:
        counts = [(p, len(zoo.names(p))) for p in patterns if zoo.is_zoo_name(p)]
    except zoo.ZooError as error:
        raise UnknownArchitecture(str(error)) from None
    return [(pattern, count) for pattern, count in counts if count > MANY_ZOO_MODELS]


def get_spec(name: str) -> ArchSpec:
    """The spec of a registered architecture or of a zoo model (`torchvision:resnet50`); UnknownArchitecture if none."""
    load_entry_points()
    if zoo.is_zoo_name(name) and name not in _REGISTRY:
        return _zoo_spec(name)
    if name not in _REGISTRY:
        raise UnknownArchitecture(f"unknown architecture {name!r} (valid: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def create(name: str, input_shape: tuple[int, ...], num_classes: int = 10, **overrides) -> nn.Module:
    """Build architecture `name` for inputs of `input_shape` (C, H, W) and `num_classes` classes."""
    return get_spec(name).build(tuple(input_shape), num_classes, **overrides)


@functools.lru_cache(maxsize=None)
def _zoo_spec(name: str) -> ArchSpec:
    try:
        build, original = zoo.builder(name)
    except zoo.ZooError as error:
        raise UnknownArchitecture(str(error)) from None
    family = name.partition(":")[0]
    description = f"{family} {zoo.version(family)} {name.partition(':')[2]}, untrained"
    original = inspect.unwrap(original)  # torchvision wraps its builders
    return ArchSpec(name, zoo.TASK, family, build, description, zoo.source_of(original), _source_hash(original))


def load_entry_points() -> None:
    """Import every module advertised under the `archbench.architectures` entry-point group, once."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry_point.load()
            if callable(loaded) and not inspect.ismodule(loaded):
                loaded()
        except Exception as error:
            raise PluginError(
                f"entry point {entry_point.name} = {entry_point.value} ({ENTRY_POINT_GROUP}) failed to load: "
                f"{type(error).__name__}: {error}"
            ) from error


def load_module(name: str) -> None:
    """Import a module whose decorators register architectures: a dotted name (found from the current
    folder too) or a path to a .py file. Raises PluginError, on one line, for anything that goes wrong.

    A .py file is imported under a private module name derived from its path, so no file name (bench.py,
    torchvision.py) can replace a module already imported; importing the same file twice does nothing.
    """
    try:
        if name.endswith(".py"):
            path = Path(name).resolve()
            if not path.is_file():
                raise FileNotFoundError(f"no such file {path}")
            private = "archbench_user_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
            if private in sys.modules:
                return
            spec = importlib.util.spec_from_file_location(private, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[private] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[private]
                raise
        else:
            if "" not in sys.path and "." not in sys.path:
                sys.path.insert(0, "")
            importlib.import_module(name)
    except SystemExit as error:
        raise PluginError(f"--arch-module {name}: exited on import (sys.exit({error.code!r}))") from None
    except Exception as error:  # any failure of the user's module is reported on one line
        raise PluginError(f"--arch-module {name}: {type(error).__name__}: {error}") from None


def _source_hash(fn: Callable) -> str | None:
    try:
        return hashlib.sha1(inspect.getsource(fn).encode()).hexdigest()[:12]
    except (OSError, TypeError):
        return None


def _source_of(fn: Callable) -> str:
    try:
        return f"{inspect.getsourcefile(fn)}:{inspect.getsourcelines(fn)[1]}"
    except (OSError, TypeError):
        return f"{fn.__module__}.{fn.__qualname__}"
