"""The one entry point: a built-in name or a path in, a validated Dataset out."""
from __future__ import annotations

from .builtin import BUILTINS, load_builtin
from .dataset import DataError, Dataset
from .files import load_path
from .validate import validate


def load(source: str, *, label: str | None = None, skip_bad: bool = False, layout: str | None = None,
         task: str = "auto") -> Dataset:
    """Built-in names win over a same-named folder; write ./digits for the folder.
    `layout` ("nhwc" or "nchw") says how a 4-D .npz array is laid out when its
    shape cannot tell."""
    if source in BUILTINS:
        if layout is not None:
            raise DataError(f"--layout applies to image arrays in .npz files, not to the built-in {source!r}")
        ds = load_builtin(source)
    else:
        try:
            ds = load_path(source, label=label, skip_bad=skip_bad, layout=layout, task=task)
        except DataError as e:
            if str(e).startswith("no such file or folder"):
                raise DataError(f"{e} (built-in data sets: {', '.join(BUILTINS)})") from None
            raise
    return validate(ds)
