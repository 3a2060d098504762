"""Models: building blocks and a builder from a JSON spec to an nn.Module."""
from .spec import FAMILIES, build_model, count_params, load_model, save_model

__all__ = ["FAMILIES", "build_model", "count_params", "load_model", "save_model"]
