"""Request bodies -> arrays, or a 4xx with a message that says what is wrong
and where. Nothing a client sends may reach the model unchecked or become a
5xx.

Pydantic is not used for the inputs on purpose: validating 784 floats per
image as Python objects costs more than the model; numpy checks a whole batch
in one call, and only when that fails do we walk the items to name the bad one.
"""
from __future__ import annotations

import base64
import binascii
import io
import math

import numpy as np
import orjson

IMAGE_FORMATS = ("PNG", "JPEG")
MAX_IMAGE_PIXELS = 4096 * 4096  # a decompression bomb is refused before decoding


class BadRequest(Exception):
    def __init__(self, status: int, message: str, close: bool = False):
        super().__init__(message)
        self.status, self.message = status, message
        self.close = close  # the rest of the body was not read: the connection must close


def parse_json(body: bytes):
    if not body:
        raise BadRequest(400, "empty body; send JSON like {\"inputs\": [x, ...]}")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        # NaN and Infinity are not JSON: orjson refuses them here.
        raise BadRequest(400, f"body is not valid JSON: {e}") from None


def parse_inputs(body: bytes, shape: tuple[int, ...], kind: str, max_items: int, preprocess: dict | None = None
                 ) -> np.ndarray:
    """{"inputs": [x, ...]} -> float32 (N, *shape). Each x is a nested list in
    the model's input shape (or flat, with prod(shape) numbers) or, for image
    models, a base64 PNG/JPEG string. Image values above 1 are read as 0..255
    grey levels and divided by 255, the same rule as `autopilot predict`."""
    doc = parse_json(body)
    if not isinstance(doc, dict) or "inputs" not in doc:
        raise BadRequest(422, "expected a JSON object {\"inputs\": [x, ...]}")
    items = doc["inputs"]
    if not isinstance(items, list):
        raise BadRequest(422, f"\"inputs\" must be a list of inputs, got {_json_type(items)}")
    if not items:
        raise BadRequest(422, "\"inputs\" is empty")
    if len(items) > max_items:
        raise BadRequest(413, f"too many inputs: {len(items)} in one request, the limit is {max_items}; split the request")
    if any(isinstance(it, dict) for it in items):
        return _table_rows(items, preprocess)
    if any(isinstance(it, str) for it in items):
        x = np.stack([_item(it, i, shape, kind) for i, it in enumerate(items)])
    else:
        x = _batch(items, shape)
    if kind == "image":
        top = x.reshape(len(x), -1).max(1)
        scale = top > 1.0
        if scale.any():
            x[scale] /= 255.0
    return x


def _table_rows(items: list, preprocess: dict | None) -> np.ndarray:
    """JSON objects of raw column values, through the run's preprocessing."""
    from ..data.table_rows import RowError, rows_to_features

    if preprocess is None:
        raise BadRequest(422, "inputs: objects of column values are for models trained on a CSV table; "
                              "this model takes nested lists of numbers")
    try:
        return rows_to_features(preprocess, items)
    except RowError as e:
        raise BadRequest(422, str(e)) from None


def _batch(items: list, shape: tuple[int, ...]) -> np.ndarray:
    """The fast path: all items converted by numpy at once."""
    try:
        a = np.array(items)
    except (ValueError, TypeError, OverflowError):
        a = None  # ragged or mixed: find the culprit below
    if a is None or a.dtype.kind not in "iuf" or not _shape_ok(a.shape[1:], shape):
        return np.stack([_item(it, i, shape, "") for i, it in enumerate(items)])
    return _finite(_as_float32(a).reshape(len(items), *shape), "inputs", batch=True)


def _item(it, i: int, shape: tuple[int, ...], kind: str) -> np.ndarray:
    where = f"inputs[{i}]"
    if isinstance(it, str):
        if kind != "image":
            raise BadRequest(422, f"{where}: a string; this model takes {kind or 'numeric'} inputs as nested lists of numbers of shape {list(shape)}")
        return decode_image(it, shape, where)
    if not isinstance(it, list):
        raise BadRequest(422, f"{where}: expected a nested list of numbers of shape {list(shape)}, got {_json_type(it)}")
    try:
        a = np.array(it)
    except (ValueError, TypeError, OverflowError):
        raise BadRequest(422, f"{where}: not a regular array of numbers (rows of different lengths?); expected shape {list(shape)}") from None
    if a.dtype.kind == "b" or (a.dtype.kind == "O" and _has(it, bool)):
        raise BadRequest(422, f"{where}: true/false where numbers are expected")
    if a.dtype.kind not in "iuf":
        bad = _first_non_number(it)
        raise BadRequest(422, f"{where}: {bad} where numbers are expected" if bad else
                         f"{where}: not a regular array of numbers; expected shape {list(shape)}")
    if not _shape_ok(a.shape, shape):
        raise BadRequest(422, f"{where}: expected shape {list(shape)} (or {math.prod(shape)} numbers), got {list(a.shape)}")
    return _finite(_as_float32(a).reshape(shape), where)


def _shape_ok(got: tuple, shape: tuple) -> bool:
    return tuple(got) == tuple(shape) or (len(got) == 1 and len(shape) > 1 and got[0] == math.prod(shape))


def _as_float32(a: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return a.astype(np.float32)


def _finite(a: np.ndarray, where: str, batch: bool = False) -> np.ndarray:
    ok = np.isfinite(a)
    if not ok.all():
        pos = [int(v) for v in np.argwhere(~ok)[0]]
        if batch:
            where, pos = f"inputs[{pos[0]}]", pos[1:]
        raise BadRequest(422, f"{where}: non-finite value (too large for float32?) at index {pos}")
    return a


def decode_image(text: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    """A base64 PNG or JPEG (an optional data: URL prefix is allowed) ->
    float32 (C, H, W) in [0, 1], resized to the model's input size the way
    the image-folder loader does."""
    from PIL import Image

    from ..data.images import _normalise_mode

    if len(shape) != 3 or shape[0] not in (1, 3):
        raise BadRequest(422, f"{where}: images need a 1- or 3-channel image model; this one takes shape {list(shape)}")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(400, f"{where}: bad base64 (expected a base64-encoded PNG or JPEG file)") from None
    try:
        with Image.open(io.BytesIO(raw)) as im:
            if im.format not in IMAGE_FORMATS:
                raise BadRequest(415, f"{where}: a {im.format} image; send PNG or JPEG")
            if im.size[0] * im.size[1] > MAX_IMAGE_PIXELS:
                raise BadRequest(413, f"{where}: image of {im.size[0]}x{im.size[1]} pixels is too large")
            c, h, w = shape
            im.draft(im.mode, (w, h))
            im.load()
            im = _normalise_mode(im)
    except BadRequest:
        raise
    except Exception as e:  # Pillow raises many types for bad data; all mean "not an image we can read"
        raise BadRequest(400, f"{where}: not a readable PNG or JPEG image ({type(e).__name__}: {str(e)[:120]})") from None
    if im.size != (w, h):
        im = im.resize((w, h), Image.Resampling.BILINEAR)
    a = np.asarray(im.convert("L" if c == 1 else "RGB"), dtype=np.float32) / 255.0
    return a[None] if c == 1 else a.transpose(2, 0, 1)


def parse_feedback(body: bytes, classes: list[str]) -> tuple[str, int]:
    """{"id": prediction id, "label": class name or index} -> (id, class index)."""
    doc = parse_json(body)
    if not isinstance(doc, dict) or "id" not in doc or "label" not in doc:
        raise BadRequest(422, "expected a JSON object {\"id\": prediction id, \"label\": true class}")
    pid, label = doc["id"], doc["label"]
    if not isinstance(pid, str) or not (0 < len(pid) <= 64):
        raise BadRequest(422, "\"id\" must be the id string of a prediction")
    if isinstance(label, str) and label in classes:
        return pid, classes.index(label)
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(classes) and str(label) not in classes:
        return pid, label  # an index, when class names are not numbers themselves
    if isinstance(label, int) and not isinstance(label, bool) and str(label) in classes:
        return pid, classes.index(str(label))
    shown = ", ".join(classes[:20]) + (", ..." if len(classes) > 20 else "")
    raise BadRequest(422, f"unknown label {label!r}; classes are: {shown}")


def _json_type(v) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null",
            int: "a number", float: "a number"}.get(type(v), type(v).__name__)


def _has(v, t) -> bool:
    if isinstance(v, list):
        return any(_has(e, t) for e in v)
    return isinstance(v, t)


def _first_non_number(v) -> str | None:
    if isinstance(v, list):
        for e in v:
            bad = _first_non_number(e)
            if bad:
                return bad
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return _json_type(v)
    return None
