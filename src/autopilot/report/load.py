"""Read a run directory without ever failing.

A run can be stopped at any stage, so every part may be missing, half written
or (if someone edited it by hand) malformed. Each reader returns None for a
part it cannot use and records *why* in `Run.problems`, so the report can say
what is missing instead of crashing.

Each file is validated against its schema (autopilot.schemas, one model per
run-directory file) when one is defined. A file that does not match is still
shown as far as it can be, with the schema's complaint in `Run.problems`: the
report is the place where a user learns that something is off, so it must not
be the thing that fails.
"""
from __future__ import annotations

import importlib
import json
import math
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path

# File -> what the reader loses without it. Shown in the "incomplete run" box.
EXPECTED = {
    "run.json": "run configuration, data description, versions",
    "data/profile.json": "split sizes, duplicate and leak checks",
    "search.json": "search summary, trial table, search progress",
    "model/card.json": "final model: test accuracy, confusion matrix, per-class accuracy",
    "model/spec.json": "model architecture spec",
}


@dataclass
class Run:
    dir: Path
    run: dict | None = None
    profile: dict | None = None
    search: dict | None = None
    card: dict | None = None
    spec: object = None
    doctor: dict | None = None
    compress: dict | None = None
    fusion: dict | None = None
    table: dict | None = None  # CSV runs: data/table.json and data/preprocess.json
    preprocess: dict | None = None
    checked: list[str] = field(default_factory=list)  # files validated against their schema
    missing: list[str] = field(default_factory=list)  # expected files that do not exist
    problems: list[str] = field(default_factory=list)  # files that exist but could not be used

    def metrics(self, trial: int) -> tuple[list[dict], str | None]:
        """Epoch rows of trials/<trial>/metrics.jsonl, and a problem note if any.

        A run killed mid-write leaves a truncated last line: bad lines are skipped
        and counted rather than failing the whole curve.
        """
        path = self.dir / "trials" / str(trial) / "metrics.jsonl"
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return [], f"trials/{trial}/metrics.jsonl is missing"
        except OSError as e:
            return [], f"trials/{trial}/metrics.jsonl could not be read ({e.__class__.__name__})"
        rows, bad = [], 0
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad += 1
        rows.sort(key=lambda r: num(r.get("epoch")) or 0)
        note = f"{bad} unreadable line(s) in trials/{trial}/metrics.jsonl were skipped" if bad else None
        return rows, note


# Every run file the report reads (besides trials/<n>/metrics.jsonl and the study).
FILES_READ = ("run.json", "data/profile.json", "search.json", "model/card.json", "model/spec.json", "doctor.json",
              "compress/results.json", "fusion/results.json", "data/table.json", "data/preprocess.json")


def load(run_dir: Path) -> Run:
    run = Run(dir=run_dir)
    run.run = _read(run, "run.json", want_dict=True)
    run.profile = _normalise_profile(_read(run, "data/profile.json", want_dict=True))
    run.search = _read(run, "search.json", want_dict=True)
    run.card = _read(run, "model/card.json", want_dict=True)
    run.spec = _read(run, "model/spec.json", want_dict=False)
    # doctor.json is optional: its absence is not "missing".
    run.doctor = _read(run, "doctor.json", want_dict=True, optional=True)
    run.compress = _read(run, "compress/results.json", want_dict=True, optional=True)
    run.fusion = _read(run, "fusion/results.json", want_dict=True, optional=True)
    run.table = _read(run, "data/table.json", want_dict=True, optional=True)
    run.preprocess = _read(run, "data/preprocess.json", want_dict=True, optional=True)
    return run


def _read(run: Run, rel: str, want_dict: bool, optional: bool = False):
    path = run.dir / rel
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        if not optional:
            run.missing.append(rel)
        return None
    except OSError as e:
        run.problems.append(f"{rel} could not be read ({e.__class__.__name__}: {e})")
        return None
    try:
        value = json.loads(text)
    except ValueError as e:
        # Typically a file caught half-written by a crash.
        run.problems.append(f"{rel} is not valid JSON ({e})")
        return None
    if want_dict and not isinstance(value, dict):
        run.problems.append(f"{rel} is not a JSON object (found {type(value).__name__})")
        return None
    return _through_schema(run, rel, value)


def _through_schema(run: Run, rel: str, value):
    """The file as its schema reads it (defaults filled, types coerced), or as
    it is with the schema's complaint recorded when it does not match."""
    model = schemas().get(rel)
    if model is None:
        return value
    try:
        from pydantic import ValidationError

        checked = model.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        run.problems.append(f"{rel} does not match its schema: {where}: {first['msg']} "
                            f"({exc.error_count()} problem(s)); shown as far as possible")
        return value
    run.checked.append(rel)
    return checked.model_dump(mode="json")


_SCHEMAS: dict | None = None


def schemas() -> dict:
    """Run-directory path -> its pydantic model, for every schema module that exists."""
    global _SCHEMAS
    if _SCHEMAS is None:
        found = {}
        try:
            pkg = importlib.import_module("autopilot.schemas")
            from autopilot.schemas import RunFile
        except Exception:  # noqa: BLE001 - no schemas (or one being edited): read the JSON as it is
            pkg = None
        for info in pkgutil.iter_modules(pkg.__path__) if pkg else []:
            try:
                mod = importlib.import_module(f"autopilot.schemas.{info.name}")
            except Exception:  # noqa: BLE001 - a schema being edited must not cost the report
                continue
            for obj in vars(mod).values():
                if (isinstance(obj, type) and issubclass(obj, RunFile) and obj is not RunFile
                        and isinstance(getattr(obj, "FILE", None), str) and obj.__module__ == mod.__name__):
                    found[obj.FILE] = obj
        _SCHEMAS = found
    return _SCHEMAS


# ---- defensive accessors: JSON written by others may hold anything ----------

def get(obj, *keys, default=None):
    """obj[k1][k2]... or default if any step is missing or of the wrong type."""
    for k in keys:
        if isinstance(obj, dict) and k in obj:
            obj = obj[k]
        elif isinstance(obj, list) and isinstance(k, int) and -len(obj) <= k < len(obj):
            obj = obj[k]
        else:
            return default
    return default if obj is None else obj


def num(x) -> float | None:
    """A finite float, or None (bools, strings, NaN and inf are not numbers here)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def as_list(x) -> list:
    return x if isinstance(x, list) else []


def as_dict(x) -> dict:
    return x if isinstance(x, dict) else {}


# Facts of profile.json that the data section already shows from run.json.
_PROFILE_REPEATS = ("name", "kind", "examples", "input_shape", "classes", "fingerprint", "channels", "features")


def _normalise_profile(prof: dict | None) -> dict | None:
    """The profiler writes {"examples": n, "class_counts": {name: n}} per
    split and "train_duplicates"; the sections read "size", a list of counts
    in class order and "duplicates_in_train". Accept both shapes."""
    if not isinstance(prof, dict):
        return prof
    prof = dict(prof)
    classes = prof.get("classes") if isinstance(prof.get("classes"), list) else None
    splits = {}
    for name, sp in (prof.get("splits") or {}).items():
        if not isinstance(sp, dict):
            continue
        sp = dict(sp)
        if "size" not in sp and "examples" in sp:
            sp["size"] = sp["examples"]
        cc = sp.get("class_counts")
        if isinstance(cc, dict):
            keys = classes if classes and all(str(c) in cc for c in classes) else list(cc)
            sp["class_counts"] = [cc[str(k)] for k in keys]
        splits[name] = sp
    if splits:
        prof["splits"] = splits
    if "duplicates_in_train" not in prof and "train_duplicates" in prof:
        prof["duplicates_in_train"] = prof.pop("train_duplicates")
    for k in _PROFILE_REPEATS:
        prof.pop(k, None)
    return prof
