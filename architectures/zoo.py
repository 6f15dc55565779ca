"""The field's model zoos by name: `torchvision:NAME` (its classification models) and `timm:NAME` (timm, the
optional extra `pip install -e '.[timm]'`), resolved on demand instead of being copied into the registry.

A zoo model is built untrained (no weights are downloaded; none could be fetched offline) for the data's
classes and input shape: torchvision's builders take `num_classes`, and `image_size` (the ViTs) or `input_size`
(MaxViT) where they fix one; timm's take `num_classes`, `in_chans` and, where the model fixes one, `img_size`.
For inputs of other than 3 channels, a torchvision model's stem convolution (its first, 3-channel one) is
rebuilt for that many channels, as timm's `in_chans` does. GoogLeNet and Inception-v3 are built without their
auxiliary classifiers (whose extra training-mode outputs no task's loss takes). A model that cannot be built for
the input shape fails with one line naming it and the shape; one that builds but cannot take it fails at the
task's first forward pass, also in one line.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import functools
import inspect
from typing import Callable

from torch import nn

ZOOS = ("torchvision", "timm")
TASK = "classify"


class ZooError(KeyError):
    """An unknown zoo model, or a zoo whose package is not installed: one line for the user."""

    def __str__(self) -> str:
        return self.args[0]


def is_zoo_name(name: str) -> bool:
    """Whether `name` (or pattern) names a zoo model: `torchvision:...` or `timm:...`."""
    return name.partition(":")[0] in ZOOS and ":" in name


def names(pattern: str) -> list[str]:
    """Sorted `zoo:model` names matching a pattern such as `torchvision:resnet*` or `timm:convnext_*`; ZooError
    for a zoo prefix with no name after it (`torchvision:`), which is not the whole zoo (`torchvision:*` is)."""
    zoo, model_pattern = _split(pattern)
    models = _torchvision_models() if zoo == "torchvision" else _timm().list_models()
    return sorted(f"{zoo}:{m}" for m in models if fnmatch.fnmatchcase(m, model_pattern))


def builder(name: str) -> tuple[Callable[..., nn.Module], Callable]:
    """(`build(input_shape, num_classes, **overrides)`, the zoo's own builder function) for `zoo:model`;
    ZooError naming close matches for a model the zoo does not have, or for no name after the zoo's prefix."""
    zoo, model = _split(name)
    if zoo == "torchvision":
        known = _torchvision_models()
        if model in known:
            import torchvision

            return functools.partial(_build_torchvision, model), torchvision.models.get_model_builder(model)
    else:
        timm = _timm()
        if timm.is_model(model):
            from timm.models import model_entrypoint

            return functools.partial(_build_timm, model), model_entrypoint(model.partition(".")[0])
        known = timm.list_models()
    close = difflib.get_close_matches(model, known, n=3)
    hint = f"; did you mean {', '.join(f'{zoo}:{c}' for c in close)}?" if close else ""
    raise ZooError(f"unknown architecture {name!r}: {zoo} has no such model (list them: archbench list '{zoo}:*'){hint}")


def version(zoo: str) -> str:
    """The installed version of the zoo's package."""
    from importlib import metadata

    return metadata.version(zoo)


def _split(name: str) -> tuple[str, str]:
    """(zoo, model or pattern) of a zoo name; ZooError where the model is empty or blank."""
    zoo, _, model = name.partition(":")
    if not model.strip():
        raise ZooError(f"{name!r} names no {zoo} model: give a name or a pattern (list them: archbench list '{zoo}:*')")
    return zoo, model


def _torchvision_models() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def _timm():
    try:
        import timm
    except ImportError:
        raise ZooError("timm models need timm, an optional extra: pip install -e '.[timm]' (or pip install timm)") from None
    return timm


# Settings of torchvision builders unless overridden: their initialization as it is by default (said, so that they
# do not warn), and no auxiliary classifiers, whose extra outputs in training mode no task's loss takes.
_DEFAULTS = {name: {"init_weights": True, "aux_logits": False} for name in ("googlenet", "inception_v3")}

# torchvision builders that fix the input size take it under these names (their module's)
_SIZE_ARGUMENT = {"torchvision.models.vision_transformer": "image_size", "torchvision.models.maxvit": "input_size"}


def _build_torchvision(model: str, input_shape: tuple[int, ...], num_classes: int, **overrides) -> nn.Module:
    import torchvision

    channels, height, width = input_shape
    kwargs = {"num_classes": num_classes, **overrides}
    size_argument = _SIZE_ARGUMENT.get(torchvision.models.get_model_builder(model).__module__)
    if size_argument == "image_size":
        if height != width:
            raise ValueError(f"torchvision:{model} takes square inputs only, not {height}x{width}")
        kwargs.setdefault("image_size", height)
    elif size_argument == "input_size":
        kwargs.setdefault("input_size", (height, width))
    kwargs = {**_DEFAULTS.get(model, {}), **kwargs}
    with _built_for(f"torchvision:{model}", input_shape):
        built = torchvision.models.get_model(model, weights=None, **kwargs)
        if channels != 3:
            _adapt_stem(built, channels)
    return built


def _build_timm(model: str, input_shape: tuple[int, ...], num_classes: int, **overrides) -> nn.Module:
    import timm

    channels, height, width = input_shape
    kwargs = {"pretrained": False, "num_classes": num_classes, "in_chans": channels, **overrides}
    with _built_for(f"timm:{model}", input_shape):
        try:
            built = timm.create_model(model, img_size=(height, width), **kwargs)
        except TypeError as error:  # a model that takes any input size has no img_size
            if "img_size" not in str(error):
                raise
            built = timm.create_model(model, **kwargs)
    return built


@contextlib.contextmanager
def _built_for(name: str, input_shape: tuple[int, ...]):
    """Any error building `name` as one line naming it and the input shape (ValueError)."""
    try:
        yield
    except Exception as error:
        raise ValueError(f"{name} cannot be built for {_shape(input_shape)} inputs: {_first_line(error)}") from None


def _shape(input_shape: tuple[int, ...]) -> str:
    return "x".join(map(str, input_shape))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def _adapt_stem(model: nn.Module, channels: int) -> None:
    """Rebuild `model`'s first 3-channel convolution for `channels` input channels (untrained, as the rest)."""
    for path, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3 and module.groups == 1:
            parent, _, attribute = path.rpartition(".")
            stem = nn.Conv2d(
                channels, module.out_channels, module.kernel_size, module.stride, module.padding, module.dilation,
                bias=module.bias is not None, padding_mode=module.padding_mode,
            )
            setattr(model.get_submodule(parent), attribute, stem)
            return
    raise ValueError(f"found no 3-channel input convolution to rebuild for {channels}-channel inputs")


def source_of(function: Callable) -> str:
    """Where a zoo's builder lives, as file:line."""
    try:
        return f"{inspect.getsourcefile(function)}:{inspect.getsourcelines(function)[1]}"
    except (OSError, TypeError):
        return f"{function.__module__}.{function.__qualname__}"
