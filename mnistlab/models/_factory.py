"""Building models by name (built in, a plugin, or an import path), with every mistake as one clear UserError."""

from __future__ import annotations

import math
from typing import Any

from ..errors import UserError, did_you_mean, one_line
from ._registry import ModelLookupError, model_entrypoint, model_names, model_options, plugin_names

LAYER_KINDS = ("conv", "maxpool", "linear", "batchnorm", "dropout")


def check_model(name: str, kwargs: dict[str, Any] | None = None) -> None:
    """The name resolves to a builder and every option is one its builder takes."""
    builder(name)
    options = model_options(name)
    for key, value in (kwargs or {}).items():
        if key not in options:
            allowed = ", ".join(options) or "none"
            raise UserError(f"model.{key}: unknown option for model {name!r}; its options: {allowed}"
                            f"{did_you_mean(key, options)}")
        wanted = option_kind(options[key])
        if wanted and not fits(value, wanted):
            raise UserError(f"model.{key}: got {one_line(repr(value), 80)}; model {name!r} takes {wanted} here "
                            f"(default {options[key]!r})")


def builder(name: str):
    """The builder function of a built-in model, a plugin or an import path; one line when there is none."""
    try:
        found = model_entrypoint(name)
    except ModelLookupError as exc:
        raise UserError(f"model.name: {one_line(exc)}") from None
    if found is None:
        hint = did_you_mean(name, model_names() + plugin_names()) or \
            "; `mnistlab models` lists them, or give an import path package.module:function"
        raise UserError(f"model.name: got {name!r}; unknown model{hint}")
    return found


def option_kind(default) -> str | None:
    """What a builder option takes, read from its default (None: a path or text, or nothing)."""
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "a whole number"
    if isinstance(default, float):
        return "a finite number"
    return "text or null" if default is None or isinstance(default, str) else None


def fits(value, kind: str) -> bool:
    if kind == "true or false":
        return isinstance(value, bool)
    if kind == "a whole number":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "a finite number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return value is None or isinstance(value, str)


def create_model(name: str, num_classes: int = 10, in_channels: int = 1, **kwargs: Any):
    from torch import nn

    check_model(name, kwargs)
    try:
        model = builder(name)(num_classes=num_classes, in_channels=in_channels, **kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"model {name!r} with options {kwargs}: {one_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"model.name: {name!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def meta_model(name: str, num_classes: int = 10, in_channels: int = 1, **kwargs: Any):
    """The model on the meta device: shapes without storage, so VGG16's 134M weights cost nothing."""
    import warnings

    import torch

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_model(name, num_classes=num_classes, in_channels=in_channels, **kwargs)


def count_params(name: str, num_classes: int = 10, in_channels: int = 1, **kwargs: Any) -> int:
    model = meta_model(name, num_classes, in_channels, **kwargs)
    return sum(p.numel() for p in model.parameters())


def layer_counts(model) -> dict[str, int]:
    """Module counts by kind, as the seven-iteration study's table reports them (ReLU and Flatten are
    not layers there)."""
    from torch import nn

    kinds = {"conv": (nn.Conv2d,), "maxpool": (nn.MaxPool2d,), "linear": (nn.Linear,),
             "batchnorm": (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d),
             "dropout": (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)}
    return {kind: sum(isinstance(m, types) for m in model.modules()) for kind, types in kinds.items()}
