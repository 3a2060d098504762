"""A shipped model: one ONNX Runtime session plus what its users (the
server, `autopilot predict`, the drift reference, the retrain comparison)
need to know about it: version, classes, input shape. Immutable: a new
version is a new ServedModel, swapped in by assigning one reference."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import softmax

from ..rundir import read_json


def open_session(path: str | Path, threads: int = 1):
    """One intra-op thread by default: the models are small, the server's
    event loop needs the other core, and a second ORT thread on a busy
    2-core machine made a 28x28 CNN 2x slower per item at batch 32."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(0, int(threads))
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class ServedModel:
    version: str
    path: Path
    card: dict
    session: object = field(repr=False)

    @classmethod
    def load(cls, version: str, onnx: Path, card: Path, threads: int = 1) -> "ServedModel":
        m = cls(version, Path(onnx), read_json(card), open_session(onnx, threads))
        # One call now so the first request does not pay for lazy initialisation.
        m.predict_proba(np.zeros((1, *m.input_shape), dtype=np.float32))
        return m

    @property
    def classes(self) -> list[str]:
        return list(self.card["classes"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.card["input_shape"])

    @property
    def kind(self) -> str:
        return self.card["kind"]

    @property
    def input_name(self) -> str:
        return self.session.get_inputs()[0].name

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities, float32 (N, C). Runs in the batcher's thread:
        ONNX Runtime releases the GIL while it computes."""
        logits = self.session.run(None, {self.input_name: x})[0]
        return softmax(logits.astype(np.float32, copy=False), axis=1)
