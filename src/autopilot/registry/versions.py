"""Model versions: model/v1, model/v2, ... and RUN/model/versions.json.

    model/versions.json   which version is served, every version, the history
                          (schema: autopilot.schemas.versions.Versions)
    model/vN/             the files of each version, never changed once written;
                          its entry's `onnx` names the file that is served
                          (the compressed one when compression chose one)
    model/*.onnx|json...  a copy of the current champion's model files, for
                          everything that reads model/ directly

A run made by `autopilot run` has no versions.json: its model is v1 and the
first retrain snapshots it, with the file compression shipped. The server
serves the current version's ONNX file from its own folder, which never
changes, so swapping versions is reading one small JSON file and opening one
new file: no half-copied model is ever read. No torch here: the server
imports this module.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..rundir import TORCH_FILES, RunDir, read_json
from ..schemas.base import read, write
from ..schemas.versions import HistoryEvent, VersionEntry, Versions

MODEL_FILES = (*TORCH_FILES, "model.onnx", "card.json")
REFERENCE = "reference.json"


class VersionError(RuntimeError):
    """No such version, nothing to roll back to, ..."""


@dataclass(frozen=True)
class ModelRef:
    """Where the files of one version are."""
    version: str
    onnx: Path
    card: Path
    reference: Path  # may not exist yet


def versions_file(run_dir) -> Path:
    return RunDir(run_dir).model_dir / "versions.json"


def reference_file(run_dir) -> Path:
    return RunDir(run_dir).path / "monitor" / REFERENCE


def shipped_onnx(run_dir) -> Path:
    """The file a plain run ships: the compressed model when compression
    chose one, else the fp32 export."""
    rd = RunDir(run_dir)
    chosen = rd.path / "compress" / "chosen.onnx"
    return chosen if chosen.exists() else rd.model_dir / "model.onnx"


def read_versions(run_dir) -> Versions | None:
    """model/versions.json, validated; None for a run never retrained."""
    return read(Versions, run_dir) if versions_file(run_dir).exists() else None


def current(run_dir) -> ModelRef:
    """The model to serve now."""
    rd = RunDir(run_dir)
    vs = read_versions(rd.path)
    if vs is None:
        return ModelRef("v1", shipped_onnx(rd.path), rd.model_dir / "card.json", reference_file(rd.path))
    return ref_of(rd.path, vs, vs.current)


def ref_of(run_dir, vs: Versions, version: str) -> ModelRef:
    rd = RunDir(run_dir)
    entry = entry_of(vs, version)
    vdir = rd.path / entry.dir
    ref = vdir / REFERENCE
    return ModelRef(version, rd.path / entry.onnx, vdir / "card.json", ref if ref.exists() else reference_file(rd.path))


def entry_of(vs: Versions, version: str) -> VersionEntry:
    e = vs.entry(version)
    if e is None:
        raise VersionError(f"no model version {version!r}; versions: {', '.join(e.version for e in vs.versions)}")
    return e


_entry = entry_of  # the name monitor.reference still uses


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def ensure_versions(run_dir) -> Versions:
    """Snapshot the model of a plain run as v1 (idempotent). v1 serves what
    the run shipped: compress/chosen.onnx when compression chose one."""
    rd = RunDir(run_dir)
    vs = read_versions(rd.path)
    if vs is not None:
        return vs
    if not (rd.model_dir / "model.onnx").exists():
        raise VersionError(f"no model in {rd.path} (missing model/model.onnx); finish `autopilot run` first")
    vdir = rd.model_dir / "v1"
    tmp = rd.model_dir / ".v1.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for f in MODEL_FILES:
        if (rd.model_dir / f).exists():
            shutil.copy2(rd.model_dir / f, tmp / f)
    onnx, compressed = "model.onnx", None
    chosen = rd.path / "compress" / "chosen.onnx"
    if chosen.exists():
        shutil.copy2(chosen, tmp / "chosen.onnx")
        onnx = "chosen.onnx"
        results = rd.path / "compress" / "results.json"
        compressed = read_json(results).get("chosen") if results.exists() else "chosen"
    if reference_file(rd.path).exists():
        shutil.copy2(reference_file(rd.path), tmp / REFERENCE)
    if vdir.exists():  # a crash after the rename but before versions.json: redo
        shutil.rmtree(vdir)
    os.replace(tmp, vdir)
    card = read_json(vdir / "card.json") if (vdir / "card.json").exists() else {}
    # The card's `shipped` entry is the served file's own test accuracy; older cards have the fp32 figure only.
    shipped = card.get("shipped") or {}
    accuracy = shipped.get("test_accuracy", card.get("test_accuracy")) if chosen.exists() else card.get("test_accuracy")
    vs = Versions(current="v1",
                  versions=[VersionEntry(version="v1", dir="model/v1", onnx=f"model/v1/{onnx}", created=_now(),
                                         source="run", test_accuracy=accuracy, onnx_sha256=sha256(vdir / onnx),
                                         compressed=compressed)],
                  history=[HistoryEvent(time=_now(), action="init", to="v1")])
    write(vs, rd.path)
    return vs


def add_version(run_dir, src: Path, meta: dict, onnx: str = "model.onnx") -> str:
    """Copy a challenger's files (model.onnx, card.json, spec, weights,
    reference, and `onnx`, the file to serve, when it is another one) into
    the next model/vN; it does not become current. `meta`: fields of
    schemas.versions.VersionEntry (source, test_accuracy, compressed, ...)."""
    rd = RunDir(run_dir)
    src = Path(src)
    if not (src / onnx).exists():
        raise VersionError(f"no {onnx} in {src}: nothing to add as a version")
    vs = ensure_versions(rd.path)
    n = 1 + max(int(e.version[1:]) for e in vs.versions)
    version = f"v{n}"
    tmp = rd.model_dir / f".{version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for f in dict.fromkeys(MODEL_FILES + (REFERENCE, onnx)):
        if (src / f).exists():
            shutil.copy2(src / f, tmp / f)
    os.replace(tmp, rd.model_dir / version)
    vs.versions.append(VersionEntry.model_validate({
        "version": version, "dir": f"model/{version}", "onnx": f"model/{version}/{onnx}", "created": _now(),
        "onnx_sha256": sha256(rd.model_dir / version / onnx), **meta}))
    write(vs, rd.path)
    return version


def set_current(run_dir, version: str, action: str) -> Versions:
    """Make `version` the champion: its files are copied over model/ and the
    monitor reference, then versions.json (the file servers poll) is written
    last, atomically."""
    rd = RunDir(run_dir)
    vs = ensure_versions(rd.path)
    vdir = rd.path / entry_of(vs, version).dir
    for f in MODEL_FILES:
        if (vdir / f).exists():
            _atomic_copy(vdir / f, rd.model_dir / f)
    if (vdir / REFERENCE).exists():
        reference_file(rd.path).parent.mkdir(parents=True, exist_ok=True)
        _atomic_copy(vdir / REFERENCE, reference_file(rd.path))
    previous = vs.current
    vs.current = version
    vs.history.append(HistoryEvent(time=_now(), action=action, from_=previous, to=version))
    write(vs, rd.path)
    return vs


def promote(run_dir, version: str) -> Versions:
    return set_current(run_dir, version, "promote")


def rollback(run_dir) -> str:
    """Back to the version that was current before this one; returns it."""
    vs = read_versions(run_dir)
    if vs is None:
        raise VersionError("only one model version (v1): nothing to roll back to")
    cur = vs.current
    # The history says what was served before; repeated rollbacks walk back
    # through promotions, never forward again.
    stack: list[str] = []
    for h in vs.history:
        if h.action in ("init", "promote"):
            stack.append(h.to)
        elif h.action == "rollback" and stack:
            stack.pop()
    if len(stack) < 2 or stack[-1] != cur:
        older = [e.version for e in vs.versions]
        i = older.index(cur)
        if i == 0:
            raise VersionError(f"{cur} is the first version: nothing to roll back to")
        target = older[i - 1]
    else:
        target = stack[-2]
    set_current(run_dir, target, "rollback")
    return target


def _atomic_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
