"""Models: building blocks and a builder from a JSON spec to an nn.Module."""
from .components import DOWNSAMPLING, HEADS, SPEC_VERSION, SpecError, from_template, validate_spec
from .describe import describe_model, model_parts, time_parts
from .ops import ACTIVATIONS, NORMS, OPERATIONS
from .spec import FAMILIES, build_model, count_params, load_model, save_model, scale_widths, spec_version

__all__ = [
    "ACTIVATIONS", "DOWNSAMPLING", "FAMILIES", "HEADS", "NORMS", "OPERATIONS", "SPEC_VERSION", "SpecError",
    "build_model", "count_params", "describe_model", "from_template", "load_model", "model_parts", "save_model",
    "scale_widths", "spec_version", "time_parts", "validate_spec",
]
