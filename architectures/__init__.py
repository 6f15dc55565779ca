"""WHAT archbench compares: the registry and the built-in architecture definitions."""

from .registry import (
    MANY_ZOO_MODELS,
    ArchSpec,
    PluginError,
    UnknownArchitecture,
    create,
    get_spec,
    list_architectures,
    load_entry_points,
    load_module,
    many_zoo_models,
    register,
    resolve,
)
from . import cnn, gan, googlenet, resnet, vae, vgg  # noqa: E402,F401  (their decorators fill the registry)

__all__ = [
    "MANY_ZOO_MODELS",
    "ArchSpec",
    "PluginError",
    "UnknownArchitecture",
    "create",
    "get_spec",
    "list_architectures",
    "load_entry_points",
    "load_module",
    "many_zoo_models",
    "register",
    "resolve",
]
