"""`autopilot predict`: the shipped ONNX model on new inputs, in ONNX Runtime
(runtime.model.ServedModel, the same code the server runs; no torch)."""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import numpy as np

from .data import DataError
from .data.inputs import read_inputs
from .registry.versions import current
from .rundir import RunDir, read_json
from .data.table_rows import read_table_csv
from .runtime.model import ServedModel, find_preprocess

BATCH = 1024  # items per ONNX Runtime call: bounds memory on large input files


def shipped_model(rd: RunDir) -> Path:
    """The model being served: the current version after a retrain or
    rollback, else the compressed model when compression chose one, else
    the plain export."""
    return current(rd.path).onnx


def predict(run_path: str | Path, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class indices, probabilities) of the shipped model on X."""
    ref = current(RunDir(run_path).path)
    model = ServedModel.load(ref.version, ref.onnx, ref.card, threads=0)  # 0: ORT's default, all cores
    X = np.asarray(X, dtype=np.float32)
    parts = [model.predict_proba(np.ascontiguousarray(X[i:i + BATCH])) for i in range(0, len(X), BATCH)]
    probs = np.concatenate(parts) if parts else np.zeros((0, len(model.classes)), dtype=np.float32)
    return probs.argmax(1), probs


def predict_command(run_path: str, input_path: str, out: str | None) -> int:
    rd = RunDir(run_path)
    card_file = rd.model_dir / "card.json"
    if not card_file.exists():
        raise DataError(f"no model in {run_path!r} (missing model/card.json); finish `autopilot run` first")
    card = read_json(card_file)
    pre = find_preprocess(card_file)
    if pre is not None and str(input_path).lower().endswith(".csv"):  # raw table rows, as in training
        X, ids = read_table_csv(input_path, pre)
    else:
        X, ids = read_inputs(input_path, tuple(card["input_shape"]), card["kind"])
    pred, probs = predict(run_path, X)
    classes = card["classes"]
    regression = card.get("task") == "regression"  # one predicted value per input (ServedModel.predict_proba)
    if regression:
        rows = [{"id": i, "value": round(float(pr[0]), 6)} for i, pr in zip(ids, probs)]
    else:
        rows = [{"id": i, "class": classes[int(p)], "probabilities": {c: round(float(v), 6) for c, v in zip(classes, pr)}}
                for i, p, pr in zip(ids, pred, probs)]
    if out and out.lower().endswith(".json"):
        text = json.dumps({"model": str(shipped_model(rd).name), "predictions": rows}, indent=2)
    else:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["id", "value"] if regression else ["id", "class"] + [f"p_{c}" for c in classes])
        for r in rows:
            w.writerow([r["id"], r["value"]] if regression else
                       [r["id"], r["class"]] + [r["probabilities"][c] for c in classes])
        text = buf.getvalue()
    if out:
        tmp = Path(out).with_name(Path(out).name + ".tmp")
        tmp.write_text(text)
        tmp.replace(out)
        print(f"{len(rows)} prediction(s) written to {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
