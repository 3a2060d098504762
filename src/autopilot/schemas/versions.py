"""model/versions.json: the model versions of a run and which one is served
(written by autopilot.registry; read by the server, predict, monitor and
retrain)."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import ConfigDict, Field

from .base import Part, RunFile


class _ByKey:
    """vs["current"], entry["dir"]: read like the JSON file, for callers written against it."""

    def __getitem__(self, key: str):
        return getattr(self, "from_" if key == "from" else key)

    def get(self, key: str, default=None):
        value = self[key] if key in type(self).model_fields or key == "from" else None
        return default if value is None else value


class VersionEntry(_ByKey, Part):
    version: str  # v1, v2, ...
    dir: str  # its folder, relative to the run: model/vN
    onnx: str  # the file that is served, relative to the run (the compressed one when compression chose one)
    created: str  # ISO 8601 with offset
    source: str  # "run" (autopilot run), "retrain" (autopilot retrain), or what a caller of registry.add_version says
    test_accuracy: float | None = None  # of `onnx` on the run's original test split
    onnx_sha256: str | None = None  # of `onnx` when written: what was compared is what ships
    compressed: str | None = None  # the compression candidate `onnx` is (e.g. int8s, prune50); None: plain fp32 export
    parent: str | None = None  # the version it was compared against (retrain)
    retrain_dir: str | None = None  # retrain/NNN, relative to the run (retrain)


class HistoryEvent(_ByKey, Part):
    # "from" is a Python keyword: the field is from_, written and read as "from".
    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)
    time: str
    action: Literal["init", "promote", "rollback"]
    to: str
    from_: str | None = Field(None, alias="from")


class Versions(_ByKey, RunFile):
    FILE: ClassVar[str] = "model/versions.json"
    current: str
    versions: list[VersionEntry]
    history: list[HistoryEvent]

    def entry(self, version: str) -> VersionEntry | None:
        return next((e for e in self.versions if e.version == version), None)
