"""Thin commands over the modules; no logic of their own."""
from __future__ import annotations

import argparse
import sys
import time

_STARTED = time.time()  # the budget counts from here, imports included

from .config import COMPRESS_TARGETS, DOCTOR_BUDGET_S, MAX_DROP_LIMIT, PRUNERS, SAMPLERS, SHIP_MODES, RunConfig  # noqa: E402  (pydantic only)


default = RunConfig.default  # every run option's default lives in RunConfig, in one place


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autopilot", description="Train, check and ship a small PyTorch classifier.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="search for a model on a data set and export it to ONNX")
    r.add_argument("data", help="built-in name (digits, mnist1d, mnist5k, fashion), a folder of class sub-folders of images, a CIFAR binary or IDX folder, a .csv or a .npz")
    r.add_argument("--label", help="label column of a CSV (default: a column named label, target, class or y)")
    r.add_argument("--skip-bad", action="store_true", help="skip unreadable images instead of stopping (the count is reported)")
    r.add_argument("--task", choices=["auto", "classification", "regression"], help="what the label of a CSV is (default auto: a numeric label with many distinct values is regression)")
    r.add_argument("--layout", choices=["nhwc", "nchw"], help="layout of 4-D image arrays in an .npz when the shape cannot tell (channels last or first)")
    r.add_argument("--test-split", choices=["seeded", "official"], help="official: the data set's own test set (Fashion-MNIST, CIFAR, IDX t10k); default seeded")
    r.add_argument("--budget", help="wall-clock budget of the whole run, e.g. 90s, 5m, 1h (default 5m when --trials is not given)")
    r.add_argument("--trials", type=int, help="stop after this many finished trials")
    r.add_argument("--sampler", choices=SAMPLERS, help=f"search algorithm (default {default('sampler')})")
    r.add_argument("--space", choices=["components", "templates"],
                   help=f"architecture search space: per-stage components, or the former fixed templates (default {default('space')})")
    r.add_argument("--objective", choices=["accuracy", "pareto"],
                   help=f"accuracy, or pareto: accuracy and ONNX Runtime batch-1 latency searched together, the fastest "
                        f"model within half a point of the most accurate shipped (default {default('objective')})")
    r.add_argument("--max-params", type=int, help="hard limit on the shipped model's parameters; larger configurations are rejected before training")
    r.add_argument("--max-latency-ms", type=float, help="hard limit on the shipped model's batch-1 latency in ONNX Runtime on one thread, measured on this machine")
    r.add_argument("--pruner", choices=PRUNERS, help=f"early stopping of weak trials (default {default('pruner')})")
    r.add_argument("--workers", type=int, help="trial processes on this machine, each with cores/N torch threads (default: one per core)")
    r.add_argument("--storage", help="Optuna storage URL (default: a journal file in the run directory)")
    r.add_argument("--executor", choices=["local", "ray"], help=f"where trials run: processes on this machine, or tasks on a Ray cluster (pip install 'autopilot[ray]'; default {default('executor')})")
    r.add_argument("--ray-address", help="Ray cluster to use, e.g. 10.0.0.1:6379 (default: RAY_ADDRESS, else a new Ray instance here)")
    r.add_argument("--cpus-per-trial", type=float, help=f"CPUs (and torch threads) of each Ray trial or `autopilot worker` trial (default {default('cpus_per_trial')})")
    r.add_argument("--gpus-per-trial", type=float, help=f"GPUs of each Ray trial; 0.5 lets two trials share one (default {default('gpus_per_trial')})")
    r.add_argument("--finalists", type=int,
                   help=f"best trials re-scored by cross-validation when the search ends (default {default('finalists')})")
    r.add_argument("--cv", type=int,
                   help=f"folds of that cross-validation on train+validation; the winner is then retrained on "
                        f"train+validation; 0: ship the search's best trial as trained (default {default('cv')})")
    r.add_argument("--name", help="run name (default: DATA-NNN, the first free number)")
    r.add_argument("--runs-dir", default="runs", help="where run directories go (default ./runs)")
    r.add_argument("--resume", action="store_true", help="continue the study of run --name after an interruption")
    r.add_argument("--overwrite", action="store_true", help="replace an existing run of the same --name")
    r.add_argument("--seed", type=int, help=f"seed of splits, sampler and training (default {default('seed')})")
    r.add_argument("--device", help=f"auto, cpu or cuda (default {default('device')}: cuda when available)")
    r.add_argument("--quiet", action="store_true", help="plain log lines instead of the live view")
    r.add_argument("--force", action="store_true",
                   help="go on even when the doctor finds an error, and ship a model whose ONNX export fails its "
                        "parity check (the card records it)")
    r.add_argument("--no-doctor", action="store_true", help="skip the doctor's pre-flight checks")
    r.add_argument("--no-compress", action="store_true", help="skip the compression stage")
    r.add_argument("--compress-target", choices=COMPRESS_TARGETS,
                   help=f"what compression must improve (default {default('compress_target')})")
    r.add_argument("--max-drop", type=float,
                   help=f"validation accuracy points compression may lose, judged with its uncertainty "
                        f"(default {default('max_drop')}, at most {MAX_DROP_LIMIT:g})")
    r.add_argument("--no-fusion", action="store_true",
                   help="skip the fusion stage (an ensemble of the search's trials and a student distilled from it)")
    r.add_argument("--ship", choices=SHIP_MODES,
                   help=f"what ships among the single model, the ensemble and its student: accurate = the most "
                        f"accurate on validation; balanced = the most accurate within 2x the single model's batch-1 "
                        f"latency; fast = the fastest within --max-drop of the most accurate, never slower than the "
                        f"single model (default {default('ship')})")

    d = sub.add_parser("doctor", help="check a data set and its default model the way a careful engineer would")
    d.add_argument("data", help="the same forms as for `run`")
    d.add_argument("--label", help="label column of a CSV")
    d.add_argument("--task", choices=["auto", "classification", "regression"], default="auto", help="what the label of a CSV is (default auto)")
    d.add_argument("--skip-bad", action="store_true", help="skip unreadable images")
    d.add_argument("--layout", choices=["nhwc", "nchw"], help="layout of 4-D image arrays in an .npz when the shape cannot tell")
    d.add_argument("--seed", type=int, default=default("seed"),
                   help=f"seed of the split and the probes (default {default('seed')})")
    d.add_argument("--budget", default=f"{DOCTOR_BUDGET_S:g}s", help=f"time for all checks (default {DOCTOR_BUDGET_S:g}s)")
    d.add_argument("--json", action="store_true", help="print the findings as JSON instead of a table")

    pr = sub.add_parser("predict", help="run a run's ONNX model on new inputs")
    pr.add_argument("run", help="run directory, e.g. runs/digits-001")
    pr.add_argument("input", help="a .npz (array X), a .csv of features, an image file or a folder of images")
    pr.add_argument("--out", help="write predictions here (.csv or .json); default: CSV to standard output")

    c = sub.add_parser("compress", help="measure ONNX, int8, pruned and distilled candidates; ship the best that helps")
    c.add_argument("run", help="run directory of a finished run")
    c.add_argument("--budget", help="time for the stage, e.g. 2m (default: 25%% of the run's budget, at least 60s)")
    c.add_argument("--target", choices=COMPRESS_TARGETS,
                   help=f"what the shipped model must improve (default: the run's own, else "
                        f"{default('compress_target')}: batch-1 p50)")
    c.add_argument("--max-drop", type=float,
                   help=f"validation accuracy points the shipped model may lose, judged by the 95%% upper bound of "
                        f"the paired drop (default: the run's own, else {default('max_drop')}; at most {MAX_DROP_LIMIT:g})")
    c.add_argument("--seed", type=int,
                   help=f"seed of pruning fine-tuning and distillation (default: the run's own, else {default('seed')})")

    from .monitor.cli import add_parsers as add_monitor_parsers
    from .retrain.cli import add_parsers as add_retrain_parsers
    from .serve.cli import add_parser as add_serve_parser

    add_serve_parser(sub)
    add_monitor_parsers(sub)
    add_retrain_parsers(sub)

    w = sub.add_parser("worker", help="join a running study from another machine (database storage), without Ray")
    w.add_argument("--storage", required=True, help="the run's database URL, e.g. postgresql://user@db-host/autopilot")
    w.add_argument("--name", required=True, help="run name, as given to `autopilot run --name`")
    w.add_argument("--runs-dir", default="runs", help="the runs folder holding run NAME, shared with the driver (default ./runs)")

    rep = sub.add_parser("report", help="(re)write report.html of a run")
    rep.add_argument("run", help="run directory")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":  # before the imports below: the server must never load torch
        from .serve.cli import run as serve_run

        return serve_run(args)
    from rich.console import Console

    console = Console(stderr=True)
    from .config import RunError
    from .data import DataError
    from .schemas import SchemaError

    try:
        if args.command == "run":
            return _cmd_run(args, console)
        if args.command == "doctor":
            return _cmd_doctor(args, console)
        if args.command == "predict":
            from .predict import predict_command

            return predict_command(args.run, args.input, args.out)
        if args.command == "compress":
            return _cmd_compress(args, console)
        if args.command == "monitor":
            from .monitor.cli import run as monitor_run

            return monitor_run(args)
        if args.command in ("retrain", "rollback"):
            from .retrain.cli import run as retrain_run

            return retrain_run(args)
        if args.command == "worker":
            from pathlib import Path

            from .search.join import join_study

            join_study(Path(args.runs_dir) / args.name, args.storage, console=console)
            return 0
        if args.command == "report":
            from .report import write_report

            print(write_report(args.run))
            return 0
    except (DataError, RunError, SchemaError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        # ParityError's and NoModelError's modules load torch: imported once
        # something went wrong, so bad options and data are reported sooner.
        from .export import ParityError
        from .final import NoModelError

        if not isinstance(e, (NoModelError, ParityError)):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def _cmd_run(args, console) -> int:
    from .runner import run

    try:
        rd = run(
            args.data, label=args.label, task=args.task, skip_bad=args.skip_bad, layout=args.layout, test_split=args.test_split,
            budget=args.budget, trials=args.trials,
            sampler=args.sampler, space=args.space, objective=args.objective, max_params=args.max_params, max_latency_ms=args.max_latency_ms, pruner=args.pruner, workers=args.workers, storage=args.storage, name=args.name,
            executor=args.executor, ray_address=args.ray_address, cpus_per_trial=args.cpus_per_trial,
            gpus_per_trial=args.gpus_per_trial, finalists=args.finalists, cv=args.cv,
            runs_dir=args.runs_dir, resume=args.resume, overwrite=args.overwrite, seed=args.seed, device=args.device,
            quiet=args.quiet, doctor=not args.no_doctor, force=args.force, compress=False if args.no_compress else None,
            compress_target=args.compress_target, max_drop=args.max_drop, fusion=False if args.no_fusion else None,
            ship=args.ship, started=_STARTED, console=console,
        )
    except KeyboardInterrupt:
        return 130  # the runner has said how to resume
    closing_lines(rd)
    return 0


def closing_lines(rd) -> None:
    """What ships and how good it is: the shipped file's own figures first,
    the fp32 model's beside them."""
    from .schemas.card import read_card
    from .schemas.compress import read_results

    card = read_card(rd.path)
    ship = card.shipped
    lat = f", batch-1 p50 {ship.latency_ms_batch1:.3f} ms" if ship.latency_ms_batch1 is not None else ""
    if card.regression is not None:  # regression: RMSE, MAE and R² of the shipped file, each ± its standard error
        t = card.regression.test
        print(f"shipped: {ship.name} ({ship.file}): test R² {t.r2:.4f} ± {t.r2_se or 0:.4f}, RMSE {t.rmse:.4g} ± "
              f"{t.rmse_se or 0:.2g}, MAE {t.mae:.4g} ± {t.mae_se or 0:.2g}, val R² {card.regression.val.r2 or 0:.4f}"
              f"{lat}, {ship.file_bytes / 1024:.0f} KiB")
    else:
        print(f"shipped: {ship.name} ({ship.file}): test accuracy {ship.test_accuracy:.4f} ± {ship.test_accuracy_se:.4f}, "
              f"val {ship.val_accuracy:.4f}{lat}, {ship.file_bytes / 1024:.0f} KiB")
    if ship.name != "fp32" and card.fp32 is not None:
        fp = card.fp32
        lat = f", batch-1 p50 {fp.latency_ms_batch1:.3f} ms" if fp.latency_ms_batch1 is not None else ""
        print(f"fp32:    {fp.file}: test accuracy {fp.test_accuracy:.4f} ± {fp.test_accuracy_se:.4f}, "
              f"val {fp.val_accuracy:.4f}{lat}, {fp.file_bytes / 1024:.0f} KiB")
    sel = card.selection
    print(f"model:   {card.family}, {card.params:,} parameters, trial {card.best_trial}"
          + (f" ({sel.how})" if sel is not None and not sel.complete else "") + f", {card.elapsed_s:.0f}s")
    if card.cv is not None:
        how = ""
        if card.cv.retrained:
            how = " (retrained on train+validation" + (
                ", continuing the search's weights)" if card.cv.retrain_warm_start else ")")
        print(f"chosen:  {card.cv.reason}{how}")
    if not card.onnx_parity.passed:
        print(f"WARNING: the ONNX export failed its parity check (argmax agreement {card.onnx_parity.argmax_agree:.4f}, "
              f"max abs diff {card.onnx_parity.max_abs_diff:.2e}); shipped because --force was given")
    if card.best_single is not None and card.ensemble is not None:
        e, b = card.ensemble, card.best_single
        print(f"fusion:  ensemble of trials {', '.join(map(str, e.members))}: test {e.test_accuracy:.4f}, val "
              f"{e.val_accuracy:.4f}, batch-1 {e.latency_ms_batch1:.3f} ms; best single: test {b.test_accuracy:.4f}, "
              f"val {b.val_accuracy:.4f}, batch-1 {b.latency_ms_batch1:.3f} ms")
    if ship.chosen_by == "fusion":
        print(f"why:     {ship.reason}")
    elif (rd.path / "compress" / "results.json").exists():
        print(f"why:     {read_results(rd.path).reason}")
    print(f"card:    {rd.model_dir / 'card.json'}")
    print(f"report:  {rd.report}")


def _cmd_compress(args, console) -> int:
    from .compress import compress_run
    from .config import parse_duration

    from .rundir import RunDir

    compress_run(args.run, budget_s=parse_duration(args.budget), target=args.target, max_drop=args.max_drop,
                 seed=args.seed, console=console)
    closing_lines(RunDir(args.run))
    return 0


def _cmd_doctor(args, console) -> int:
    """Exit 1 when any finding is an error, so the command can gate a pipeline."""
    import json

    from .data import load, split
    from .config import parse_duration
    from .doctor import doctor_dataset, render
    from .search.space import default_model

    from .data.tables import prepare

    ds = load(args.data, label=args.label, skip_bad=args.skip_bad, layout=args.layout, task=args.task)
    splits = split(ds.y, seed=args.seed)
    ds = prepare(ds, splits, seed=args.seed)  # tables: preprocessing fitted on the training rows
    model, hparams = default_model(ds, splits, args.seed)
    report = doctor_dataset(ds, splits, model=model, hparams=hparams, seed=args.seed,
                            budget_s=parse_duration(args.budget))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        render(report, console)
    return 1 if report.has_errors else 0


if __name__ == "__main__":
    sys.exit(main())
