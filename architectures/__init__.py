"""WHAT archbench compares: the registry and the built-in architecture definitions."""

from .registry import (
    ArchSpec,
    PluginError,
    UnknownArchitecture,
    create,
    get_spec,
    list_architectures,
    load_entry_points,
    load_module,
    register,
    resolve,
)
from . import cnn, gan, googlenet, resnet, vae, vgg  # noqa: E402,F401  (their decorators fill the registry)

__all__ = [
    "ArchSpec",
    "PluginError",
    "UnknownArchitecture",
    "create",
    "get_spec",
    "list_architectures",
    "load_entry_points",
    "load_module",
    "register",
    "resolve",
]
