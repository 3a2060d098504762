"""One typed definition per run-directory file, shared by the code that
writes the file and every reader (report, predict, serve, monitor).

Each file's model lives in a module named after the file and declares
`FILE`, its path inside the run directory. Models forbid unknown fields: a
writer that adds a field must add it here, so readers learn of it.

    from autopilot.schemas import read, write
    from autopilot.schemas.run import RunInfo
    info = read(RunInfo, run_dir)           # validated, typed
    write(info, run_dir)                    # atomic, validated
"""
from .base import RunFile, SchemaError, read, write

__all__ = ["RunFile", "SchemaError", "read", "write"]
