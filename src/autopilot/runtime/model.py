"""A shipped model: one ONNX Runtime session plus what its users (the
server, `autopilot predict`, the drift reference, the retrain comparison)
need to know about it: version, classes, input shape. Immutable: a new
version is a new ServedModel, swapped in by assigning one reference."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import softmax

from ..rundir import read_json

TIMING_BATCH = 8


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


PREPROCESS = "preprocess.json"


def find_preprocess(card: str | Path) -> dict | None:
    """The preprocessing a model's inputs go through: beside its card (a
    version of its own), else the run's data/preprocess.json, found from
    model/card.json or model/versions/<v>/card.json."""
    card = Path(card)
    for folder in (card.parent, *card.parents[:4]):
        for path in (folder / PREPROCESS, folder / "data" / PREPROCESS):
            if path.is_file():
                return read_json(path)
    return None


@dataclass(frozen=True)
class ServedModel:
    version: str
    path: Path
    card: dict
    session: object = field(repr=False)
    seconds_per_item: float = 0.0  # measured at load: what the server's batcher plans with
    # A table run's fitted preprocessing (data/preprocess.json): raw rows -> the model's input.
    preprocess: dict | None = field(default=None, repr=False)

    @classmethod
    def load(cls, version: str, onnx: Path, card: Path, threads: int = 1) -> "ServedModel":
        m = cls(version, Path(onnx), read_json(card), open_session(onnx, threads), preprocess=find_preprocess(card))
        # One call now so the first request does not pay for lazy initialisation.
        x = np.zeros((TIMING_BATCH, *m.input_shape), dtype=np.float32)
        m.predict_proba(x[:1])
        best = float("inf")
        for _ in range(3):  # the fastest of three: the model's cost, not the machine's other load
            t = time.perf_counter()
            m.predict_proba(x)
            best = min(best, time.perf_counter() - t)
        object.__setattr__(m, "seconds_per_item", best / TIMING_BATCH)
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
    def task(self) -> str:
        return self.card.get("task", "classification")

    @property
    def input_name(self) -> str:
        return self.session.get_inputs()[0].name

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities, float32 (N, C); for a regression model its
        predicted values (N, 1), so the batcher, the request log (the value
        in the confidence column) and the drift reference take it unchanged.
        ONNX Runtime releases the GIL while it computes."""
        logits = self.session.run(None, {self.input_name: x})[0]
        if self.task == "regression":
            return logits.astype(np.float32, copy=False).reshape(len(logits), 1)
        return softmax(logits.astype(np.float32, copy=False), axis=1)
