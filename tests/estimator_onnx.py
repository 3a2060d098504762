"""Shared check of the table estimators' ONNX files (models/trees.py,
models/linear.py): written by the module's own converter, run by ONNX
Runtime, compared with what the fitted scikit-learn objects compute."""
from __future__ import annotations

import numpy as np

from autopilot.export import onnx_session, run_onnx


def onnx_outputs_match(module, model, X: np.ndarray, width: int, path, tolerance: float) -> np.ndarray:
    """ONNX Runtime's outputs of `module.to_onnx(model)` on X, after checking
    their shape and that they equal `module.raw_scores` within `tolerance`
    (relative to the largest output, at least 1)."""
    path = module.to_onnx(model, X.shape[1], path)
    ref, got = module.raw_scores(model, X), run_onnx(onnx_session(path), X)
    assert got.shape == (len(X), width) == ref.shape
    scale = max(1.0, float(np.abs(ref).max()))
    assert np.abs(ref - got).max() <= tolerance * scale
    return got


def softmax(logits: np.ndarray) -> np.ndarray:
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)
