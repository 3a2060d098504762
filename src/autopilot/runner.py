"""`autopilot run`: data -> search -> final model -> ONNX -> report.

Each stage reads what the one before wrote in the run directory, so a run
can be resumed after Ctrl-C or kill -9 and a stage can be re-run alone.
"""
from __future__ import annotations

import os
import platform
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pydantic import ValidationError

from .config import (COMPRESS_SHARE, DOCTOR_BUDGET_S, FUSION_SHARE, MIN_COMPRESS_S, RunConfig, RunError,
                     compress_budget_s, describe_error, finalists_reserve, parse_duration, search_reserve)
from .data import Dataset, load, official_test, profile, split
from .data.split import save_splits
from .data.stats import arrays
from .data.table_files import show_table, write_table_files
from .data.tables import prepare
from .rundata import load_run_data, search_info
from .rundir import NAME_RE, RunDir, next_run_name
from .schemas import write
from .schemas.doctor import DoctorFile
from .schemas.profile import Profile
from .schemas.run import RunInfo, read_run, update_run
from .version import __version__

# The training stack (torch, Optuna) is imported in the functions that use it,
# so a bad option or bad data is reported before it loads (1-2 s, not 6).


def tail_s(budget_s: float) -> float:
    """Seconds a budgeted run keeps after fusion for the drift reference and
    the report (a few seconds on small data, more on 70,000 images)."""
    return max(10.0, 0.03 * budget_s)


def compress_share(budget_s: float | None) -> float:
    """Time for compression inside `autopilot run`: a quarter of the budget
    (the run as a whole must end within its budget), or the stage's own
    default when the run has no time budget."""
    if not budget_s:
        return compress_budget_s(None)
    return COMPRESS_SHARE * budget_s


def versions() -> dict:
    import onnxruntime
    import optuna
    import torch

    return {"autopilot": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "optuna": optuna.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}


def preflight(ds: Dataset, splits: dict, seed: int, console, *, force: bool) -> dict:
    """The doctor on the data and the default model, before any search.
    An error stops the run (unless forced) before a run directory exists."""
    from .doctor import doctor_dataset, render
    from .search.space import default_model

    model, hparams = default_model(ds, splits, seed)
    report = doctor_dataset(ds, splits, model=model, hparams=hparams, seed=seed, budget_s=DOCTOR_BUDGET_S)
    render(report, console)
    if report.has_errors and not force:
        ids = ", ".join(sorted({f.id for f in report.findings if f.severity == "error"}))
        raise RunError(f"the doctor found errors ({ids}); fix the data or model as suggested above, or pass --force")
    return report.to_dict()


def create_run(config: RunConfig, *, runs_dir: Path, name: str | None, overwrite: bool, console=None,
               doctor: bool = True, force: bool = False):
    """Load and validate the data and run the doctor first: bad input never
    leaves a run directory behind."""
    ds = load(config.data, label=config.label, skip_bad=config.skip_bad, layout=config.layout, task=config.task)
    runs_dir.mkdir(parents=True, exist_ok=True)
    if name is None:
        name = next_run_name(runs_dir, ds.name)
    elif not NAME_RE.match(name):
        raise RunError(f"bad run name {name!r}: use letters, digits, '.', '_' or '-'")
    run = RunDir(runs_dir / name)
    if run.path.exists():
        if not overwrite:
            raise RunError(f"run {str(run.path)!r} exists; pass --resume to continue it or --overwrite to start again")
        shutil.rmtree(run.path)
    splits = split(ds.y, seed=config.seed, val=config.val_frac, test=config.test_frac,
                   official_test=official_test(ds, config.test_split))
    if ds.table is not None:  # a CSV: preprocessing chosen and fitted on the training rows
        ds = prepare(ds, splits, seed=config.seed)
        show_table(ds, console)
    findings = preflight(ds, splits, config.seed, console, force=force) if doctor else None
    # Build in a hidden folder and rename: a crash here leaves no half-made run.
    tmp = RunDir(runs_dir / f".{name}.creating")
    shutil.rmtree(tmp.path, ignore_errors=True)
    tmp.data_dir.mkdir(parents=True)
    save_splits(tmp.splits, splits)
    write(Profile.model_validate(profile(ds, splits)), tmp.path)
    if ds.table is not None:
        write_table_files(ds, tmp.path)
    if findings is not None:
        write(DoctorFile.model_validate(findings), tmp.path)
    from .doctor.augment_check import excluded_in

    write(RunInfo(
        name=name,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        autopilot_version=__version__,
        seed=config.seed,
        config=config,
        versions=versions(),
        data=ds.describe(),
        status="running",
        augment_exclude=excluded_in(findings, ds.kind),
    ), tmp.path)
    os.replace(tmp.path, run.path)
    return run, ds, splits


def run(
    data: str,
    *,
    budget: str | float | None = None,
    name: str | None = None,
    runs_dir: str | Path = "runs",
    resume: bool = False,
    overwrite: bool = False,
    doctor: bool = True,
    force: bool = False,
    quiet: bool = False,
    started: float | None = None,
    console=None,
    **options,
) -> RunDir:
    """Python entry point; the CLI's `run` command calls exactly this.

    `options` are the fields of RunConfig (label, trials, sampler, pruner,
    workers, storage, seed, device, compress, compress_target, max_drop in
    points, ...); their defaults and reasons live there, in one place.

    `force` goes on past the two gates that otherwise stop a run: errors
    found by the doctor, and an ONNX export that fails its parity check
    (then the card records the failed check as forced).
    """
    from rich.console import Console

    t0 = started or time.time()
    console = console or Console(stderr=True, quiet=False)
    unknown = sorted(set(options) - set(RunConfig.model_fields) | ({"data", "budget_s"} & set(options)))
    if unknown:
        raise RunError(f"unknown option(s) {', '.join(unknown)}; expected budget or one of "
                       f"{', '.join(f for f in RunConfig.model_fields if f not in ('data', 'budget_s'))}")
    budget_s = parse_duration(budget)
    runs_dir = Path(runs_dir)

    if resume:
        if name is None:
            raise RunError("--resume needs --name NAME of the run to continue")
        rd = RunDir(runs_dir / name)
        if not rd.run_json.exists():
            raise RunError(f"no run {str(rd.path)!r} to resume")
        info_json = read_run(rd.path)
        # A resumed run keeps its data, splits and search settings; only how
        # long, how many trials and where it runs may change.
        changes = {k: v for k, v in options.items() if k in ("trials", "workers", "device") and v is not None}
        if budget_s is not None:
            changes["budget_s"] = info_json.search_elapsed_s + budget_s
        try:
            config = info_json.config.model_copy(update=changes)
            config = RunConfig.model_validate(config.model_dump())
        except ValidationError as e:
            raise RunError(describe_error(e)) from None
        update_run(rd.path, config=config, status="running")
        _, ds, data_arrays, info = load_run_data(rd)
        prior_search_s = info_json.search_elapsed_s
    else:
        config = RunConfig.build(data=data, budget_s=budget_s, **options)
        rd, ds, splits = create_run(config, runs_dir=runs_dir, name=name, overwrite=overwrite, console=console,
                                    doctor=doctor, force=force)
        data_arrays = arrays(ds, splits)
        info = search_info(ds, splits, read_run(rd.path))
        prior_search_s = 0.0
        if ds.skipped:
            console.print(f"skipped {len(ds.skipped)} unreadable file(s) (--skip-bad)")
    console.print(f"run [bold]{rd.path}[/bold]: {ds.name} ({ds.kind}, {len(ds)} examples, {f'{ds.n_classes} classes' if ds.task == 'classification' else ds.task}, input {list(ds.input_shape)})", highlight=False)

    from .final import finalize
    from .finalists import reserve_too_small
    from .search.driver import search

    # The final stage (test evaluation, ONNX export, report) needs a few
    # seconds; keep them out of the search so the run ends within budget.
    deadline = final_deadline = reserve_note = None
    compress_s = compress_share(config.budget_s) if config.compress else 0.0
    # The fusion stage's time comes out of the compression share (or, without
    # compression, out of the search), so the run still ends within budget.
    # An ensemble is several models: over --max-params / --max-latency-ms by
    # construction, so with a cost limit the single model ships.
    fuse = config.fusion and not (config.max_params or config.max_latency_ms)
    fusion_s = FUSION_SHARE * compress_share(config.budget_s) if fuse else 0.0
    from .search.table_families import estimators_only

    # A small table searches trees and linear models only: compression,
    # fusion and the finalists' cross-validation are for networks, so the
    # search gets their shares (the stages still run, and say they skip).
    estimators = estimators_only(info)
    if config.budget_s:
        if compress_s < MIN_COMPRESS_S:
            compress_s = 0.0
        remaining = config.budget_s - prior_search_s
        # The finalists' cross-validation and retraining end by final_deadline;
        # they also get whatever the search leaves unused.
        final_deadline = t0 + max(0.0, remaining - search_reserve(config.budget_s)
                                  - (0.0 if estimators else max(compress_s, fusion_s)))
        reserve = 0.0 if estimators else finalists_reserve(config.budget_s, config.cv)
        if reserve and (reserve_note := reserve_too_small(data_arrays, info, config, reserve)):
            console.print(f"[yellow]finalists: {reserve_note}[/yellow]", highlight=False)
            reserve = 0.0
        deadline = final_deadline - reserve
    search_started = time.time()
    try:
        try:
            study = search(rd, config, data_arrays, info, deadline_wall=deadline, resume=resume, quiet=quiet,
                           console=console)
        finally:
            update_run(rd.path, search_elapsed_s=prior_search_s + (time.time() - search_started))
        finalize(rd, study, ds, data_arrays, info, config, started=t0, console=console, force=force,
                 deadline_wall=final_deadline, reserve_note=reserve_note)
        if compress_s > 0:
            from .compress import compress_run

            # What the finalists did not use by their deadline is compression's too.
            unused = max(0.0, final_deadline - time.time()) if final_deadline is not None else 0.0
            compress_run(rd.path, budget_s=compress_s - fusion_s + unused, target=config.compress_target, max_drop=config.max_drop,
                         seed=config.seed, console=console, data=data_arrays, device=config.device)
        if fuse:
            from .fusion.stage import fuse_run

            # What compression did not use is fusion's too: with a small
            # validation split it trains nothing (compress/policy.py), and the
            # student distilled from the ensemble learns with every epoch.
            if config.budget_s:
                run_end = t0 + config.budget_s - prior_search_s - tail_s(config.budget_s)
                fusion_s = max(fusion_s, run_end - time.time())
            try:
                fuse_run(rd.path, budget_s=fusion_s, ship=config.ship, max_drop=config.max_drop, seed=config.seed,
                         data=data_arrays, force=force, console=console, device=config.device)
            except Exception as e:  # the single model already ships; an ensemble problem must not lose it
                console.print(f"[yellow]warning: fusion stage failed ({type(e).__name__}: {e}); the single model ships[/yellow]")
    except KeyboardInterrupt:
        update_run(rd.path, status="interrupted")
        console.print(f"interrupted; continue with: autopilot run {config.data} --resume --name {rd.name}"
                      + (f" --runs-dir {runs_dir}" if str(runs_dir) != "runs" else ""), highlight=False, soft_wrap=True)
        raise
    except Exception:
        update_run(rd.path, status="failed")
        raise
    update_run(rd.path, status="done", elapsed_s=time.time() - t0)
    try:  # what `autopilot serve` and `autopilot monitor` compare live inputs with
        from .monitor.reference import build_reference

        build_reference(rd.path, data=data_arrays)
    except Exception as e:
        console.print(f"[yellow]warning: drift reference not written: {e}[/yellow]")
    try:
        from .report import write_report

        write_report(rd.path)
    except Exception as e:  # the model is shipped; a report problem must not lose it
        console.print(f"[yellow]warning: report not written: {e}[/yellow]")
    return rd
