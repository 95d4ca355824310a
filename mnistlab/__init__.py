"""mnistlab: a config-driven experiment runner for handwritten-digit classification."""

from ._version import __version__

__all__ = ["__version__"]
