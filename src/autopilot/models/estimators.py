"""Table models fitted by scikit-learn rather than trained as networks:
gradient-boosted trees (models.trees) and linear models (models.linear).
Both modules offer the same verbs (fit, refit, raw_scores, to_onnx,
describe, n_outputs), so one trial and one final stage serve both; their
model is the ONNX file they write, beside a spec.json."""
from __future__ import annotations

import json
from pathlib import Path

from . import linear, trees

MODULES = {trees.FAMILY: trees, linear.FAMILY: linear}
FAMILIES = tuple(MODULES)


def module_for(family: str):
    return MODULES[family]


def family_of_dir(folder: str | Path) -> str | None:
    """The estimator family of a trial or model folder (its spec.json); None for a network."""
    spec = Path(folder) / trees.SPEC_FILE
    if not spec.exists():
        return None
    try:
        family = json.loads(spec.read_text()).get("family")
    except ValueError:
        return None
    return family if family in MODULES else None


def is_estimator_dir(folder: str | Path) -> bool:
    return family_of_dir(folder) is not None
