"""The base of every run-directory file model, and validated read/write."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ..config import describe_error
from ..rundir import write_json


class SchemaError(ValueError):
    """A run-directory file does not match its schema: says which file and field."""


class RunFile(BaseModel):
    """A JSON file of the run directory. `FILE` is its path inside the run."""
    model_config = ConfigDict(extra="forbid")
    FILE: ClassVar[str]


class Part(BaseModel):
    """A nested object of a run file; unknown fields are refused here too."""
    model_config = ConfigDict(extra="forbid")


M = TypeVar("M", bound=RunFile)


def path_of(model: type[RunFile], run_dir: str | Path) -> Path:
    return Path(run_dir) / model.FILE


def read(model: type[M], run_dir: str | Path) -> M:
    """Read and validate `model.FILE` of a run directory."""
    path = path_of(model, run_dir)
    try:
        return model.model_validate_json(path.read_bytes())
    except ValidationError as e:
        raise SchemaError(f"{path}: {describe_error(e)} ({e.error_count()} problem(s))") from None


def validate(model: type[M], obj: dict, source: str = "") -> M:
    try:
        return model.model_validate(obj)
    except ValidationError as e:
        raise SchemaError(f"{source or model.FILE}: {describe_error(e)} ({e.error_count()} problem(s))") from None


def write(obj: RunFile, run_dir: str | Path) -> Path:
    """Validate and write atomically; returns the path written."""
    path = path_of(type(obj), run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, obj.model_dump(mode="json"))
    return path
