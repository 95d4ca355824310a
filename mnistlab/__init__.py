"""mnistlab: a config-driven experiment runner for handwritten-digit classification."""

__version__ = "0.1.0"
