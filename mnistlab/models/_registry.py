"""The model registry: names to builder functions. Imports nothing from mnistlab.

A builder is a plain function `name(num_classes=10, in_channels=1, **options) -> nn.Module`;
its first docstring line is the model's one-line description. Registration runs one way, as
in timm: model modules import `register_model` from here, and `mnistlab.models` imports the
model modules, so every built-in model is registered before anyone looks one up.

Two more kinds of name resolve here, each to a builder of the same shape: an import path
`package.module:function`, and a plugin, a name a third-party package declares in the entry-point
group `mnistlab.models` (`[project.entry-points."mnistlab.models"] mynet = "pkg.mod:build"`).
A name that does not resolve raises ModelLookupError with a one-line reason.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
from importlib import metadata
from typing import Any, Callable

_BUILDERS: dict[str, Callable] = {}
ENTRY_POINT_GROUP = "mnistlab.models"


class ModelLookupError(LookupError):
    """A model name that names no builder (the message is one line)."""


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


def plugin_names() -> list[str]:
    """The names installed packages declare in the `mnistlab.models` entry-point group (none loaded)."""
    return sorted({ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)} - set(_BUILDERS))


def is_import_path(name: str) -> bool:
    return ":" in name


def model_entrypoint(name: str) -> Callable | None:
    """The builder a name resolves to; None for a name that is neither built in, a plugin nor an import path.

    A plugin or an import path that is declared but cannot be loaded raises ModelLookupError.
    """
    if name in _BUILDERS:
        return _BUILDERS[name]
    if is_import_path(name):
        return _imported(name)
    found = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    return _plugin(found[0]) if found else None


def _imported(name: str) -> Callable:
    module_name, _, attr = name.partition(":")
    if not module_name or not attr or not all(p.isidentifier() for p in module_name.split(".") + attr.split(".")):
        raise ModelLookupError(f"{name!r} is not an import path; write package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ModelLookupError(f"cannot import module {exc.name!r} for {name!r}: it must be importable "
                               f"(installed, or on PYTHONPATH) wherever the model is built") from None
    except Exception as exc:  # the user's module failed while importing: its own error, one line
        raise ModelLookupError(f"importing {module_name!r} failed: {type(exc).__name__}: {_line(exc)}") from None
    builder: Any = module
    for part in attr.split("."):
        if not hasattr(builder, part):
            raise ModelLookupError(f"module {module_name!r} has no {attr!r} (from {name!r})")
        builder = getattr(builder, part)
    return _callable(builder, name)


def _plugin(ep: metadata.EntryPoint) -> Callable:
    try:
        builder = ep.load()
    except Exception as exc:  # a broken third-party package: say which entry point, in one line
        raise ModelLookupError(f"plugin model {ep.name!r} ({ep.value} in entry-point group {ENTRY_POINT_GROUP}) "
                               f"does not load: {type(exc).__name__}: {_line(exc)}") from None
    return _callable(builder, f"plugin model {ep.name!r} ({ep.value})")


def _callable(builder: Any, what: str) -> Callable:
    if not callable(builder):
        raise ModelLookupError(f"{what} is a {type(builder).__name__}, not a function that builds a model")
    return builder


def _line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 160 else text[:157] + "..."


def model_description(name: str) -> str:
    doc = inspect.getdoc(model_entrypoint(name)) or ""
    return doc.splitlines()[0] if doc else ""


def model_options(name: str) -> dict[str, Any]:
    """The builder's own options and their defaults (num_classes and in_channels excluded)."""
    try:
        params = inspect.signature(model_entrypoint(name)).parameters.values()
    except (TypeError, ValueError):  # a callable without a signature: it takes no options we can check
        return {}
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: p.default for p in params
            if p.kind in named and p.name not in ("num_classes", "in_channels")}
