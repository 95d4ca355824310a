"""mnistlab: a config-driven experiment runner for handwritten-digit classification.

From Python: mnistlab.train, mnistlab.evaluate, mnistlab.load_model, mnistlab.predict (see mnistlab/api.py).
They load on first use, so `import mnistlab` costs nothing.
"""

from ._version import __version__

API = ("train", "evaluate", "load_model", "predict")
__all__ = ["__version__", *API]


def __getattr__(name: str):
    if name in API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'mnistlab' has no attribute {name!r}")
