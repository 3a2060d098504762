"""`autopilot retrain` and `autopilot rollback`: options and entry points.
The main CLI adds them with `add_parsers(sub)` and runs `run(args)` for
args.command in COMMANDS; `python -m autopilot.retrain RUN ...` (what the
server starts when an alert says `on_fire: retrain`) runs `main`."""
from __future__ import annotations

import argparse
import sys

from .rule import DEFAULT_ALPHA, DEFAULT_TOLERANCE

COMMANDS = ("retrain", "rollback")


def add_parsers(sub) -> None:
    r = sub.add_parser("retrain", help="train a challenger on new labelled data; promote it if it wins "
                                       "(exit 0 promoted, 1 not, 2 error or too few examples)")
    add_retrain_arguments(r)
    b = sub.add_parser("rollback", help="serve the previous model version again")
    b.add_argument("run", help="run directory")


def add_retrain_arguments(p) -> None:
    p.add_argument("run", help="run directory")
    p.add_argument("--data", help="new labelled data: any form `autopilot run` reads, same classes and input shape")
    p.add_argument("--label", help="label column of a CSV")
    p.add_argument("--from-feedback", action="store_true", help="use the labelled predictions of the request log")
    p.add_argument("--budget", default="5m", help="time for search and compression together (default 5m)")
    p.add_argument("--compress-budget", help="time for compressing the challenger (default: a quarter of --budget, "
                                             "as in `autopilot run`)")
    p.add_argument("--trials", type=int, help="stop the search after this many trials (default: budget only)")
    p.add_argument("--top-k", type=int, default=3, help="best trials of the previous study to start from (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the new-data split and the search (default 0)")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                   help=f"level of both paired tests (default {DEFAULT_ALPHA:g})")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help=f"non-inferiority margin on the original test split, in points of accuracy "
                        f"(default {DEFAULT_TOLERANCE:g})")
    p.add_argument("--log-url", help="SQLAlchemy URL of the request log (default RUN/serve/requests.db)")
    p.add_argument("--no-promote", action="store_true", help="compare only; never promote")
    p.add_argument("--force", action="store_true", help="compare a challenger whose ONNX export failed the parity check")


def run(args) -> int:
    """Exit status: 0 promoted (or rolled back), 1 not promoted, 2 an error."""
    from ..config import RunError
    from ..data import DataError
    from ..registry.versions import VersionError
    from ..schemas import SchemaError

    try:
        if args.command == "rollback":
            from ..registry.versions import rollback

            version = rollback(args.run)
            print(f"rolled back: {args.run} now serves {version}")
            return 0
        if args.command == "retrain":
            return _retrain(args)
    except (DataError, RunError, VersionError, SchemaError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    raise ValueError(f"not a retrain command: {args.command}")


def _retrain(args) -> int:
    from ..final import NoModelError
    from .loop import RetrainError, retrain

    try:
        d = retrain(args.run, data=args.data, from_feedback=args.from_feedback, label=args.label, budget=args.budget,
                    trials=args.trials, top_k=args.top_k, seed=args.seed, alpha=args.alpha, tolerance=args.tolerance,
                    compress_budget=args.compress_budget, log_url=args.log_url, promote=not args.no_promote,
                    force=args.force, log=lambda m: print(m, file=sys.stderr))
    except (RetrainError, NoModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n, o = d.new_data, d.original_test
    print(f"new data ({n.examples}): champion {d.champion.version} {n.champion_accuracy:.4f}, challenger "
          f"{n.challenger_accuracy:.4f}, p = {n.p_value:.3g}; original test ({o.examples}): "
          f"{o.champion_accuracy:.4f} vs {o.challenger_accuracy:.4f}, drop <= {o.drop_upper_bound:.2f} points, "
          f"p = {o.p_value:.3g}")
    print(f"promoted: now serving {d.version} ({d.challenger.compressed or 'fp32'})" if d.version
          else f"not promoted ({d.reason}); see {d.retrain_dir}/decision.json")
    return 0 if d.version else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m autopilot.retrain", description="retrain a run's model")
    add_retrain_arguments(p)
    args = p.parse_args(argv)
    args.command = "retrain"
    return run(args)
