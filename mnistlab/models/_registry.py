"""The model registry: names to builder functions. Imports nothing from mnistlab.

A builder is a plain function `name(num_classes=10, in_channels=1, **options) -> nn.Module`;
its first docstring line is the model's one-line description. Registration runs one way, as
in timm: model modules import `register_model` from here, and `mnistlab.models` imports the
model modules, so every built-in model is registered before anyone looks one up.
"""

from __future__ import annotations

import fnmatch
import inspect
from typing import Any, Callable

_BUILDERS: dict[str, Callable] = {}


def register_model(builder: Callable) -> Callable:
    name = builder.__name__
    if name in _BUILDERS:
        raise ValueError(f"model {name!r} is registered twice")
    _BUILDERS[name] = builder
    return builder


def model_names() -> list[str]:
    return sorted(_BUILDERS)


def list_models(pattern: str = "*") -> list[str]:
    return [n for n in model_names() if fnmatch.fnmatchcase(n, pattern)]


def model_entrypoint(name: str) -> Callable | None:
    return _BUILDERS.get(name)


def model_description(name: str) -> str:
    doc = inspect.getdoc(_BUILDERS[name]) or ""
    return doc.splitlines()[0] if doc else ""


def model_options(name: str) -> dict[str, Any]:
    """The builder's own options and their defaults (num_classes and in_channels excluded)."""
    params = inspect.signature(_BUILDERS[name]).parameters.values()
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: p.default for p in params
            if p.kind in named and p.name not in ("num_classes", "in_channels")}
