"""The model registry: a run's model versions (model/v1, v2, ...), which one
is served, promotion and rollback. No torch: the server imports it.

    from autopilot.registry import versions
    versions.current(run_dir).onnx      # the file to serve now
"""
from . import versions
from .versions import VersionError, current, promote, rollback

__all__ = ["VersionError", "current", "promote", "rollback", "versions"]
