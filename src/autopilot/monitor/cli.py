"""`autopilot monitor`: options and entry point. The main CLI adds it with
`add_parsers(sub)` and runs `run(args)`; `python -m autopilot.monitor
monitor RUN ...` does the same on its own. (`retrain` and `rollback` live in
autopilot.retrain.cli: monitoring sits below retraining and never imports it.)"""
from __future__ import annotations

import sys

COMMANDS = ("monitor",)


def add_parsers(sub) -> None:
    m = sub.add_parser("monitor", help="drift, accuracy, latency and alert states of a served run (exit 1 while an alert fires)")
    m.add_argument("run", help="run directory")
    m.add_argument("--rules", help="alert rules YAML (default RUN/monitor/rules.yaml, written if absent)")
    m.add_argument("--log-url", help="SQLAlchemy URL of the request log (default RUN/serve/requests.db)")
    m.add_argument("--json", action="store_true", help="print metrics and alerts as JSON")
    m.add_argument("--prometheus-rules", metavar="FILE", help="write the rules as Prometheus alerting rules to FILE and exit")
    m.add_argument("--notify", action="store_true", help="POST firing alerts to the rules' webhook")


def run(args) -> int:
    """Exit status: 0 no alert fires, 1 an alert fires, 2 an error (one line on stderr)."""
    from ..data import DataError
    from ..registry.versions import VersionError
    from .alerts import RulesError
    from .status import monitor_command

    if args.command not in COMMANDS:
        raise ValueError(f"not a monitor command: {args.command}")
    try:
        return monitor_command(args.run, rules=args.rules, log_url=args.log_url, as_json=args.json,
                               prometheus_rules_file=args.prometheus_rules, notify=args.notify)
    except (DataError, RulesError, VersionError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m autopilot.monitor")
    sub = p.add_subparsers(dest="command", required=True)
    add_parsers(sub)
    return run(p.parse_args(argv))
