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

from .config import (COMPRESS_SHARE, DEFAULT_BUDGET_S, DOCTOR_BUDGET_S, MIN_COMPRESS_S, RunError, parse_duration,
                     search_reserve)
from .data import Dataset, load, profile, split
from .data.split import save_splits
from .data.stats import arrays, data_info
from .rundata import load_run_data
from .rundir import NAME_RE, RunDir, next_run_name, write_json
from .version import __version__


def compress_share(budget_s: float | None) -> float:
    """Time for compression inside `autopilot run`: a quarter of the budget
    (the run as a whole must end within its budget), or the stage's own
    default when the run has no time budget."""
    if not budget_s:
        from .compress import compress_budget_s

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


def create_run(data: str, *, label, skip_bad, config: dict, runs_dir: Path, name: str | None, overwrite: bool,
               console=None, doctor: bool = True, force: bool = False):
    """Load and validate the data and run the doctor first: bad input never
    leaves a run directory behind."""
    ds = load(data, label=label, skip_bad=skip_bad)
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
    splits = split(ds.y, seed=config["seed"], val=config["val_frac"], test=config["test_frac"])
    findings = preflight(ds, splits, config["seed"], console, force=force) if doctor else None
    # Build in a hidden folder and rename: a crash here leaves no half-made run.
    tmp = RunDir(runs_dir / f".{name}.creating")
    shutil.rmtree(tmp.path, ignore_errors=True)
    tmp.data_dir.mkdir(parents=True)
    save_splits(tmp.splits, splits)
    write_json(tmp.profile, profile(ds, splits))
    if findings is not None:
        write_json(tmp.path / "doctor.json", findings)
    write_json(tmp.run_json, {
        "name": name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "autopilot_version": __version__,
        "seed": config["seed"],
        "config": config,
        "versions": versions(),
        "data": ds.describe(),
        "status": "running",
        "search_elapsed_s": 0.0,
    })
    os.replace(tmp.path, run.path)
    return run, ds, splits


def run(
    data: str,
    *,
    label: str | None = None,
    skip_bad: bool = False,
    budget: str | float | None = None,
    trials: int | None = None,
    sampler: str = "tpe",
    pruner: str = "hyperband",
    workers: int | None = None,
    storage: str | None = None,
    name: str | None = None,
    runs_dir: str | Path = "runs",
    resume: bool = False,
    overwrite: bool = False,
    doctor: bool = True,
    force: bool = False,
    compress: bool = True,
    compress_target: str = "latency",
    max_drop: float = 0.005,
    seed: int = 0,
    device: str = "auto",
    quiet: bool = False,
    val_frac: float = 0.15,
    test_frac: float = 0.15,
    started: float | None = None,
    console=None,
) -> RunDir:
    """Python entry point; the CLI's `run` command calls exactly this."""
    from rich.console import Console

    from .search import PRUNERS, SAMPLERS

    t0 = started or time.time()
    console = console or Console(stderr=True, quiet=False)
    budget_s = parse_duration(budget)
    if sampler not in SAMPLERS:
        raise RunError(f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise RunError(f"unknown pruner {pruner!r}; expected one of {', '.join(PRUNERS)}")
    if workers is None:
        # Small models gain little from intra-op threads and lose a lot when
        # a core is busy; one single-threaded trial per core uses the machine best.
        workers = max(1, min(os.cpu_count() or 1, 4))
    if workers < 1:
        raise RunError("--workers must be at least 1")
    if trials is not None and trials < 1:
        raise RunError("--trials must be at least 1")
    runs_dir = Path(runs_dir)

    if resume:
        if name is None:
            raise RunError("--resume needs --name NAME of the run to continue")
        rd = RunDir(runs_dir / name)
        if not rd.run_json.exists():
            raise RunError(f"no run {str(rd.path)!r} to resume")
        info_json = rd.read_run()
        config = info_json["config"]
        if budget_s is not None:
            config["budget_s"] = info_json["search_elapsed_s"] + budget_s
        if trials is not None:
            config["trials"] = trials
        config.update(workers=workers, device=device)
        rd.update_run(config=config, status="running")
        config, ds, data_arrays, info = load_run_data(rd)
        prior_search_s = float(info_json.get("search_elapsed_s", 0.0))
    else:
        if budget_s is None and trials is None:
            budget_s = DEFAULT_BUDGET_S
        config = {"data": data, "label": label, "skip_bad": skip_bad, "budget_s": budget_s, "trials": trials,
                  "sampler": sampler, "pruner": pruner, "workers": workers, "storage": storage, "seed": seed,
                  "device": device, "val_frac": val_frac, "test_frac": test_frac, "compress": compress,
                  "compress_target": compress_target, "max_drop": max_drop}
        rd, ds, splits = create_run(data, label=label, skip_bad=skip_bad, config=config, runs_dir=runs_dir,
                                    name=name, overwrite=overwrite, console=console, doctor=doctor, force=force)
        data_arrays, info = arrays(ds, splits), data_info(ds, splits)
        prior_search_s = 0.0
        if ds.skipped:
            console.print(f"skipped {len(ds.skipped)} unreadable file(s) (--skip-bad)")
    console.print(f"run [bold]{rd.path}[/bold]: {ds.name} ({ds.kind}, {len(ds)} examples, {ds.n_classes} classes, input {list(ds.input_shape)})", highlight=False)

    from .final import finalize
    from .search.driver import search

    # The final stage (test evaluation, ONNX export, report) needs a few
    # seconds; keep them out of the search so the run ends within budget.
    deadline = None
    compress_s = compress_share(config.get("budget_s")) if config.get("compress", True) else 0.0
    if config.get("budget_s"):
        if compress_s < MIN_COMPRESS_S:
            compress_s = 0.0
        remaining = config["budget_s"] - prior_search_s
        deadline = t0 + max(0.0, remaining - search_reserve(config["budget_s"]) - compress_s)
    search_started = time.time()
    try:
        try:
            study = search(rd, config, data_arrays, info, deadline_wall=deadline, resume=resume, quiet=quiet,
                           console=console)
        finally:
            rd.update_run(search_elapsed_s=prior_search_s + (time.time() - search_started))
        finalize(rd, study, ds, data_arrays, info, config, started=t0, console=console)
        if compress_s > 0:
            from .compress import compress_run

            compress_run(rd.path, budget_s=compress_s, target=config.get("compress_target", "latency"),
                         max_drop=config.get("max_drop", 0.005), seed=config["seed"], console=console,
                         data=data_arrays, device=config.get("device", "auto"))
    except KeyboardInterrupt:
        rd.update_run(status="interrupted")
        console.print(f"interrupted; continue with: autopilot run {config['data']} --resume --name {rd.name}"
                      + (f" --runs-dir {runs_dir}" if str(runs_dir) != "runs" else ""), highlight=False, soft_wrap=True)
        raise
    except Exception:
        rd.update_run(status="failed")
        raise
    rd.update_run(status="done", elapsed_s=time.time() - t0)
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
