"""The compression stage: build candidates, measure them all the same way,
ship the best one the policy allows.

The plan is an ordered ladder, not a search. There are only a handful of
sensible candidates and each trained one costs a real share of a budget of
a minute or two, so an NSGA-II study would spend its trials rediscovering
what we know in advance (int8 is cheap and usually helps CNNs; a 50 % prune
or a 4x-smaller student is the natural first try). Instead:

  1. the baseline (fp32 model.onnx under ORT's full graph optimisations) and
     the cheap, training-free candidates: int8 static, plus int8 dynamic on
     MLPs (on convolutions it is known to be slower);
  2. two ladders of trained candidates, interleaved so that a small budget
     still gets one of each:
       prune:   50 % of channels, fine-tuned; then 70 % if 50 % kept its
                validation accuracy (policy.keeps_accuracy: the 95 % upper
                bound on its paired drop within max_drop), else 30 %
                (unless the bound was over BACKOFF_WITHIN x max_drop);
       distill: a student with <= 1/4 of the teacher's parameters; then
                <= 1/16 if it kept accuracy, else a bigger one (<= 1/2,
                with the same proviso);
     before training, each rung's architecture is timed untrained (speed
     and size do not depend on the weights): one that could not beat the
     baseline even with int8's help is skipped at no cost, and the ladder
     moves on to the more compressed rung. Each trained candidate that
     keeps accuracy is also quantised;
  3. every candidate's latency measured together, interleaved (measure.py);
  4. policy.choose, then model/card.json's `shipped` entry names the file
     that predict and serve will load, with its own figures.

Each trained job gets a time slice of what is left (distillation starts from
scratch, so it gets 1.5x the slice of a fine-tune), and its epoch count is
fitted to the slice from a timed probe, so its lr schedule completes instead
of being cut off; a deadline is the hard stop behind it. The stage ends
early when the plan is done.
"""
from __future__ import annotations

import math
import os
import shutil
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig, check_max_drop, compress_budget_s
from ..data.gate import GATED, check_split, with_gate
from ..export import export_onnx
from ..models import build_model, count_params, load_model, save_model
from ..models.estimators import FAMILIES as ESTIMATOR_FAMILIES
from ..rundir import RunDir, write_json
from ..schemas import SchemaError
from ..schemas.card import ModelCard, ModelFigures, read_card, write_card
from ..schemas.compress import CompressResults
from ..schemas.run import read_run
from ..train import DEFAULTS, timed_epoch_seconds, train
from . import measure, students
from .distill import ALPHA, TEMPERATURE, distill
from .policy import (CONFIDENCE, MIN_GAIN, MIN_GAIN_MS, choose, drop_upper_points, keeps_accuracy, pareto_front,
                     too_few_to_vouch)
from .prune import prune_channels
from .quantize import calibration_samples, quantize_dynamic_int8, quantize_static_int8
from .students import student_spec

# Defaults in one visible place (the stage's budget: config.compress_budget_s).
PRUNE_FIRST, PRUNE_UP, PRUNE_DOWN = 0.5, 0.7, 0.3
STUDENT_FIRST, STUDENT_UP, STUDENT_DOWN = 1 / 4, 1 / 16, 1 / 2
JOB_WEIGHT = {"prune": 1.0, "distill": 1.5}  # distillation starts from scratch
# A first rung that lost accuracy is retried milder only when its drop bound
# was within this many times --max-drop. On Fashion-MNIST (--budget 30m) the
# milder rung cut the bound to 0.61x (prune 30 % vs 50 %: 1.54 vs 2.53
# points) and 0.78x (distillation 1/2 vs 1/4): from further off it could not
# pass, and the two retries had cost 245 s of a 560 s stage.
BACKOFF_WITHIN = 2.0
# Fine-tuning a pruned model at the search's own peak lr (cosine, short
# warm-up) recovered best on mnist5k: 50 % pruned, 9 epochs, test 0.988 /
# 0.987 (two seeds) at 1.0x, 0.984 at 0.5x, 0.968 at 0.1x; fine-tuning by
# distillation instead scored 0.979 / 0.981. On mnist1d (70 %) lower lrs were
# a little better on val (0.992 vs 0.988), all within half a point.
FINETUNE_LR_SCALE = 1.0
FINETUNE_MAX_EPOCHS = 20
DISTILL_MAX_EPOCHS = 60
MIN_EPOCHS = 2
MIN_JOB_S = 1.0              # below this, nothing; above, the epoch probe decides
LATENCY_S_PER_CANDIDATE = 4.0  # seconds of interleaved timing rounds per candidate at most; the rest goes to fusion
# Torch threads while training candidates. Not all cores: with another job on
# the second core, 2 OpenMP threads made a training step 10x slower here
# (1 s instead of 0.07 s) as each waits for the descheduled other.
TRAIN_THREADS = max(1, min(4, (os.cpu_count() or 1) // 2))


def rung_label(job: str, arg: float) -> str:
    return f"prune {round(arg * 100)} %" if job == "prune" else f"distill 1/{round(1 / arg)}"


def next_rung(job: str, ok: bool, bound: float | None, max_drop: float) -> tuple[float, bool, str]:
    """A ladder's second rung after its first: (its share, whether to train
    it, why). Harder when the first kept accuracy (or could not be fast
    enough), milder when it lost accuracy by less than BACKOFF_WITHIN x
    max_drop; from further off a milder rung would not pass either."""
    up, down = (PRUNE_UP, PRUNE_DOWN) if job == "prune" else (STUDENT_UP, STUDENT_DOWN)
    if ok:
        return up, True, "the first rung kept accuracy"
    if bound is not None and bound <= BACKOFF_WITHIN * max_drop:
        return down, True, f"the first rung lost accuracy, within {BACKOFF_WITHIN:g}x the limit"
    return down, False, (f"the first rung may lose {bound:.2f} points, more than {BACKOFF_WITHIN:g}x the "
                         f"{max_drop:.2f} allowed: a milder one would not get within it")


class _Stage:
    """State of one compress_run: the candidates so far and the clock."""

    def __init__(self, rd: RunDir, out: Path, data: dict, kind: str, teacher, spec: dict, hp: dict, *,
                 target: str, max_drop: float, seed: int, deadline: float, final_reserve: float, device: str, console):
        self.rd, self.out, self.data, self.kind = rd, out, data, kind
        self.teacher, self.spec, self.hp = teacher, spec, hp
        self.target, self.max_drop, self.seed = target, max_drop, seed
        self.deadline, self.final_reserve, self.device = deadline, final_reserve, device
        self.console = console
        self.candidates: list[dict] = []
        self.plan: list[dict] = []
        self.sources: dict[str, torch.nn.Module] = {}  # fp32 PyTorch model of each fp32 candidate
        self.calib = calibration_samples(data["train"][0], seed=seed)
        self.base_val_correct: np.ndarray | None = None  # the baseline's, per validation example
        self.quant_s = 2.0  # updated with the measured cost of quantising + evaluating one file
        self.int8_gain = 1.0  # how much int8 helped the baseline on the target (for screening)

    # -- bookkeeping -------------------------------------------------------
    def left(self) -> float:
        return self.deadline - self.final_reserve - time.monotonic()

    def log(self, step: str, status: str, why: str = "", **extra) -> None:
        self.plan.append({"step": step, "status": status, "why": why, **extra})
        style = {"done": "green", "skipped": "yellow", "failed": "red"}.get(status, "")
        self.console.print(f"  compress: {step:<22} [{style}]{status}[/{style}]" + (f"  {why}" if why else ""),
                           highlight=False)

    def keeps_accuracy(self, rec: dict) -> bool:
        """The policy's own accuracy rule, so the ladders climb on what the choice will accept."""
        return keeps_accuracy(rec, self.max_drop)

    def rel(self, p: Path) -> str:
        # Paths as they will be after the temporary folder becomes compress/.
        return str(Path("compress") / p.relative_to(self.out))

    # -- candidates --------------------------------------------------------
    def add_file(self, name: str, path: Path, *, method: str, source: str | None, params: int,
                 ref_test: np.ndarray, built_s: float, **extra) -> dict:
        against = f"PyTorch fp32 {source or name}"
        rec = {"name": name, "method": method, "source": source, "baseline": False,
               "path": self.rel(path) if self.out in path.parents else str(path.relative_to(self.rd.path)),
               "params": int(params), "build_s": round(built_s, 2), **extra}
        if self.base_val_correct is None:  # the first file is the baseline
            self.base_val_correct = measure.correct(path, *self.data["val"])
        rec.update(measure.evaluate_file(path, self.data, ref_test, against, self.base_val_correct))
        rec["drop_upper_points"] = round(drop_upper_points(rec), 4)
        rec["_file"] = str(path)
        self.candidates.append(rec)
        return rec

    def add_fp32(self, name: str, model, *, method: str, built_s: float, **extra) -> dict:
        path = self.out / "candidates" / f"{name}.onnx"
        model = model.eval().cpu()
        export_onnx(model, self.spec["input_shape"], path)
        ref = measure.torch_logits(model, self.data["test"][0])
        self.sources[name] = model
        return self.add_file(name, path, method=method, source=None, params=count_params(model), ref_test=ref,
                             built_s=built_s, **extra)

    def add_quantized(self, source: dict) -> None:
        """int8 static (and dynamic on MLPs) of an fp32 candidate."""
        modes = ["static"] + (["dynamic"] if self.spec["family"] == "mlp" else [])
        src_model = self.sources[source["name"]]
        ref = measure.torch_logits(src_model, self.data["test"][0])
        for mode in modes:
            name = ("int8" if source["baseline"] else f"{source['name']}-int8") + ("s" if mode == "static" else "d")
            if self.left() < self.quant_s:
                self.log(name, "skipped", f"budget ({self.left():.0f} s left)")
                continue
            t = time.monotonic()
            try:
                path = self.out / "candidates" / f"{name}.onnx"
                if mode == "static":
                    quantize_static_int8(source["_file"], path, self.calib)
                else:
                    quantize_dynamic_int8(source["_file"], path)
                rec = self.add_file(name, path, method=f"int8-{mode}", source=source["name"], params=source["params"],
                                    ref_test=ref, built_s=time.monotonic() - t)
            except Exception as e:  # one broken candidate must not stop the stage
                self.log(name, "failed", f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=3))
                continue
            self.quant_s = max(self.quant_s * 0.5, time.monotonic() - t)
            self.log(name, "done", f"val {rec['val_acc']:.4f}, {rec['file_bytes'] / 1024:.0f} KiB, "
                                   f"parity {rec['parity']['argmax_agree']:.4f} ({time.monotonic() - t:.1f} s)")

    # -- screening -----------------------------------------------------------
    def quick_costs(self, paths: dict[str, Path]) -> dict[str, float]:
        """A rough, fast reading of the target cost (lower is better); files
        timed together so that load elsewhere hits both."""
        if self.target == "size":
            return {n: float(Path(p).stat().st_size) for n, p in paths.items()}
        b = 1 if self.target == "latency" else 64
        lat = measure.measure_latency(paths, self.data["test"][0], budget_s=0.5, batches=(b,))
        return {n: v["latency_ms"][str(b)]["p50"] for n, v in lat.items()}

    def note_int8_gain(self, base: dict, int8: dict) -> None:
        q = self.quick_costs({"fp32": Path(base["_file"]), "int8": Path(int8["_file"])})
        self.int8_gain = max(1.0, q["fp32"] / q["int8"])

    def could_win(self, model, name: str) -> tuple[bool, str]:
        """Latency and size do not depend on the weights: time the untrained
        architecture before spending a training slice on it. It passes when,
        even with the int8 gain the baseline got, it could beat the baseline by
        the policy's margin; else training it would be wasted."""
        tmp = self.out / f".screen-{name}.onnx"
        try:
            export_onnx(model, self.spec["input_shape"], tmp)
            q = self.quick_costs({"fp32": Path(self.candidates[0]["_file"]), name: tmp})
        finally:
            tmp.unlink(missing_ok=True)
        best = q[name] / self.int8_gain
        ok = best <= q["fp32"] * (1 - MIN_GAIN) and (self.target != "latency" or q["fp32"] - best >= MIN_GAIN_MS)
        return ok, f"untrained {name}: {q[name]:.3g} vs baseline {q['fp32']:.3g} on {self.target} (int8 at best /{self.int8_gain:.2f})"

    # -- trained candidates ------------------------------------------------
    def _epochs_for(self, slice_s: float, model, hp: dict, teacher=None) -> tuple[int, float]:
        """Fit the epoch count to the slice from a timed probe (train.timed_epoch_seconds)."""
        epoch_s = timed_epoch_seconds(model, self.data, hp, self.kind, teacher=teacher)
        return int(slice_s // max(epoch_s, 1e-3)), epoch_s

    def train_job(self, job: str, arg: float, slice_s: float) -> dict | str | None:
        """One trained fp32 candidate (pruned + fine-tuned, or distilled);
        "too-slow" when screening says it cannot win, None when skipped."""
        t0 = time.monotonic()
        if job == "prune":
            name = f"prune{round(arg * 100)}"
            model = prune_channels(self.teacher, self.spec["input_shape"], arg)
            sspec = None
            hp = {**self.hp, "lr": self.hp["lr"] * FINETUNE_LR_SCALE, "schedule": "cosine", "warmup_frac": 0.05}
            cap, teacher = FINETUNE_MAX_EPOCHS, None
        else:
            sspec = student_spec(self.spec, arg)
            if sspec is None:
                self.log(f"distill 1/{round(1 / arg)}", "skipped", "no smaller student of this family fits")
                return None
            tried = {c["name"] for c in self.candidates}
            while sspec is not None and students.student_name(sspec) in tried:
                # Backing off (a bigger share) must mean a bigger student.
                sspec = students.wider(sspec, self.spec) if arg > STUDENT_FIRST else None
            if sspec is None:
                self.log(f"distill 1/{round(1 / arg)}", "skipped", "no untried student of this size")
                return None
            name = students.student_name(sspec)
            torch.manual_seed(self.seed)
            model = build_model(sspec)
            # Soft targets carry the teacher's smoothing already.
            hp = {**self.hp, "label_smoothing": 0.0}
            cap, teacher = DISTILL_MAX_EPOCHS, self.teacher
        ok, why = self.could_win(model, name)
        if not ok:
            self.log(name, "skipped", f"cannot beat the baseline: {why}")
            return "too-slow"
        epochs, epoch_s = self._epochs_for(slice_s - (time.monotonic() - t0), model, hp, teacher)
        epochs = min(cap, epochs)
        if epochs < MIN_EPOCHS:
            # Earlier rungs matter more (the plan is ordered): borrow from the
            # later ones rather than skip, if the stage has the time at all.
            if MIN_EPOCHS * epoch_s <= self.left() - 2 * self.quant_s:
                epochs, slice_s = MIN_EPOCHS, MIN_EPOCHS * epoch_s
            else:
                self.log(name, "skipped", f"one epoch takes ~{epoch_s:.1f} s; {max(0.0, self.left()):.0f} s left")
                return None
        hp = {**hp, "epochs": epochs, "patience": epochs + 1}  # the slice is short: no early stop
        # The hard stop: the slice with some slack for the probe's error, never past the stage's own end.
        hard = min(time.monotonic() + 1.5 * slice_s, self.deadline - self.final_reserve)
        t_train = time.monotonic()
        if job == "prune":
            res = train(model, self.data["train"], check_split(self.data), hp, kind=self.kind, seed=self.seed,
                        device=self.device, deadline=hard)
        else:
            res = distill(teacher, model, self.data["train"], check_split(self.data), hp, kind=self.kind,
                          seed=self.seed, device=self.device, deadline=hard)
        model = model.cpu().eval()
        info = {"epochs": epochs, "epochs_run": res.epochs_run, "best_epoch": res.best_epoch, "stopped": res.stopped,
                "torch_val_acc": res.best_val_acc, "train_s": round(time.monotonic() - t_train, 1),
                "slice_s": round(slice_s, 1), "lr": hp["lr"], "schedule": hp["schedule"]}
        # "parent": the model it was made from; "source" (None here) names the
        # PyTorch model an int8 file's parity is checked against.
        if job == "prune":
            detail = {"parent": "fp32", "ratio": arg, "train": info}
        else:
            detail = {"parent": "fp32", "student": sspec, "share": arg, "temperature": TEMPERATURE, "alpha": ALPHA,
                      "train": info}
            save_model(self.out / "candidates" / name, model, sspec)  # a student can be rebuilt from its spec
        rec = self.add_fp32(name, model, method=job, built_s=time.monotonic() - t0, **detail)
        self.log(name, "done", f"{rec['params']:,} params, {res.epochs_run}/{epochs} epochs in {info['train_s']:.0f} s, "
                               f"val {rec['val_acc']:.4f}, drop bound {rec['drop_upper_points']:.2f} points "
                               f"(limit {self.max_drop:.2f})")
        return rec

    def ladders(self) -> None:
        rungs = {"prune": [PRUNE_FIRST], "distill": [STUDENT_FIRST]}
        done = {"prune": 0, "distill": 0}
        order = ["prune", "distill"]
        while any(rungs.values()):
            # Expected jobs still to come: each ladder has two rungs at most.
            weights = {j: JOB_WEIGHT[j] * (2 - done[j]) for j in order if rungs[j]}
            job = next(j for j in order if rungs[j])
            arg = rungs[job].pop(0)
            label = rung_label(job, arg)
            # Leave room for exporting, evaluating and quantising what this
            # job makes (about two quantisations' time); later jobs do the same.
            avail = self.left() - 2 * self.quant_s
            slice_s = avail * JOB_WEIGHT[job] / sum(weights.values())
            order = order[1:] + order[:1]  # interleave the two ladders
            done[job] += 1
            if slice_s < MIN_JOB_S:
                self.log(label, "skipped", f"budget ({max(0.0, self.left()):.0f} s left)")
                continue
            try:
                rec = self.train_job(job, arg, slice_s)
            except Exception as e:
                self.log(label, "failed", f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=3))
                continue
            if rec is None:
                continue
            # Next rung: compress harder when this one kept accuracy or was
            # not fast enough to win; back off when it lost accuracy.
            ok = rec == "too-slow" or self.keeps_accuracy(rec)
            if done[job] == 1:
                bound = None if rec == "too-slow" else rec["drop_upper_points"]
                second, go, why = next_rung(job, ok, bound, self.max_drop)
                if go:
                    rungs[job].append(second)
                else:
                    self.log(rung_label(job, second), "skipped", why)
            if rec == "too-slow":
                continue  # no time spent: the next job's slice is larger
            if ok:
                self.add_quantized(rec)
            else:
                self.log(f"{rec['name']}-int8", "skipped", f"its fp32 source may lose more than {self.max_drop:.2f} points "
                                                             f"(bound {rec['drop_upper_points']:.2f})")


def compress_run(run_dir, *, budget_s: float | None = None, target: str | None = None, max_drop: float | None = None,
                 seed: int | None = None, console=None, data: dict | None = None, device: str | None = None) -> dict:
    """Compress the final model of a run-like directory (one with model/:
    spec.json, weights.safetensors, model.onnx, card.json); returns what it
    writes to RUN/compress/results.json (schemas.compress.CompressResults)
    and updates model/card.json's `shipped` entry to the file that ships.

    `max_drop` is in points of validation accuracy (0.5 = half a point).
    `target`, `max_drop`, `seed`, `device` and `budget_s` left as None come from the
    run's run.json config when there is one, else RunConfig's defaults.
    `data` ({"train": (X, y), "val": ..., "test": ...}) skips reloading the
    data set, and is needed when the directory has no run.json."""
    from rich.console import Console

    from .policy import TARGETS
    from .table import render

    rd = RunDir(run_dir)
    card_file = rd.model_dir / "card.json"
    if not card_file.exists():
        raise FileNotFoundError(f"no model in {str(rd.path)!r} (missing model/card.json); finish `autopilot run` first")
    try:
        card = read_card(rd.path)
    except SchemaError as e:
        raise FileNotFoundError(f"unusable model card: {e}") from None
    if card.family in ESTIMATOR_FAMILIES or card.task == "regression":
        why = (f"{card.family} models are not pruned, distilled or quantised (their ONNX file is a tree ensemble or "
               "a linear model, not a network); model/model.onnx ships as it is" if card.family in ESTIMATOR_FAMILIES else
               "its accuracy checks compare predicted classes; a regression model's model/model.onnx ships as it is")
        (console or Console(stderr=True)).print(f"compress: skipped: {why}", highlight=False)
        return {"chosen": "fp32", "reason": why, "skipped": True}
    run_config = read_run(rd.path).config if rd.run_json.exists() else None

    def setting(value, option):
        if value is not None:
            return value
        return getattr(run_config, option) if run_config is not None else RunConfig.default(option)

    target = setting(target, "compress_target")
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    max_drop = check_max_drop(setting(max_drop, "max_drop"))  # points, everywhere
    seed = int(setting(seed, "seed"))
    device = setting(device, "device")
    if budget_s is None:
        budget_s = compress_budget_s(run_config.budget_s if run_config is not None else None)
    console = console or Console(stderr=True)
    started = time.monotonic()
    deadline = started + float(budget_s)
    # Kept back for the final latency measurement, the choice and writing.
    final_reserve = min(25.0, max(5.0, 0.12 * budget_s))
    if data is None:
        from ..rundata import load_run_data

        _, _, data, _ = load_run_data(rd)
    # After the retraining on train+validation, judge on the gate slice the
    # shipped model never trained on (data/gate.py); fine-tune on what it did.
    data = with_gate(rd.data_dir, data)
    teacher, spec = load_model(rd.model_dir)
    hp = {**DEFAULTS, **(card.hyperparameters.training or {})}
    console.print(f"compress [bold]{rd.name}[/bold]: {spec['family']} {count_params(teacher):,} params, target "
                  f"{target}, max drop {max_drop:.2f} points at {CONFIDENCE:.0%} confidence, budget {budget_s:.0f} s",
                  highlight=False)

    out = rd.path / ".compress.tmp"
    shutil.rmtree(out, ignore_errors=True)
    (out / "candidates").mkdir(parents=True)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        st = _Stage(rd, out, data, card.kind, teacher, spec, hp, target=target, max_drop=max_drop,
                    seed=seed, deadline=deadline, final_reserve=final_reserve, device=device, console=console)
        ref = measure.torch_logits(teacher, data["test"][0])
        base = st.add_file("fp32", rd.model_dir / "model.onnx", method="fp32", source=None,
                           params=count_params(teacher), ref_test=ref, built_s=0.0)
        base["baseline"] = True
        st.sources["fp32"] = teacher
        st.log("fp32 (baseline)", "done", f"val {base['val_acc']:.4f}, {base['file_bytes'] / 1024:.0f} KiB")
        st.add_quantized(base)
        int8 = next((c for c in st.candidates if c["name"] == "int8s"), None)
        if int8 is not None:
            st.note_int8_gain(base, int8)
        small = too_few_to_vouch(len(data["val"][1]), max_drop)
        if small:
            # No trained candidate could pass the accuracy rule: do not spend
            # the budget training them. The cheap int8 files stay measured.
            st.log("prune and distill", "skipped", small)
        else:
            st.ladders()

        # Every candidate timed together (see measure.py), in what is left.
        # Rounds beyond a few seconds a candidate add little precision; what
        # is left goes to the fusion stage after this one (runner.py).
        lat_budget = max(2.0, min(deadline - time.monotonic() - 2.0, LATENCY_S_PER_CANDIDATE * len(st.candidates)))
        console.print(f"  compress: timing {len(st.candidates)} candidates at batch 1 and 64, 1 thread "
                      f"(~{lat_budget:.0f} s)", highlight=False)
        lat = measure.measure_latency({c["name"]: c["_file"] for c in st.candidates}, data["test"][0],
                                      budget_s=lat_budget)
        for c in st.candidates:
            c.update(lat[c["name"]])
        chosen, reason = choose(st.candidates, target, max_drop)
        if not chosen["baseline"]:
            shutil.copy2(chosen["_file"], out / "chosen.onnx")
        front = pareto_front(st.candidates, target)
        for c in st.candidates:
            c["pareto"] = c["name"] in front
            c.pop("_file")
        results = CompressResults(
            run=rd.name,
            target=target,
            max_drop=max_drop,
            confidence=CONFIDENCE,
            seed=seed,
            budget_s=float(budget_s),
            elapsed_s=round(time.monotonic() - started, 1),
            chosen=chosen["name"],
            chosen_path="compress/chosen.onnx" if not chosen["baseline"] else chosen["path"],
            reason=reason,
            baseline="fp32",
            measurement={"threads": measure.THREADS, "batches": list(measure.BATCHES),
                         "calls_per_round": {str(k): v for k, v in measure.CALLS_PER_ROUND.items()},
                         "interleaved": True, "inputs": "test split (tiled to the batch size)",
                         "accuracy": "ONNX Runtime on the val and test splits; the drop judged on val, paired "
                                     f"against the baseline, by its {CONFIDENCE:.0%} one-sided upper bound"
                                     + (f"; val is the gate slice ({len(data['val'][1])} validation examples kept "
                                        "out of the retraining on train+validation, data/gate.py)" if data.get(GATED) else ""),
                         "parity": f"argmax agreement with the PyTorch fp32 source on test >= {measure.PARITY_MIN_AGREE}",
                         "load_average": measure.load_average()},
            candidates=st.candidates,
            plan=st.plan,
            versions=_versions(),
        )
        # Validated when built above; written inside the temporary folder, which becomes compress/.
        write_json(out / "results.json", results.model_dump(mode="json"))
        final = rd.path / "compress"
        shutil.rmtree(final, ignore_errors=True)
        out.replace(final)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(threads_before)
    write_card(ship(card, results, n_test=len(data["test"][1])), rd.path)
    results_dict = results.model_dump(mode="json")
    render(results_dict, console)
    return results_dict


def figures(c, *, file: str, n_test: int, chosen_by: str | None, reason: str | None) -> ModelFigures:
    """A candidate's measurements as the card states them."""
    se = math.sqrt(c.test_acc * (1 - c.test_acc) / n_test) if n_test else None
    return ModelFigures(name=c.name, file=file, method=c.method, test_accuracy=c.test_acc, test_accuracy_se=se,
                        test_examples=n_test, val_accuracy=c.val_acc, latency_ms_batch1=c.latency_ms["1"].p50,
                        file_bytes=c.file_bytes, chosen_by=chosen_by, reason=reason)


def ship(card: ModelCard, results: CompressResults, *, n_test: int) -> ModelCard:
    """The card with `shipped` naming the file predict and serve load after
    this choice (compress/chosen.onnx, else model/model.onnx), and `fp32`
    re-measured beside it in the same timing session."""
    chosen, base = results.chosen_candidate, results.candidate(results.baseline)
    fp32 = figures(base, file="model/model.onnx", n_test=n_test, chosen_by=None, reason=None)
    shipped = figures(chosen, file=results.chosen_path, n_test=n_test, chosen_by="compress", reason=results.reason)
    return card.model_copy(update={"fp32": fp32, "shipped": shipped})


def _versions() -> dict:
    import onnxruntime

    out = {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
    try:  # the package's own __version__ lags its release number
        from importlib.metadata import version

        out["torch_pruning"] = version("torch-pruning")
    except Exception:
        pass
    return out
