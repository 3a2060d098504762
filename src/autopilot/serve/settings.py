"""Server defaults, in one visible place. No heavy imports: the CLI's
argument parser reads them on every `autopilot` invocation."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Settings:
    """Server defaults, in one place."""
    max_batch: int = 64            # items per ONNX Runtime call
    max_wait_ms: float = 0.0       # extra wait for a fuller batch under load (see batcher.py)
    inline_ms: float = 1.0         # a batch the model computes in less than this runs on the event loop (see batcher.py)
    max_items: int = 256           # inputs per request
    max_body_bytes: int = 8 << 20  # request body limit
    log_url: str | None = None     # SQLAlchemy URL of the request log; default sqlite RUN/serve/requests.db
    raw_keep: int = 10_000         # raw inputs kept for labelling (latest N, plus every labelled one)
    poll_s: float = 1.0            # how often model/versions.json is checked for a promoted version
    threads: int = 1               # ONNX Runtime intra-op threads
    rules: str | None = None       # alert rules file; default RUN/monitor/rules.yaml (written if absent)
    monitor: bool = True           # run the background evaluator
    build_reference: bool = True   # build RUN/monitor/reference.json in a subprocess when it is missing
