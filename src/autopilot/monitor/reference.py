"""The drift reference: what the inputs, predictions and latency looked like
when the model was made. Written once to RUN/monitor/reference.json, read by
the server and by `autopilot monitor`.

    python -m autopilot.monitor.reference RUN     # what `autopilot serve` runs when it is missing

Built from the run's own training split (reloaded by autopilot.rundata.load_run_data,
which checks the data fingerprint) and the validation split run through the
shipped ONNX model. Needs no torch for digits, mnist5k, folders, CSV and NPZ.
"""
from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..data.dataset import as_float
from ..rundir import RunDir, read_json, write_json
from ..schemas.reference import Reference
from ..registry import versions
from .features import Reducer

N_QUANTILES = 100     # KS against the reference CDF: its error is at most 1/N_QUANTILES
PSI_BINS = 10         # deciles of the training data, the usual PSI binning
LATENCY_SAMPLES = 200
FORMAT = 1


def feature_stats(F: np.ndarray) -> dict:
    """Per-feature quantiles (for KS) and decile bins with their training
    proportions (for PSI). Constant features get one edge, so anything that
    moves off the constant shows up."""
    F = np.asarray(F, dtype=np.float64)
    probs = (np.arange(N_QUANTILES) + 0.5) / N_QUANTILES
    quantiles = np.quantile(F, probs, axis=0).T  # (features, N_QUANTILES)
    edges, props = [], []
    for j in range(F.shape[1]):
        e = np.unique(np.quantile(F[:, j], np.arange(1, PSI_BINS) / PSI_BINS))
        counts = np.bincount(np.searchsorted(e, F[:, j], side="left"), minlength=len(e) + 1)
        edges.append(_r(e))
        props.append(_r(counts / max(1, len(F))))
    return {"quantiles": [_r(q) for q in quantiles], "edges": edges, "proportions": props,
            "mean": _r(F.mean(0)), "std": _r(F.std(0)), "n": int(len(F))}


def latency_ms(model, X: np.ndarray) -> dict:
    """In-process ONNX Runtime at batch 1: the floor the server adds to."""
    xs = X[: LATENCY_SAMPLES]
    for x in xs[:10]:
        model.predict_proba(x[None])
    ts = []
    for x in xs:
        t = time.perf_counter()
        model.predict_proba(x[None])
        ts.append((time.perf_counter() - t) * 1e3)
    return {"p50": float(np.percentile(ts, 50)), "p99": float(np.percentile(ts, 99)), "n": len(ts)}


def _reduced(reducer: Reducer, X: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """reducer(X) a chunk at a time: uint8 pixels become float per chunk, never all at once."""
    return np.concatenate([reducer(as_float(X[i:i + chunk])) for i in range(0, len(X), chunk)]) if len(X) else reducer(X)


def reference_from_arrays(model, X_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray | None) -> dict:
    """The reference of `model` (a runtime.model.ServedModel) for inputs like X_train."""
    card = model.card
    reducer = Reducer(card["kind"], card["input_shape"])
    probs = np.concatenate([model.predict_proba(as_float(X_val[i:i + 256]))
                            for i in range(0, len(X_val), 256)]) if len(X_val) else np.zeros((0, len(card["classes"])))
    pred = probs.argmax(1)
    n_classes = len(card["classes"])
    class_props = np.bincount(pred, minlength=n_classes) / max(1, len(pred))
    conf = float(probs.max(1).mean()) if len(probs) else None
    val_acc = float((pred == y_val).mean()) if y_val is not None and len(y_val) else None
    values = {}
    if card.get("task") == "regression" and len(probs):  # the predicted value's distribution (ServedModel.predict_proba)
        edges = np.unique(np.quantile(probs[:, 0], np.arange(1, PSI_BINS) / PSI_BINS))
        counts = np.bincount(np.searchsorted(edges, probs[:, 0], side="left"), minlength=len(edges) + 1)
        values = {"value_edges": _r(edges), "value_proportions": _r(counts / len(probs))}
        val_acc = None  # an accuracy of predicted classes means nothing here
    lat = latency_ms(model, as_float(X_val[:LATENCY_SAMPLES])) if len(X_val) else {"p50": None, "p99": None}
    accuracy = card.get("test_accuracy", val_acc)
    return {
        "format": FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model_version": model.version,
        "kind": card["kind"],
        "input_shape": list(card["input_shape"]),
        "classes": list(card["classes"]),
        "features": {"names": reducer.names, **feature_stats(_reduced(reducer, X_train))},
        "predictions": {"class_proportions": _r(class_props), "mean_confidence": conf, "accuracy": val_acc,
                        "n": int(len(pred)), **values},
        "latency_ms": lat,
        # What rules with `coefficient:` multiply. Accuracy is the test
        # accuracy of the card: validation accuracy was used to choose the
        # model and so is optimistic.
        "baselines": {"mean_confidence": conf, "accuracy": accuracy, "latency_p50_ms": lat["p50"],
                      "latency_p99_ms": lat["p99"], "input_drift_share": 0.0, "prediction_drift_psi": 0.0,
                      "error_rate": 0.0},
    }


def build_reference(run_dir, *, data: dict | None = None, write: bool = True) -> dict:
    """Write RUN/monitor/reference.json for the current model version and
    return it. `data` ({"train": (X, y), "val": (X, y), ...}) defaults to the
    run's own data, reloaded from its run directory."""
    from ..runtime.model import ServedModel

    rd = RunDir(run_dir)
    if data is None:
        from ..rundata import load_run_data  # data loaders; no torch for image/table data

        _config, _ds, data, _info = load_run_data(rd)
    ref = versions.current(rd.path)
    model = ServedModel.load(ref.version, ref.onnx, ref.card, threads=1)
    reference = reference_from_arrays(model, data["train"][0], data["val"][0], data["val"][1])
    Reference.model_validate(reference)  # the file's one schema, checked before anything is written
    if write:
        out = versions.reference_file(rd.path)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, reference)
        vs = versions.read_versions(rd.path)
        if vs is not None:  # keep the version's own copy in step
            vdir = rd.path / versions.entry_of(vs, ref.version).dir
            write_json(vdir / versions.REFERENCE, reference)
    return reference


def load_reference(path: Path) -> dict | None:
    """The reference as written, checked against its schema."""
    if not Path(path).exists():
        return None
    return Reference.model_validate(read_json(path)).model_dump(mode="json")


def _r(a) -> list[float]:
    """Six significant digits: plenty for drift statistics, a third of the JSON."""
    return [float(f"{v:.6g}") for v in np.asarray(a, dtype=np.float64).ravel()]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m autopilot.monitor.reference RUN", file=sys.stderr)
        return 2
    try:
        build_reference(args[0])
    except Exception as e:  # one line for the server's log, not a traceback
        print(f"error: cannot build the drift reference: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(versions.reference_file(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
