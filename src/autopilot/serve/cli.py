"""`autopilot serve RUN`: the command's options and its entry point.

The main CLI adds the sub-command with `add_parser(sub)` and runs it with
`run(args)`; `python -m autopilot.serve RUN ...` does the same on its own.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


GIL_SWITCH_S = 0.0005


def add_parser(sub) -> argparse.ArgumentParser:
    from .settings import Settings

    d = Settings()
    s = sub.add_parser("serve", help="serve a run's model over HTTP (predict, feedback, health, metrics)")
    s.add_argument("run", help="run directory, e.g. runs/digits-001")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    s.add_argument("--max-batch", type=int, default=d.max_batch, help=f"items per ONNX Runtime call (default {d.max_batch})")
    s.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms,
                   help="under load, wait this long for a fuller batch (default 0: batch what arrived while the model ran)")
    s.add_argument("--inline-ms", type=float, default=d.inline_ms,
                   help=f"run a batch on the event loop when the model needs less than this, in ms (default {d.inline_ms:g})")
    s.add_argument("--max-items", type=int, default=d.max_items, help=f"inputs per request (default {d.max_items})")
    s.add_argument("--max-body", type=int, default=d.max_body_bytes, help=f"request body limit in bytes (default {d.max_body_bytes})")
    s.add_argument("--log-url", help="SQLAlchemy URL of the request log (default sqlite:///RUN/serve/requests.db)")
    s.add_argument("--raw-keep", type=int, default=d.raw_keep, help=f"raw inputs kept for labelling and retraining (default {d.raw_keep}; 0 stores none)")
    s.add_argument("--rules", help="alert rules YAML (default RUN/monitor/rules.yaml, written if absent)")
    s.add_argument("--threads", type=int, default=d.threads, help=f"ONNX Runtime threads (default {d.threads})")
    s.add_argument("--no-monitor", action="store_true", help="no background drift/alert evaluation")
    return s


def serve(run_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000, **settings) -> None:
    """Python entry point: blocks until Ctrl-C."""
    import uvicorn

    from ..registry import versions
    from ..monitor.alerts import load_config
    from .app import Settings, create_app

    ref = versions.current(run_dir)
    if not ref.onnx.exists() or not ref.card.exists():
        raise FileNotFoundError(f"no model in {run_dir!r} ({ref.onnx} missing); finish `autopilot run` first")
    load_config(run_dir, settings.get("rules"))  # a bad rules file stops here with one line, before uvicorn starts
    # The request-log, evaluator and ONNX Runtime threads each take the GIL
    # from the event loop now and then, and the loop waits up to one switch
    # interval to get it back. Python's 5 ms default made that wait a large
    # part of the p99; 0.5 ms cut the p99 by about a fifth (wrk, 32
    # connections, medians of 4 alternating runs on the busy 2-core machine).
    sys.setswitchinterval(GIL_SWITCH_S)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(run_dir, Settings(**settings))
    # uvloop + httptools: the fastest pure-Python-free transport uvicorn has;
    # one process, so the micro-batcher sees every request.
    # No proxy-header middleware, Server or Date headers: per-request work
    # nobody here needs (the server binds 127.0.0.1 unless told otherwise).
    uvicorn.run(app, host=host, port=port, loop="uvloop", http="httptools", access_log=False, log_level="warning",
                timeout_graceful_shutdown=5, proxy_headers=False, server_header=False, date_header=False)


def run(args) -> int:
    from ..monitor.alerts import RulesError
    from ..registry.versions import VersionError

    try:
        serve(args.run, host=args.host, port=args.port, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, inline_ms=args.inline_ms,
              max_items=args.max_items, max_body_bytes=args.max_body, log_url=args.log_url, raw_keep=args.raw_keep,
              rules=args.rules, threads=args.threads, monitor=not args.no_monitor)
    except (FileNotFoundError, RulesError, VersionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m autopilot.serve")
    sub = p.add_subparsers(dest="command", required=True)
    add_parser(sub)
    return run(p.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)]))
