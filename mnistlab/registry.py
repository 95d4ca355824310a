"""The model registry: `@register_model`, `create_model(name, ...)`, `list_models("iter*")`.

A builder is a plain function `name(num_classes=10, in_channels=1, **options) -> nn.Module`;
its first docstring line is the model's one-line description.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from typing import Any, Callable

from .errors import UserError

_BUILDERS: dict[str, Callable] = {}


def register_model(builder: Callable) -> Callable:
    name = builder.__name__
    if name in _BUILDERS:
        raise ValueError(f"model {name!r} is registered twice")
    _BUILDERS[name] = builder
    return builder


def _builtin_models() -> dict[str, Callable]:
    from . import models  # noqa: F401  (registers the built-in models on import)

    return _BUILDERS


def list_models(pattern: str = "*") -> list[str]:
    return sorted(n for n in _builtin_models() if fnmatch.fnmatchcase(n, pattern))


def model_description(name: str) -> str:
    doc = inspect.getdoc(get_builder(name)) or ""
    return doc.splitlines()[0] if doc else ""


def get_builder(name: str) -> Callable:
    builders = _builtin_models()
    if name not in builders:
        close = difflib.get_close_matches(name, list(builders), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else "; `mnistlab models` lists them"
        raise UserError(f"model.name: got {name!r}; unknown model{hint}")
    return builders[name]


def model_options(name: str) -> dict[str, Any]:
    """The builder's own options and their defaults (num_classes and in_channels excluded)."""
    params = inspect.signature(get_builder(name)).parameters.values()
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: p.default for p in params
            if p.kind in named and p.name not in ("num_classes", "in_channels")}


def check_model_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    options = model_options(name)
    for key in kwargs:
        if key not in options:
            allowed = ", ".join(options) or "none"
            close = difflib.get_close_matches(key, list(options), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"model.{key}: unknown option for model {name!r}; its options: {allowed}{hint}")


def create_model(name: str, num_classes: int = 10, in_channels: int = 1, **kwargs: Any):
    builder = get_builder(name)
    check_model_kwargs(name, kwargs)
    try:
        return builder(num_classes=num_classes, in_channels=in_channels, **kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"model {name!r} with options {kwargs}: {exc}") from None


def count_params(name: str, num_classes: int = 10, in_channels: int = 1, **kwargs: Any) -> int:
    """Count without allocating: VGG16's 134M weights are built on the meta device."""
    import warnings

    import torch

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_model(name, num_classes=num_classes, in_channels=in_channels, **kwargs)
    return sum(p.numel() for p in model.parameters())
