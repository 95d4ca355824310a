"""The catalog of built-in models (name, parameters, origin, description) as a JSON file in the package.

`mnistlab models` reads catalog.json (the CLI opens the file itself: importing this package imports
torch and every model, VGG16's torchvision included), so it answers at once. The file is generated
from the live registry by `python -m mnistlab.models.catalog`; tests/test_models.py fails when it no
longer matches the registry.
"""

from __future__ import annotations

import json
from pathlib import Path

CATALOG = Path(__file__).resolve().parent / "catalog.json"


def build_catalog() -> list[dict]:
    """Every registered model with its parameter count (10 classes, 1 channel, default options)."""
    from . import count_params, list_models, model_description
    from ._registry import model_entrypoint

    return [{"name": name, "params": count_params(name), "description": model_description(name),
             "origin": "mnistlab" if model_entrypoint(name).__module__.endswith("recipes") else "reference"}
            for name in list_models()]


def plugin_rows() -> list[dict]:
    """The catalog rows of the plugin models installed packages declare (origin "plugin"); a plugin that
    does not load is listed with params None and the reason as its description."""
    from . import count_params, model_description
    from ..errors import UserError
    from ._registry import plugin_names

    rows = []
    for name in plugin_names():
        try:
            rows.append({"name": name, "params": count_params(name), "description": model_description(name),
                         "origin": "plugin"})
        except UserError as exc:
            rows.append({"name": name, "params": None, "description": str(exc).removeprefix("model.name: "), "origin": "plugin"})
    return rows


if __name__ == "__main__":
    CATALOG.write_text(json.dumps(build_catalog(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {CATALOG}")
