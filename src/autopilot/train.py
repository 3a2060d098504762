"""One training run: optimiser, schedule with warm-up, clipping, label
smoothing, whole-batch augmentation and mixup/CutMix, early stopping, per-epoch metrics.

Knows nothing of Optuna or the CLI: the search plugs in through `on_epoch`,
which may raise to stop the run (pruning), and through `deadline`.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from .data.augment import augment_from_hparams, mix_from_hparams
from .data.gate import check_split
from .models import build_model
from .schemas.search import EpochLine  # one epoch's figures: what metrics.jsonl holds, line by line

# Defaults in one visible place. The search overrides most of them.
DEFAULTS = {
    "optimizer": "adamw",      # adamw | sgd
    "lr": 3e-3,
    "weight_decay": 1e-4,
    "momentum": 0.9,           # sgd only
    "schedule": "onecycle",    # cosine | onecycle
    "warmup_frac": 0.1,        # share of steps spent warming up (cosine) / rising (onecycle)
    "epochs": 30,
    "batch_size": 64,
    "label_smoothing": 0.0,
    "clip_norm": 1.0,          # 0 disables clipping
    "aug_strength": 0.0,
    "patience": 10,            # epochs without validation improvement before stopping
    "task": "classification",  # regression: one output, targets standardised, loss below, "acc" is R²
    "loss": "mse",             # regression only: mse | huber (delta 1 standard deviation of the target)
}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    best_val_acc: float
    best_val_loss: float
    best_epoch: int
    epochs_run: int
    history: list[EpochLine] = field(default_factory=list)
    stopped: str = "completed"  # completed | early-stop | deadline
    state_dict: dict | None = None  # the weights returned: the best validation epoch's, or the last's (keep="last")
    planned_epochs: int = 0  # the schedule's length at the end (`finish_by` may shorten it)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def make_optimizer(model: nn.Module, hp: dict) -> torch.optim.Optimizer:
    # Weight decay on weights only: decaying biases and norm scales only hurts.
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": hp["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    if hp["optimizer"] == "adamw":
        return torch.optim.AdamW(groups, lr=hp["lr"])
    if hp["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=hp["lr"], momentum=hp["momentum"], nesterov=True)
    raise ValueError(f"unknown optimizer {hp['optimizer']!r}; expected adamw or sgd")


def lr_factor(step: int, total: int, hp: dict) -> float:
    """Multiplier of the base learning rate at `step` of `total`."""
    warm = max(1, int(hp["warmup_frac"] * total))
    if hp["schedule"] == "onecycle":
        # Linear rise from 1/25 to 1 then cosine down to ~0 (as torch's OneCycleLR).
        if step < warm:
            return 0.04 + 0.96 * step / warm
        t = (step - warm) / max(1, total - warm)
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * t))
    if hp["schedule"] == "cosine":
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * t))
    raise ValueError(f"unknown schedule {hp['schedule']!r}; expected cosine or onecycle")


def as_inputs(X, device: torch.device | str = "cpu") -> torch.Tensor:
    """A split on the device: uint8 pixels stay uint8 (a quarter of float32's
    memory), anything else becomes float32. float_batch makes batches of it."""
    t = torch.as_tensor(X, device=device)
    return t if t.dtype == torch.uint8 else t.float()


def float_batch(x: torch.Tensor) -> torch.Tensor:
    """A batch as the model takes it: uint8 pixels -> [0, 1], bit for bit what
    data.dataset.as_float gives (float32 division by 255)."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


@torch.no_grad()
def evaluate(model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> tuple[float, float]:
    """Mean cross-entropy and accuracy, in eval mode."""
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(X), batch_size):
        logits = model(float_batch(X[i : i + batch_size]))
        yb = y[i : i + batch_size]
        loss_sum += nn.functional.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    model.train(was_training)
    n = max(1, len(X))
    return loss_sum / n, correct / n


@torch.no_grad()
def evaluate_regression(model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> tuple[float, float]:
    """Mean squared error and R² of the (standardised) targets, in eval mode."""
    was_training = model.training
    model.eval()
    sse = sum(((model(float_batch(X[i : i + batch_size]))[:, 0] - y[i : i + batch_size]) ** 2).sum().item()
              for i in range(0, len(X), batch_size))
    model.train(was_training)
    n = max(1, len(X))
    var = float(y.var(unbiased=False).item()) if len(y) > 1 else 0.0
    return sse / n, (1.0 - sse / n / var) if var > 0 else 0.0


def regression_loss(name: str):
    if name not in ("mse", "huber"):
        raise ValueError(f"unknown regression loss {name!r}; expected mse or huber")
    fn = nn.HuberLoss(delta=1.0) if name == "huber" else nn.MSELoss()

    def batch_loss(outputs, _inputs, targets):
        return fn(outputs[:, 0], targets)
    return batch_loss


@torch.no_grad()
def fold_target_scale(model: nn.Module, mean: float, std: float, probe: torch.Tensor) -> None:
    """A regression network learns standardised targets; fold the inverse
    (x std + mean) into its last linear layer so that it, its ONNX file and
    everything that serves it output the target in its own units. Checked
    on `probe` inputs: a network whose last linear layer is not its output
    is refused rather than silently mis-scaled."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last or last[-1].out_features != 1:
        raise ValueError("a regression network must end in a linear layer with one output")
    model.eval()
    before = model(probe)[:, 0]
    last[-1].weight.mul_(std)
    if last[-1].bias is not None:
        last[-1].bias.mul_(std).add_(mean)
    after = model(probe)[:, 0]
    if not torch.allclose(after, before * std + mean, rtol=1e-4, atol=1e-4 * max(1.0, abs(mean), std)):
        raise ValueError("the network's output is not its last linear layer's: cannot rescale its targets")


@torch.no_grad()
def predict_logits(model: nn.Module, X: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    model.eval()
    return torch.cat([model(float_batch(X[i : i + batch_size])) for i in range(0, len(X), batch_size)]) if len(X) else torch.empty(0)


def train(
    model: nn.Module,
    train_data: tuple[np.ndarray, np.ndarray],
    val_data: tuple[np.ndarray, np.ndarray],
    hparams: dict | None = None,
    *,
    kind: str = "table",
    seed: int = 0,
    device: str | torch.device = "auto",
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    on_epoch: Callable[[EpochLine, nn.Module], None] | None = None,
    callbacks: list | None = None,
    batch_loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    finish_by: float | None = None,
    extend_to: int | None = None,
    keep: str = "best",
) -> TrainResult:
    """Train `model` in place and return the metrics and best-epoch weights.

    `deadline` is a value of `clock` (time.monotonic() unless given; a
    benchmark may pass time.process_time for a budget in CPU seconds):
    training stops at the first batch past it and the best weights so far
    are kept, with `stopped="deadline"`. `on_epoch` is called after
    every epoch; an exception it raises (e.g. optuna.TrialPruned) propagates.

    `callbacks` are objects with any of these methods (the live doctor is one):
      on_train_start(model, optimizer, hparams, total_steps)
      on_step(step, loss, model, optimizer, lr)   # after optimizer.step(); loss is a float
      on_epoch_end(metrics, model)
      on_train_end(result)

    `batch_loss(logits, inputs, labels)` replaces the cross-entropy (with the
    hyper-parameters' label smoothing); distillation passes its own.

    `finish_by` (a value of `clock`) is when the run should end: after each
    epoch, when the epochs left would not fit at the pace so far, the
    schedule is shortened to the epochs that do, so the learning rate still
    anneals to its end instead of being cut by `deadline` at its peak.
    With `extend_to`, a schedule still in its first half that the pace so
    far shows will end early is lengthened to the epochs that fit (at most
    extend_to): a plan made from a few timed steps is cautious, and a
    search's finalist left up to half its time unused (Fashion-MNIST,
    --budget 10m: 77 s of a 158 s slot).

    `keep="last"` returns the last epoch's weights when the schedule ran to
    its end (the best epoch's when the deadline cut it), and `best_*` then
    describe that epoch: for a training whose validation data is a sample
    of its own training rows, where the accuracy is 100 % after an epoch or
    two and the "best" epoch is decided by the tie-break on hard-label loss
    (distillation, whose loss is not that one).
    """
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', not {keep!r}")
    hp = {**DEFAULTS, **(hparams or {})}
    device = resolve_device(device) if isinstance(device, str) else device
    seed_everything(seed)
    Xtr = as_inputs(train_data[0], device)
    regression = hp["task"] == "regression"
    y_type = torch.float32 if regression else torch.long
    ytr = torch.as_tensor(train_data[1], dtype=y_type, device=device)
    Xva = as_inputs(val_data[0], device)
    yva = torch.as_tensor(val_data[1], dtype=y_type, device=device)
    if regression:  # standardised targets: one learning rate range fits every target's units
        y_mean, y_std = float(ytr.mean()), float(ytr.std(unbiased=False)) if len(ytr) > 1 else 1.0
        y_std = y_std if y_std > 1e-12 else 1.0
        ytr, yva = (ytr - y_mean) / y_std, (yva - y_mean) / y_std
        score_split = evaluate_regression
        if batch_loss is None:
            batch_loss = regression_loss(hp["loss"])
    else:
        score_split = evaluate
    model.to(device)
    opt = make_optimizer(model, hp)
    base_lrs = [g["lr"] for g in opt.param_groups]
    augment = augment_from_hparams(kind, hp, tuple(Xtr.shape[1:]))
    mix = mix_from_hparams(kind, hp)  # mixup / CutMix: None unless the hyper-parameters ask for it
    if batch_loss is None:
        cross_entropy = nn.CrossEntropyLoss(label_smoothing=float(hp["label_smoothing"]))

        def batch_loss(logits, _inputs, targets):
            return cross_entropy(logits, targets)
    gen = torch.Generator(device="cpu").manual_seed(seed)

    bs = train_batch_size(hp, len(Xtr))
    steps_per_epoch = max(1, len(Xtr) // bs)  # drop the ragged last batch: BN dislikes tiny batches
    epochs = int(hp["epochs"])
    total = steps_per_epoch * epochs
    result = TrainResult(best_val_acc=-math.inf if regression else -1.0, best_val_loss=math.inf, best_epoch=0, epochs_run=0)
    callbacks = list(callbacks or [])

    def fire(event: str, *args) -> None:
        for cb in callbacks:
            fn = getattr(cb, event, None)
            if fn is not None:
                fn(*args)

    fire("on_train_start", model, opt, hp, total)
    best_state = None
    since_best = 0
    step = 0
    epoch = 0
    while epoch < epochs:
        epoch += 1
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(len(Xtr), generator=gen).to(device)
        loss_sum, correct, seen = 0.0, 0, 0
        out_of_time = False
        for b in range(steps_per_epoch):
            if deadline is not None and clock() > deadline:
                out_of_time = True
                break
            idx = perm[b * bs : (b + 1) * bs]
            xb, yb = float_batch(Xtr[idx]), ytr[idx]
            if augment is not None:
                xb = augment(xb)
            if mix is not None:
                xb, partner, lam = mix(xb, yb)
            factor = lr_factor(step, total, hp)
            for g, base in zip(opt.param_groups, base_lrs):
                g["lr"] = base * factor
            logits = model(xb)
            loss = batch_loss(logits, xb, yb)
            if mix is not None:  # the loss is linear in the targets: mixed targets = mixed losses
                loss = lam * loss + (1 - lam) * batch_loss(logits, xb, partner)
            if not torch.isfinite(loss):
                fire("on_step", step, float(loss.item()), model, opt, base_lrs[0] * factor)
                raise TrainingDiverged(f"loss became {loss.item()} at epoch {epoch}, step {b + 1} (lr {base_lrs[0] * factor:.3g})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if hp["clip_norm"] and hp["clip_norm"] > 0:
                nn.utils.clip_grad_norm_(model.parameters(), float(hp["clip_norm"]))
            opt.step()
            step += 1
            loss_value = loss.item()
            fire("on_step", step, loss_value, model, opt, base_lrs[0] * factor)
            loss_sum += loss_value * len(yb)
            if regression:  # squared error of standardised targets: 1 - its mean is R² on train
                correct -= ((logits[:, 0].detach() - yb) ** 2).sum().item()
            else:
                correct += (logits.argmax(1) == yb).sum().item()
            seen += len(yb)
        if seen == 0:
            result.stopped = "deadline"
            break
        val_loss, val_acc = score_split(model, Xva, yva)
        m = EpochLine(epoch=epoch, train_loss=loss_sum / seen,
                      train_acc=(1 + correct / seen) if regression else correct / seen,
                      val_loss=val_loss, val_acc=val_acc, lr=base_lrs[0] * factor, time_s=time.perf_counter() - t0)
        result.history.append(m)
        result.epochs_run = epoch
        if val_acc > result.best_val_acc or (val_acc == result.best_val_acc and val_loss < result.best_val_loss):
            result.best_val_acc, result.best_val_loss, result.best_epoch = val_acc, val_loss, epoch
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            since_best = 0
        else:
            since_best += 1
        fire("on_epoch_end", m, model)
        if on_epoch is not None:
            on_epoch(m, model)
        if out_of_time:
            result.stopped = "deadline"
            break
        if since_best >= int(hp["patience"]):
            result.stopped = "early-stop"
            break
        if finish_by is not None and epoch < epochs:
            pace = sum(h.time_s for h in result.history[-3:]) / len(result.history[-3:])
            fit = int((finish_by - clock()) // pace) if pace > 0 else epochs
            if epoch + fit < epochs:  # shorter schedule from here on (none left: stop here)
                epochs = epoch + max(0, fit)
                total = steps_per_epoch * max(1, epochs)
            elif extend_to and 2 * epoch <= epochs < min(extend_to, epoch + fit):
                # Early enough that the learning rate is still near its peak:
                # the longer schedule goes on from about where this one is.
                epochs = min(extend_to, epoch + fit)
                total = steps_per_epoch * epochs
    result.planned_epochs = epochs
    if keep == "last" and result.history and result.stopped != "deadline":
        last = result.history[-1]
        result.best_val_acc, result.best_val_loss, result.best_epoch = last.val_acc, last.val_loss, last.epoch
        best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
        if regression:
            fold_target_scale(model, y_mean, y_std, Xtr[:64])
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    result.state_dict = best_state
    fire("on_train_end", result)
    return result


def train_batch_size(hp: dict, n: int) -> int:
    """The batch size training uses on `n` examples: hp's, at most n."""
    return int(min(int(hp.get("batch_size", DEFAULTS["batch_size"])), n))


def step_seconds(model, X: np.ndarray, y: np.ndarray, hp: dict, kind: str, *, device="cpu", teacher=None,
                 steps: int = 3, warmup: int = 1, max_s: float = math.inf) -> float:
    """Median seconds of one training step of `model` with `hp`: its own
    optimiser (at a zero learning rate), augmentation, the teacher's forward
    pass when given, the loss of hp["task"], forward and backward, on a batch
    of hp["batch_size"], after `warmup` untimed steps (a process's first
    steps allocate and warm caches). The random state is left as it was.
    After `max_s` seconds the steps so far decide: a model too slow for its
    slot is found out in one step. `model` is stepped, so its batch-norm
    statistics move: pass a copy to keep them."""
    model.train()
    opt = make_optimizer(model, {**DEFAULTS, **hp, "lr": 0.0})
    bs = train_batch_size(hp, len(X))
    xb = float_batch(as_inputs(X[:bs], device))  # uint8 pixels -> [0, 1], as training does
    regression = hp.get("task") == "regression"  # one output and a squared error, as train() does
    yb = torch.as_tensor(y[:bs], dtype=torch.float32 if regression else torch.long, device=device)
    augment = augment_from_hparams(kind, hp, tuple(xb.shape[1:]))
    times, last = [], 0.0
    with torch.random.fork_rng(devices=[]):
        start = time.perf_counter()
        for i in range(warmup + steps):
            if i and time.perf_counter() - start > max_s:
                break
            t = time.perf_counter()
            x = augment(xb) if augment is not None else xb
            if teacher is not None:
                with torch.no_grad():
                    teacher(x)
            out = model(x)
            loss = nn.functional.mse_loss(out[:, 0], yb) if regression else nn.functional.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            last = time.perf_counter() - t
            if i >= warmup:
                times.append(last)
    return float(np.median(times)) if times else last


def timed_epoch_seconds(model, data: dict, hp: dict, kind: str, *, teacher=None) -> float:
    """Seconds of one epoch of a short training of `model` on data["train"]
    (compression's fine-tuning, a distillation from `teacher`), from a few
    timed steps on a copy (step_seconds): its full batches (train drops the
    ragged last one) with 15 % for data handling, plus the validation pass
    on check_split(data), about 0.3 of a step per batch of examples."""
    X, y = data["train"]
    bs = train_batch_size(hp, len(X))
    step = step_seconds(copy.deepcopy(model), X, y, hp, kind, teacher=teacher)
    return step * max(1, len(X) // bs) * 1.15 + 0.3 * step * len(check_split(data)[0]) / bs


# An estimated retraining's allowances (finalists' plan, fusion's siblings):
PACE_OVERHEAD = 1.25  # the epoch's evaluation pass and data handling on top of its training steps
PACE_MARGIN = 1.3  # planned seconds x this: epochs on a shared machine vary by that much


def epoch_pace(spec: dict, hp: dict, X: np.ndarray, y: np.ndarray, kind: str, *, steps: int = 3) -> float:
    """Seconds per training example per epoch of `spec` trained with `hp`,
    from a few timed steps (step_seconds) plus PACE_OVERHEAD; without
    PACE_MARGIN, which the planner adds to the seconds it plans."""
    return step_seconds(build_model(spec), X, y, hp, kind, steps=steps) / train_batch_size(hp, len(X)) * PACE_OVERHEAD


RETRAIN_VAL_EXAMPLES = 512  # train_configuration's per-epoch check; the validation split is training data then


def train_configuration(spec: dict, hp: dict, warm_start: Path | None, X: np.ndarray, y: np.ndarray, *, kind: str,
                        seed: int, device: str, deadline: float | None, finish_by: float | None = None,
                        extend_to: int | None = None) -> tuple[torch.nn.Module | None, TrainResult]:
    """One retraining on (X, y): `spec` built with `seed`, started from
    `warm_start`'s weights when given, trained hp["epochs"] epochs (or the
    schedule `finish_by` and `extend_to` fit, as train's); the last epoch's
    weights in eval mode on the CPU, or None when the deadline cut the
    schedule, with the training's result. finalists.stage.retrain() trains
    the winner with it, the fusion stage the winner's siblings (the same
    recipe, other seeds)."""
    seed_everything(seed)
    model = build_model(spec)
    if warm_start is not None:
        model.load_state_dict(load_file(str(warm_start)))
    # A display only (the last epoch's weights ship): a sample of its own training data.
    step = max(1, len(y) // RETRAIN_VAL_EXAMPLES)
    check = (X[::step][:RETRAIN_VAL_EXAMPLES], y[::step][:RETRAIN_VAL_EXAMPLES])
    result = train(model, (X, y), check, hp, kind=kind, seed=seed, device=device, deadline=deadline, keep="last",
                   finish_by=finish_by, extend_to=extend_to)
    if result.stopped == "deadline" or result.epochs_run < result.planned_epochs or not result.history:
        return None, result
    return model.cpu().eval(), result
