"""The fusion stage of `autopilot run`, after the final model and its
compression: an ensemble of the search's completed trials, a student
distilled from it, and the choice of what ships among the three.

  1. ensemble selection (select.greedy_ensemble) on held-out predictions
     (members.selection_pool): the search's trials' stored validation logits
     and the cross-validated finalists' bags' out-of-fold logits, on the
     validation examples outside the gate slice; the shipped model, when
     retrained, stands in for its own trial, with the siblings that fit
     (siblings.py: its configuration retrained with other seeds); its
     trial keeps at least two thirds of the weight (select.py's anchor);
  2. the chosen members as one ONNX graph (ensemble.Ensemble), parity-checked
     against the PyTorch members on the validation inputs: a failed check
     keeps it from shipping unless --force;
  3. a student distilled from the ensemble in what is left of the slice
     (student.py: the single model's architecture, warm-started);
  4. (every figure below is on the gate slice, data/gate.py, when the
     shipped model was retrained on train+validation: data none of the
     candidates trained on) the single model as it ships now (the compressed file when compression
     chose one), the ensemble and the student, measured together: validation
     accuracy in ONNX Runtime, file size, batch-1 and batch-64 latency
     interleaved (compress.measure);
  5. compress.policy.choose_ship picks by --ship on those measurements;
  6. only then the test split, once, for every candidate's test accuracy.

What ships is written where predict, serve and the model registry already
look for the shipped file, compress/chosen.onnx, so they load an ensemble
or a student unchanged; model/card.json's `shipped` names it (chosen_by
"fusion") and its `best_single`, `ensemble` and `student` entries hold the
side-by-side figures; fusion/results.json has the details.
"""
from __future__ import annotations

import math
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from ..compress import measure
from ..compress.policy import choose_ship
from ..compress.stage import TRAIN_THREADS
from ..data.gate import GATED, load_gate, with_gate
from ..export import check_parity, export_onnx
from ..models import count_params, load_model, save_model
from ..models.estimators import FAMILIES as ESTIMATOR_FAMILIES
from ..rundir import WEIGHTS_FILE, RunDir, write_json
from ..schemas.card import FusedFigures, ModelFigures, read_card, write_card
from ..schemas.fusion import FusionResults
from ..stats import paired
from ..train import DEFAULTS
from . import members as pool_of
from .ensemble import Ensemble
from .capped import cap_ms, capped_selection, member_costs
from .select import ANCHOR_WEIGHT, BAGS, INIT, MIN_WEIGHT, ROUNDS, greedy_ensemble
from .siblings import train_siblings
from .student import distil_student

LATENCY_S = (2.0, 8.0)  # the interleaved timing: at least, at most (seconds)
MIN_STUDENT_S = 1.0  # below this slice no distillation is tried
SHIPPED = "compress/chosen.onnx"  # the file registry.shipped_onnx serves when it exists
FP32 = "model/model.onnx"
WORKDIR = ".fusion.tmp"  # the stage writes here and renames it to fusion/ when complete
CAPPED = "ensemble-capped"  # the candidate selected within --ship balanced's latency cap (capped.py)


class _Log:
    def __init__(self, console):
        self.console, self.steps = console, []

    def __call__(self, step: str, status: str, why: str = "") -> None:
        self.steps.append({"step": step, "status": status, "why": why})
        style = {"done": "green", "skipped": "yellow", "failed": "red"}.get(status, "")
        self.console.print(f"  fusion: {step:<18} [{style}]{status}[/{style}]" + (f"  {why}" if why else ""),
                           highlight=False)


def _single_file(card) -> str:
    """The single model's file as it ships now (before this stage)."""
    if card.shipped is None:
        return FP32
    if card.shipped.chosen_by == "fusion":  # an earlier fusion run replaced it: start from the fp32 file
        return FP32
    return card.shipped.file


@contextmanager
def _threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def ship_file(rd: RunDir, rel: str) -> Path:
    """Make a file of the run the one predict, serve and the registry load
    (atomically: a server reloading never sees half a file)."""
    dest = rd.path / SHIPPED
    dest.parent.mkdir(exist_ok=True)
    tmp = dest.with_name(".chosen.onnx.tmp")
    shutil.copy2(rd.path / rel, tmp)
    tmp.replace(dest)
    return dest


def _se(acc: float | None, n: int) -> float | None:
    return math.sqrt(acc * (1 - acc) / n) if acc is not None and n else None


def fuse_run(run_dir, *, budget_s: float, ship: str, max_drop: float, seed: int = 0, data: dict | None = None,
             force: bool = False, console=None, device: str = "cpu") -> dict | None:
    """Run the stage on a finished run directory; returns fusion/results.json's
    content, or None when fewer than two completed trials can be fused."""
    from rich.console import Console

    console = console or Console(stderr=True)
    started = time.monotonic()
    deadline = started + max(0.0, float(budget_s))
    rd = RunDir(run_dir)
    card = read_card(rd.path)
    if data is None:
        from ..rundata import load_run_data

        _, _, data, _ = load_run_data(rd)
    log = _Log(console)
    gate = load_gate(rd.data_dir)
    retrained = card.cv is not None and card.cv.retrained and card.family != "gbt"
    sel_pool = pool_of.selection_pool(rd, data["val"][1], gate, len(data["train"][1]),
                                      shipped_trial=card.best_trial if retrained else None,
                                      shipped_dir=rd.model_dir if retrained else None)
    data = with_gate(rd.data_dir, data)  # judged on the gate slice when the shipped model trained on validation
    for note in sel_pool.notes:
        log("pool", "skipped", note)
    logits = sel_pool.logits
    if card.task != "classification":  # selection and the weighted softmax are for class probabilities
        log("ensemble", "skipped", f"task {card.task}: ensembles are built for classification")
        return None
    if card.family in ESTIMATOR_FAMILIES:  # models/estimators.py: the single model is no PyTorch module to fuse or distil
        log("ensemble", "skipped", f"the final model is fitted by scikit-learn ({card.family}), not a PyTorch module")
        return None
    if not logits or (sum(len(sel_pool.models[n]) for n in logits) < 2 and not (retrained and data.get(GATED))):
        # (A retrained shipped model may still get siblings: then its trial alone makes an ensemble.)
        log("ensemble", "skipped", f"{len(logits)} completed trial(s) to choose from; an ensemble needs two")
        return None

    out = rd.path / WORKDIR
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    try:
        with _threads(TRAIN_THREADS):  # as compression does: one busy core must not stall the other
            results, chosen_file = _fuse(rd, out, card, data, sel_pool, log, ship=ship, max_drop=max_drop, seed=seed,
                                         force=force, deadline=deadline, device=device, started=started,
                                         budget_s=budget_s)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    shutil.rmtree(rd.path / "fusion", ignore_errors=True)  # complete: the new folder replaces the old
    out.replace(rd.path / "fusion")
    if chosen_file is None and card.shipped is not None and card.shipped.chosen_by == "fusion":
        (rd.path / SHIPPED).unlink(missing_ok=True)  # an earlier fusion run's choice no longer ships
    if chosen_file is not None:
        ship_file(rd, chosen_file)
    write_card(_card(card, results, n_test=len(data["test"][1])), rd.path)
    return results.model_dump(mode="json")


def _fuse(rd: RunDir, out: Path, card, data: dict, sel_pool: pool_of.Pool, log, *, ship, max_drop, seed, force,
          deadline, device, started, budget_s):
    Xva, yva = data["val"]
    single_model, spec = load_model(rd.model_dir)
    base_pool = sel_pool  # without siblings: a bag of them is over --ship balanced's latency cap by itself
    sel_pool = _with_siblings(rd, out, card, spec, data, sel_pool, log, seed=seed, deadline=deadline, device=device)
    logits = sel_pool.logits
    sel = greedy_ensemble(logits, sel_pool.y, seed=seed, anchor=f"trial {card.best_trial}")
    names = list(sel.members)
    trials = [sel_pool.trial[m] for m in names]
    log("selection", "done", f"{len(names)} of {len(logits)} ({sel_pool.kind}), weights "
        + ", ".join(f"{m}:{w:.2f}" for m, w in zip(names, sel.weights)) + f"; selection accuracy {sel.val_accuracy:.4f}")
    single_file = _single_file(card)
    candidates = [{"name": "single", "file": single_file, "method": card.shipped.method if card.shipped and
                   single_file != FP32 else "fp32", "params": count_params(single_model)}]
    if single_file != FP32:
        candidates.append({"name": "fp32", "file": FP32, "method": "fp32", "params": candidates[0]["params"]})
    teacher, teacher_ok, forced, capped_record = None, False, False, None
    n_models = sum(len(sel_pool.models[m]) for m in names)
    if n_models < 2:
        log("ensemble", "skipped", f"selection kept one model ({names[0]}): nothing to fuse")
    else:
        teacher, cand = _ensemble_candidate("ensemble", sel, sel_pool, out, card, Xva, force, log)
        teacher_ok, forced = cand["parity"]["passed"], bool(cand["parity"].get("forced"))
        candidates.append(cand)
        if ship == "balanced":  # the free selection may be too slow to ship: one within the cap too (capped.py)
            costs, single_ms = member_costs(base_pool, rd.path / single_file, card.input_shape, Xva, out / ".costs")
            # Siblings add models, not logits: the free selection is the same on both pools.
            capped, why = capped_selection(base_pool, sel, costs, single_ms)
            log("capped ensemble", "done" if capped else "skipped", why)
            capped_record = {"cap_ms": cap_ms(single_ms), "single_ms": single_ms, "costs_ms": costs,
                             "why": why, "selection": None if capped is None else _selection_record(rd, capped, base_pool)}
            if capped is not None:
                candidates.append(_ensemble_candidate(CAPPED, capped, base_pool, out, card, Xva, force, log)[1])

    reserve = LATENCY_S[0] + 1.0  # timing, test evaluation, writing
    slice_s = deadline - time.monotonic() - reserve
    usable_teacher = teacher is not None and (teacher_ok or forced)
    if not usable_teacher:
        log("student", "skipped", "no ensemble to learn from")
    elif slice_s < MIN_STUDENT_S:
        log("student", "skipped", f"budget ({max(0.0, slice_s):.1f} s left for training)")
    else:
        hp = {**DEFAULTS, **(card.hyperparameters.training or {})}
        made = distil_student(teacher, single_model, spec, hp, data, kind=card.kind, seed=seed, slice_s=slice_s,
                              device=device)
        if made is None:
            log("student", "skipped", f"not one epoch fits the {slice_s:.1f} s slice")
        else:
            student, info = made
            save_model(out / "student", student, spec)  # rebuilt from its spec like any model
            path = export_onnx(student, card.input_shape, out / "student.onnx")
            parity = check_parity(student, path, Xva)
            candidates.append({"name": "student", "file": "fusion/student.onnx", "method": "distill",
                               "params": count_params(student), "parity": parity, "members": trials,
                               "student": spec, "train": info})
            log("student", "done" if parity["passed"] else "failed",
                f"{info['epochs_run']}/{info['epochs']} epochs in {info['train_s']:.0f} s, torch val "
                f"{info['torch_val_acc']:.4f}" + ("" if parity["passed"] else "; ONNX parity failed"))

    def abs_path(c):
        rel = c["file"]
        return out / Path(rel).name if rel.startswith("fusion/") else rd.path / rel

    # Validation accuracy and latency, measured the same way for every file.
    correct = {}
    for c in candidates:
        c["file_bytes"] = abs_path(c).stat().st_size
        correct[c["name"]] = measure.onnx_logits(abs_path(c), Xva).argmax(1) == yva
        c["val_acc"] = float(correct[c["name"]].mean())
    for c in candidates:  # the evidence choose_ship weighs: the same examples, against the single model
        c["val_paired"] = paired(correct["single"], correct[c["name"]]).to_dict()
    lat_s = min(LATENCY_S[1], max(LATENCY_S[0], deadline - time.monotonic() - 2.0))
    lat = measure.measure_latency({c["name"]: abs_path(c) for c in candidates}, Xva, budget_s=lat_s)
    for c in candidates:
        c.update(lat[c["name"]])
    # The fp32 row is the card's best_single; whether the single model ships
    # compressed was compression's choice, made with its own rules.
    chosen, reason = choose_ship([c for c in candidates if c["name"] != "fp32"], ship, max_drop)
    log("choice", "done", reason)

    # The test split, once, after everything is chosen.
    Xte, yte = data["test"]
    for c in candidates:
        c["test_acc"] = float((measure.onnx_logits(abs_path(c), Xte).argmax(1) == yte).mean())

    pool = [{"trial": sel_pool.trial[m], "val_accuracy": float((z.argmax(1) == sel_pool.y).mean()),
             "models": len(sel_pool.models[m]), "name": m} for m, z in logits.items()]
    results = FusionResults(
        run=rd.name, ship=ship, max_drop=max_drop, seed=seed, budget_s=float(budget_s),
        elapsed_s=round(time.monotonic() - started, 1), pool=pool,
        selection={"method": "greedy ensemble selection with replacement (Caruana et al. 2004), sorted init, "
                             f"on temperature-scaled members' validation nll, bagged ({BAGS} selections on random halves "
                             f"of the rows, mean weights, members under {MIN_WEIGHT:g} dropped), the shipped model's "
                             f"trial kept at {ANCHOR_WEIGHT:.2f} of the weight at least",
                   "rounds": ROUNDS, "init": INIT,
                   "pool": sel_pool.kind, "selected_on": sel_pool.selected_on, **_selection_record(rd, sel, sel_pool)},
        capped=capped_record, candidates=candidates, chosen=chosen["name"],
        judged_on=(f"the gate slice: {len(yva)} validation examples no shipped or candidate model trained on "
                   "(data/gate.py)" if data.get(GATED) else f"the validation split ({len(yva)} examples)"),
        chosen_path=single_file if chosen["name"] == "single" else SHIPPED,
        reason=reason, forced=bool((chosen.get("parity") or {}).get("forced")), load_average=measure.load_average(),
        plan=log.steps)
    write_json(out / "results.json", results.model_dump(mode="json"))
    chosen_file = None if chosen["name"] == "single" else chosen["file"]
    return results, chosen_file


def _with_siblings(rd: RunDir, out: Path, card, spec: dict, data: dict, sel_pool: pool_of.Pool, log, *, seed,
                   deadline, device) -> pool_of.Pool:
    """The pool with the shipped model's siblings beside it (siblings.py),
    as many as fit their share of the time left. Only for a model retrained
    on train+validation: its recipe (hyper-parameters, warm start, rows) is
    on the card and in the gated data."""
    name = f"trial {card.best_trial}"
    if not (data.get(GATED) and card.cv is not None and card.cv.retrained):
        log("siblings", "skipped", "the shipped model was not retrained on train+validation here")
        return sel_pool
    if name not in sel_pool.models:
        log("siblings", "skipped", f"the shipped model's {name} is not in the pool")
        return sel_pool
    hp = card.hyperparameters.training or {}
    if "epochs" not in hp:
        log("siblings", "skipped", "the card does not record the retraining's hyper-parameters")
        return sel_pool
    slice_s = deadline - time.monotonic() - LATENCY_S[0] - 1.0
    warm = rd.trial_dir(card.best_trial) / WEIGHTS_FILE if card.cv.retrain_warm_start else None
    made, why = train_siblings(out, spec, {**DEFAULTS, **hp}, warm, data["train"], kind=card.kind,
                               seed=seed + card.best_trial, slice_s=slice_s, retrain_s=card.cv.retrain_s,
                               device=device)
    log("siblings", "done" if made else "skipped", why)
    if not made:
        return sel_pool
    return sel_pool.with_models(name, made, f"{name}: the shipped model and {len(made)} sibling(s) (its configuration "
                                "retrained with other seeds) share its weight")


def _selection_record(rd: RunDir, sel, sel_pool: pool_of.Pool) -> dict:
    """results.json's members, accuracy, likelihood and history of a selection."""
    def rel(folder: Path) -> str:  # siblings are written in the stage's working folder, renamed to fusion/ at the end
        parts = folder.relative_to(rd.path).parts
        return str(Path("fusion", *parts[1:]) if parts[0] == WORKDIR else Path(*parts))

    return {"members": [{"trial": sel_pool.trial[m], "weight": w, "temperature": tt, "models": len(sel_pool.models[m]),
                         "name": m, "file": rel(sel_pool.models[m][0]) if len(sel_pool.models[m]) == 1 else None,
                         "files": [rel(f) for f in sel_pool.models[m]]}
                        for m, w, tt in zip(sel.members, sel.weights, sel.temperatures)],
            "val_accuracy": sel.val_accuracy, "val_nll": sel.val_nll, "history": [list(h) for h in sel.history]}


def _ensemble_candidate(name: str, sel, sel_pool: pool_of.Pool, out: Path, card, Xva, force: bool, log):
    """(the selected members as one module, its candidate: one ONNX graph,
    parity-checked on the validation inputs; the test split is not read yet).
    A failed check keeps it from shipping unless --force."""
    # A bag's weight is shared by its fold models, each with the bag's temperature.
    models, weights, temps = [], [], []
    for m, w, tt in zip(sel.members, sel.weights, sel.temperatures):
        loaded = sel_pool.load(m)
        models += loaded
        weights += [w / len(loaded)] * len(loaded)
        temps += [tt] * len(loaded)
    module = Ensemble(models, weights, temps).eval()
    path = export_onnx(module, card.input_shape, out / f"{name}.onnx")
    parity = check_parity(module, path, Xva)
    if not parity["passed"]:
        if force:
            parity["forced"] = True
        log(name, "failed" if not force else "done",
            f"ONNX parity failed (max abs diff {parity['max_abs_diff']:.2e}, argmax agreement "
            f"{parity['argmax_agree']:.4f})" + ("; kept as a candidate because of --force" if force else
                                                "; not shipped (--force ships it anyway)"))
    else:
        log(name, "done", f"one ONNX graph of {len(models)} models, parity passed "
                          f"(max abs diff {parity['max_abs_diff']:.1e})")
    return module, {"name": name, "file": f"fusion/{name}.onnx", "method": "ensemble", "params": count_params(module),
                    "parity": parity, "members": [sel_pool.trial[m] for m in sel.members]}


def _figures(c, n_test: int, **extra) -> FusedFigures:
    return FusedFigures(file=c.file, val_accuracy=c.val_acc, test_accuracy=c.test_acc,
                        test_accuracy_se=_se(c.test_acc, n_test), test_examples=n_test, params=c.params,
                        latency_ms_batch1=c.latency_ms["1"].p50, file_bytes=c.file_bytes, **extra)


def _card(card, results: FusionResults, *, n_test: int):
    single = results.candidate("fp32") or results.candidate("single")  # the best trial's own model
    update = {"best_single": _figures(single, n_test, trial=card.best_trial)}
    ens = results.candidate("ensemble")
    if ens is not None:
        update["ensemble"] = _figures(ens, n_test, members=[m.trial for m in results.selection.members],
                                      weights=[m.weight for m in results.selection.members],
                                      parity_passed=ens.parity.passed)
    stu = results.candidate("student")
    if stu is not None:
        update["student"] = _figures(stu, n_test)
    if results.chosen == "single" and card.shipped is not None and card.shipped.chosen_by == "fusion":
        update["shipped"] = card.fp32.model_copy(update={"chosen_by": "fusion", "reason": results.reason})
    if results.chosen != "single":
        c = results.candidate(results.chosen)
        update["shipped"] = ModelFigures(
            name=c.name, file=SHIPPED, method=c.method, test_accuracy=c.test_acc,
            test_accuracy_se=_se(c.test_acc, n_test), test_examples=n_test, val_accuracy=c.val_acc,
            latency_ms_batch1=c.latency_ms["1"].p50, file_bytes=c.file_bytes, chosen_by="fusion",
            reason=results.reason)
    return card.model_copy(update=update)
