"""mnistlab: a config-driven experiment runner for handwritten-digit classification.

From Python: mnistlab.train, evaluate, load_model, predict, compare and sweep (see mnistlab/api.py).
They load on first use, so `import mnistlab` costs nothing (no torch).
"""

from ._version import __version__

API = ("train", "evaluate", "load_model", "predict", "compare", "sweep")
__all__ = ["__version__", *API]


def __getattr__(name: str):
    if name in API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'mnistlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    """What tab completion offers: the API's functions too, before any has loaded."""
    return sorted({*globals(), *API})
