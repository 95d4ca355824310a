"""The model registry and every built-in model.

`reference` holds the models of the projects mnistlab started from, layer for layer;
`recipes` holds mnistlab's own. Importing this package registers both.
"""

from . import recipes, reference  # noqa: F401  (registers the built-in models)
from ._factory import LAYER_KINDS, check_model, count_params, create_model, layer_counts, meta_model
from ._registry import list_models, model_description, model_options, register_model

__all__ = ["LAYER_KINDS", "check_model", "count_params", "create_model", "layer_counts", "list_models", "meta_model",
           "model_description", "model_options", "register_model"]
