"""`autopilot monitor`, `autopilot retrain` and `autopilot rollback`: options
and entry points. The main CLI adds them with `add_parsers(sub)` and runs
`run(args)` for args.command in COMMANDS."""
from __future__ import annotations

import sys

COMMANDS = ("monitor", "retrain", "rollback")


def add_parsers(sub) -> None:
    m = sub.add_parser("monitor", help="drift, accuracy, latency and alert states of a served run (exit 1 while an alert fires)")
    m.add_argument("run", help="run directory")
    m.add_argument("--rules", help="alert rules YAML (default RUN/monitor/rules.yaml, written if absent)")
    m.add_argument("--log-url", help="SQLAlchemy URL of the request log (default RUN/serve/requests.db)")
    m.add_argument("--json", action="store_true", help="print metrics and alerts as JSON")
    m.add_argument("--prometheus-rules", metavar="FILE", help="write the rules as Prometheus alerting rules to FILE and exit")
    m.add_argument("--notify", action="store_true", help="POST firing alerts to the rules' webhook")

    r = sub.add_parser("retrain", help="train a challenger on new labelled data; promote it if it wins (exit 1 if not)")
    add_retrain_arguments(r)

    b = sub.add_parser("rollback", help="serve the previous model version again")
    b.add_argument("run", help="run directory")


def add_retrain_arguments(p) -> None:
    p.add_argument("run", help="run directory")
    p.add_argument("--data", help="new labelled data: any form `autopilot run` reads, same classes and input shape")
    p.add_argument("--label", help="label column of a CSV")
    p.add_argument("--from-feedback", action="store_true", help="use the labelled predictions of the request log")
    p.add_argument("--budget", default="5m", help="search time (default 5m)")
    p.add_argument("--trials", type=int, help="stop after this many trials (default: budget only)")
    p.add_argument("--top-k", type=int, default=3, help="best trials of the previous study to start from (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the new-data split and the search (default 0)")
    p.add_argument("--tolerance", type=float, default=0.0, help="accuracy the challenger may lose on the regression set (default 0)")
    p.add_argument("--log-url", help="SQLAlchemy URL of the request log (default RUN/serve/requests.db)")
    p.add_argument("--no-promote", action="store_true", help="compare only; never promote")


def run(args) -> int:
    from ..data import DataError
    from .alerts import RulesError
    from .versions import VersionError

    try:
        if args.command == "monitor":
            from .status import monitor_command

            return monitor_command(args.run, rules=args.rules, log_url=args.log_url, as_json=args.json,
                                   prometheus_rules_file=args.prometheus_rules, notify=args.notify)
        if args.command == "retrain":
            from .retrain import run as retrain_run

            return retrain_run(args)
        if args.command == "rollback":
            from .versions import rollback

            version = rollback(args.run)
            print(f"rolled back: {args.run} now serves {version}")
            return 0
    except (DataError, RulesError, VersionError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    raise ValueError(f"not a monitor command: {args.command}")


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m autopilot.monitor")
    sub = p.add_subparsers(dest="command", required=True)
    add_parsers(sub)
    return run(p.parse_args(argv))
