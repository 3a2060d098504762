"""New labelled data for a retrain: where it comes from (a file, the request
log's feedback) and how it is split (train / val / held out for the
comparison) and mixed with the run's own data."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

HOLDOUT = 0.3       # of the new examples, per class: kept out of training for the comparison
VAL = 0.2           # of what is not held out
MAX_REPEAT = 10
NEW_SHARE = 1 / 3   # target share of new examples in the training data


def feedback_data(run_dir, input_shape, log_url: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw inputs and labels of every labelled prediction whose input is still kept."""
    import sqlalchemy as sa

    from ..runtime.requestlog import default_url, feedback, make_engine, predictions

    empty = np.zeros((0, *input_shape), np.float32), np.zeros(0, np.int64)
    url = log_url or default_url(run_dir)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        return empty
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(predictions.c.raw, feedback.c.label)
                            .join(feedback, feedback.c.id == predictions.c.id)
                            .where(predictions.c.raw.is_not(None)).order_by(predictions.c.seq)).all()
    engine.dispose()
    size = math.prod(input_shape)
    rows = [r for r in rows if len(r[0]) == 4 * size]  # inputs of another shape belong to another model
    if not rows:
        return empty
    X = np.stack([np.frombuffer(r[0], dtype=np.float32) for r in rows])
    y = np.asarray([r[1] for r in rows], dtype=np.int64)
    return X.reshape(len(X), *input_shape), y


def file_data(source: str, classes: list[str], input_shape, label: str | None = None,
              preprocess: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A labelled data set in any form `autopilot run` reads, mapped onto the champion's classes by name.
    A CSV goes through the run's fitted `preprocess`, as served rows do."""
    from dataclasses import replace

    from ..data import DataError, load
    from ..data.dataset import as_float

    ds = load(source, label=label)
    if ds.table is not None and preprocess is not None:
        from ..data.preprocess import CellError, transform

        columns = dict(zip(ds.table.names, ds.table.columns))
        absent = [s["name"] for s in preprocess["columns"] if s["name"] not in columns]
        if absent:
            raise DataError(f"{source}: no column {absent[0]!r}; the model was trained with it")
        try:
            ds = replace(ds, X=transform(preprocess, columns))
        except CellError as e:
            raise DataError(f"{source}: data row {e.row + 1}, {e}") from None
    if tuple(ds.input_shape) != tuple(input_shape):
        raise DataError(f"{source}: inputs of shape {list(ds.input_shape)}, the model takes {list(input_shape)}")
    unknown = [c for c in ds.classes if c not in classes]
    if unknown:
        raise DataError(f"{source}: class(es) {', '.join(unknown[:10])} are not among the model's classes "
                        f"({', '.join(classes[:20])}); a new class needs a new run")
    mapping = np.asarray([classes.index(c) for c in ds.classes], dtype=np.int64)
    return as_float(ds.X), mapping[ds.y]


def split_new(y: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Per class: HOLDOUT held out, then VAL of the rest to validation; a class
    with one example goes to train (it cannot be scored and trained on)."""
    rng = np.random.default_rng(seed)
    parts = {"train": [], "val": [], "holdout": []}
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n = len(idx)
        n_hold = int(round(HOLDOUT * n)) if n >= 2 else 0
        n_val = int(round(VAL * (n - n_hold))) if n - n_hold >= 3 else 0
        parts["holdout"].append(idx[:n_hold])
        parts["val"].append(idx[n_hold:n_hold + n_val])
        parts["train"].append(idx[n_hold + n_val:])
    return {k: np.sort(np.concatenate(v)).astype(np.int64) if v else np.zeros(0, np.int64) for k, v in parts.items()}


def repeat_factor(n_old_train: int, n_new_train: int) -> int:
    """Small new sets are repeated (up to MAX_REPEAT times) so they make up
    about NEW_SHARE of the training data: 200 new examples among 1,300 old
    ones would otherwise barely move the model."""
    if not n_new_train:
        return 1
    return int(min(MAX_REPEAT, max(1, round(NEW_SHARE * n_old_train / ((1 - NEW_SHARE) * n_new_train)))))


def mix(old: dict, new_train: tuple, new_val: tuple) -> tuple[dict, int]:
    """The challenger's train/val: the run's own plus the new parts (train
    repeated, see repeat_factor); test stays the run's original test split."""
    repeat = repeat_factor(len(old["train"][1]), len(new_train[1]))
    train_X = np.concatenate([old["train"][0]] + [new_train[0]] * repeat).astype(np.float32)
    train_y = np.concatenate([old["train"][1]] + [new_train[1]] * repeat)
    val_X = np.concatenate([old["val"][0], new_val[0]]).astype(np.float32)
    val_y = np.concatenate([old["val"][1], new_val[1]])
    return {"train": (train_X, train_y), "val": (val_X, val_y), "test": old["test"]}, repeat
