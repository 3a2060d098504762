"""Set-up checks: short probes on a copy of the user's model, the way the
recipe says to test a training set-up before trusting it.

Each probe takes a `ProbeContext` and the time.perf_counter() at which it
must stop, and returns an `Outcome`. Probes never touch the user's model:
every one trains or runs a `copy.deepcopy` of it. Training probes use fresh
batches and score each batch *before* stepping on it, so what they measure
is held-out performance at no extra forward pass (prequential scoring).
"""
from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .findings import Finding

# Defaults in one visible place.
INIT_LOSS_HIGH = 1.5  # × ln(C)
INIT_LOSS_LOW = 0.5
OVERFIT_EXAMPLES = 16
OVERFIT_LR = 3e-3
OVERFIT_MAX_STEPS = 300
OVERFIT_MIN_STEPS = 50  # fewer than this before the time box ends: "skipped", not a verdict
SIGNAL_LR = 2e-3
SIGNAL_BATCH = 32
SIGNAL_MAX_STEPS = 40
SIGNAL_CLEAR_GAIN = 0.10  # accuracy, or × chance loss: a gain this large that is not yet significant means too few examples, not no signal
RANGE_LR_MIN, RANGE_LR_MAX = 1e-5, 10.0
RANGE_STEPS = 48  # 8 per decade
RANGE_BATCH = 32
RANGE_BLOWUP = 4.0  # stop when the smoothed loss exceeds this × its minimum
LR_TOO_LOW_FACTOR = 100.0  # below suggestion / this


class Skip(Exception):
    """The probe cannot run here (no time, wrong kind of model or data)."""


@dataclass
class Outcome:
    findings: list[Finding] = field(default_factory=list)
    status: str | None = None  # None: "found" if findings else "ok"
    note: str = ""


@dataclass
class ProbeContext:
    model: nn.Module  # the user's model: only ever deep-copied
    X: torch.Tensor  # a training sample, on the model's device
    y: torch.Tensor
    n_classes: int
    loss_fn: Callable
    seed: int = 0
    lr: float | None = None  # the learning rate the user intends to train with, if known
    optimizer: str | Callable = "adamw"  # adamw | adam | sgd | callable(params, lr) -> Optimizer
    results: dict = field(default_factory=dict)  # numbers probes share (e.g. the lr-range result)

    def fresh(self) -> nn.Module:
        m = copy.deepcopy(self.model)
        m.train()
        return m

    def seed_all(self, offset: int = 0) -> None:
        s = self.seed + offset
        torch.manual_seed(s)
        np.random.seed(s % 2**32)
        random.seed(s)

    def batch_order(self, offset: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed + offset)
        return torch.randperm(len(self.X), generator=g).to(self.X.device)

    def make_optimizer(self, params, lr: float, kind: str | Callable | None = None) -> torch.optim.Optimizer:
        kind = self.optimizer if kind is None else kind
        if callable(kind):
            return kind(params, lr)
        if kind == "adamw":
            return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)  # no decay: probes measure the data term
        if kind == "adam":
            return torch.optim.Adam(params, lr=lr)
        if kind == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True)
        raise ValueError(f"unknown optimizer {kind!r}; expected adamw, adam, sgd or a callable(params, lr)")

    @property
    def chance_loss(self) -> float:
        return math.log(self.n_classes)

    @property
    def float_inputs(self) -> bool:
        return self.X.is_floating_point()


def _trainable(m: nn.Module) -> list[nn.Parameter]:
    return [p for p in m.parameters() if p.requires_grad]


def _timed_out(end: float) -> bool:
    import time

    return time.perf_counter() > end


# ------------------------------------------------------------ forward-only probes

def probe_eval_nondeterministic(ctx: ProbeContext, end: float) -> Outcome:
    m = ctx.fresh().eval()
    xb = ctx.X[:16]
    with torch.no_grad():
        a, b = m(xb), m(xb)
    diff = float((a - b).abs().max())
    scale = float(a.abs().max()) or 1.0
    if diff <= 1e-6 * max(1.0, scale):
        return Outcome()
    return Outcome([Finding(
        "eval-nondeterministic", "error", {"max_abs_diff": diff, "output_scale": scale},
        f"two eval-mode forward passes of the same batch differ by up to {diff:.3g}: "
        "something random is still on in eval mode, so validation scores and predictions are noisy",
        "use nn.Dropout modules (they switch off with model.eval()) instead of F.dropout(x, training=True); "
        "pass training=self.training to functional dropout; check for other randomness in forward()",
    )])


def output_kind(out: torch.Tensor) -> str:
    """probs | log-probs | bounded01 | logits, from what a batch of outputs looks like."""
    if out.ndim != 2 or out.shape[1] < 2 or not torch.isfinite(out).all():
        return "logits"
    lo, hi = float(out.min()), float(out.max())
    if lo >= -1e-6 and hi <= 1 + 1e-6:
        if bool(((out.sum(1) - 1).abs() < 1e-3).all()):
            return "probs"
        return "bounded01"
    if hi <= 1e-6 and bool((torch.logsumexp(out, 1).abs() < 1e-3).all()):
        return "log-probs"
    return "logits"


def loss_expects(loss_fn: Callable, n_classes: int) -> str:
    """logits | log-probs | unknown: what input the loss function wants."""
    if isinstance(loss_fn, nn.CrossEntropyLoss) or loss_fn is F.cross_entropy:
        return "logits"
    if isinstance(loss_fn, nn.NLLLoss) or loss_fn is F.nll_loss:
        return "log-probs"
    # Any other callable: compare with the two references on random logits.
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, n_classes, generator=g)
    t = torch.randint(0, n_classes, (8,), generator=g)
    try:
        with torch.no_grad():
            v = float(loss_fn(z, t))
    except Exception:
        return "unknown"
    if abs(v - float(F.cross_entropy(z, t))) < 1e-5:
        return "logits"
    if abs(v - float(F.nll_loss(z, t))) < 1e-5:
        return "log-probs"
    return "unknown"


def probe_outputs_vs_loss(ctx: ProbeContext, end: float) -> Outcome:
    m = ctx.fresh().eval()
    with torch.no_grad():
        out = m(ctx.X[:64])
    kind, wants = output_kind(out), loss_expects(ctx.loss_fn, ctx.n_classes)
    ev = {"outputs_look_like": kind, "loss_expects": wants, "min": float(out.min()), "max": float(out.max()),
          "row_sum_mean": float(out.sum(1).mean()) if out.ndim == 2 else None}
    fix_softmax = ("return raw logits from forward() (drop the final softmax/sigmoid) and let CrossEntropyLoss "
                   "apply log-softmax; apply softmax only when you need probabilities, at prediction time")
    if wants == "logits" and kind == "probs":
        return Outcome([Finding(
            "probabilities-into-loss", "error", ev,
            "the model outputs probabilities (rows sum to 1) but CrossEntropyLoss applies softmax again: "
            "gradients shrink and the loss cannot go below ~ln(C) - 1",
            fix_softmax)])
    if wants == "logits" and kind == "bounded01":
        return Outcome([Finding(
            "probabilities-into-loss", "warn", ev,
            "every output lies in [0, 1] (a final sigmoid?): logits that cannot exceed 1 cap the model's confidence",
            fix_softmax)])
    if wants == "logits" and kind == "log-probs":
        return Outcome([Finding(
            "probabilities-into-loss", "info", ev,
            "the model outputs log-softmax and CrossEntropyLoss applies log-softmax again: harmless (it is "
            "idempotent) but redundant, and easy to mistake for probabilities at prediction time",
            "return raw logits, or keep log_softmax and use nn.NLLLoss")])
    if wants == "log-probs" and kind in ("probs", "bounded01"):
        return Outcome([Finding(
            "probabilities-into-loss", "error", ev,
            "the model outputs probabilities but NLLLoss expects log-probabilities: it then minimises -p, "
            "which gives almost no gradient to confident mistakes",
            "use log_softmax in place of softmax at the end of forward(), or return logits and use CrossEntropyLoss")])
    if wants == "log-probs" and kind == "logits":
        return Outcome([Finding(
            "logits-into-nll", "error", ev,
            "NLLLoss expects log-probabilities but the model outputs raw logits: the loss is unbounded below "
            "and pushes logits to infinity",
            "use nn.CrossEntropyLoss on the logits, or end forward() with log_softmax")])
    return Outcome(note=f"outputs look like {kind}, loss expects {wants}")


def probe_loss_at_init(ctx: ProbeContext, end: float) -> Outcome:
    m = ctx.fresh()  # train mode: the loss the first optimiser step will see
    xb, yb = ctx.X[:128], ctx.y[:128]
    with torch.no_grad():
        out = m(xb)
        loss = float(ctx.loss_fn(out, yb))
    ln_c = ctx.chance_loss
    counts = torch.bincount(ctx.y.cpu(), minlength=ctx.n_classes).double()
    prior = counts / counts.sum()
    prior_entropy = float(-(prior[prior > 0] * prior[prior > 0].log()).sum())
    ev = {"loss": loss, "ln_C": ln_c, "prior_entropy": prior_entropy, "ratio": loss / ln_c,
          "logit_std": float(out.std()) if out.numel() > 1 else 0.0}
    fix = ("make the initial logits small and centred on the class prior: scale the final layer's weights down "
           "(e.g. nn.init.zeros_ or ×0.1) and set its bias to log(class share) with "
           "autopilot.doctor.init_final_bias(model, class_counts)")
    if not math.isfinite(loss):
        return Outcome([Finding("loss-at-init", "error", ev, "the loss is not finite before any training step",
                                "check the inputs for NaN/inf and the forward pass for log(0) or division by zero")])
    if loss > INIT_LOSS_HIGH * ln_c:
        return Outcome([Finding(
            "loss-at-init", "warn", ev,
            f"the loss at initialisation is {loss:.3f}, {loss / ln_c:.1f}× ln(C)={ln_c:.3f}: the model starts out "
            "confidently wrong and spends its first steps undoing that",
            fix)])
    if loss < INIT_LOSS_LOW * ln_c:
        # A model that was already trained starts low; that is fine, so only info.
        return Outcome([Finding(
            "loss-at-init", "info", ev,
            f"the loss before training is {loss:.3f}, well below ln(C)={ln_c:.3f}: the model is already trained, "
            "or the inputs give the label away",
            "if the model was freshly initialised, look for the label (or a proxy) inside the inputs")])
    return Outcome(note=f"loss {loss:.3f} vs ln(C) {ln_c:.3f}")


def probe_batch_mixing(ctx: ProbeContext, end: float) -> Outcome:
    if not ctx.float_inputs:
        raise Skip("inputs are not floating point (no gradient to follow)")
    n = min(4, len(ctx.X))
    if n < 2:
        raise Skip("needs at least 2 examples")
    m = ctx.fresh().eval()  # eval: batch norm legitimately mixes a batch in train mode
    x = ctx.X[:n].clone().requires_grad_(True)
    out = m(x)
    if out.shape[0] != n:
        return Outcome([Finding(
            "batch-mixing", "error", {"batch": n, "output_rows": int(out.shape[0])},
            f"a batch of {n} gives {out.shape[0]} output rows: a reshape folds the batch dimension into others",
            "use x.flatten(1) or x.reshape(x.shape[0], -1), and permute (not view) to reorder dimensions")])
    i = 1
    out[i].sum().backward()
    if x.grad is None:
        raise Skip("the output does not depend on the input through autograd")
    g = x.grad.reshape(n, -1).abs().sum(1)
    own, others = float(g[i]), float(torch.cat([g[:i], g[i + 1:]]).max())
    if others <= 1e-7 * max(own, 1e-30) or (own == 0 and others == 0):
        return Outcome(note=f"d out[{i}] / d x[j] = 0 for j != {i}")
    return Outcome([Finding(
        "batch-mixing", "error", {"row": i, "grad_own_row": own, "grad_other_rows_max": others},
        f"in eval mode, output {i} depends on other examples of the batch (gradient {others:.3g} on them vs "
        f"{own:.3g} on its own input): the forward pass mixes examples",
        "look for view()/reshape() used to swap dimensions (use permute/transpose), batch_first mismatches in "
        "RNNs, and reductions over dim 0 inside forward()")])


# ------------------------------------------------------------ training probes

def _loss_step(m, opt, loss_fn, xb, yb):
    out = m(xb)
    loss = loss_fn(out, yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return out.detach(), float(loss.detach())


def probe_reproducible(ctx: ProbeContext, end: float) -> Outcome:
    if not _trainable(ctx.model):
        raise Skip("no trainable parameters")
    order = ctx.batch_order(1)
    bs = min(8, len(ctx.X))
    batches = [order[(k * bs) % len(order):][:bs] for k in range(3)]

    def run() -> list[float]:
        ctx.seed_all()
        m = ctx.fresh()
        opt = ctx.make_optimizer(_trainable(m), 1e-3, "adam")
        losses = [_loss_step(m, opt, ctx.loss_fn, ctx.X[b], ctx.y[b])[1] for b in batches]
        m.eval()
        with torch.no_grad():
            losses.append(float(ctx.loss_fn(m(ctx.X[batches[0]]), ctx.y[batches[0]])))
        return losses

    a, b = run(), run()
    diff = max(abs(u - v) for u, v in zip(a, b))
    if all(u == v or abs(u - v) <= 1e-6 * max(1.0, abs(u)) for u, v in zip(a, b)):
        return Outcome(note="identical losses")
    return Outcome([Finding(
        "not-reproducible", "warn", {"losses_run1": a, "losses_run2": b, "max_diff": diff},
        "two short runs from the same seed and the same initial weights give different losses: results cannot "
        "be reproduced or compared fairly",
        "draw randomness from torch's seeded RNG (not time, os.urandom or an unseeded torch.Generator); for GPUs "
        "use torch.use_deterministic_algorithms(True)")])


def _pick_overfit_batch(ctx: ProbeContext, k: int) -> torch.Tensor:
    """k examples covering as many classes as possible (a one-class batch is trivially fit)."""
    order = ctx.batch_order(2).cpu()
    y = ctx.y.cpu()[order]
    chosen, seen = [], set()
    for i, c in zip(order.tolist(), y.tolist()):
        if c not in seen:
            chosen.append(i)
            seen.add(c)
        if len(chosen) >= k:
            break
    rest = [i for i in order.tolist() if i not in set(chosen)]
    chosen += rest[: k - len(chosen)]
    return torch.tensor(chosen, device=ctx.X.device)


def probe_overfit(ctx: ProbeContext, end: float) -> Outcome:
    """cannot-overfit + frozen-parameters."""
    ctx.seed_all(2)
    m = ctx.fresh()
    names = dict(m.named_parameters())
    frozen = [n for n, p in names.items() if not p.requires_grad]
    total = sum(p.numel() for p in names.values())
    findings = []
    if not _trainable(m):
        return Outcome([Finding(
            "cannot-overfit", "error", {"trainable_parameters": 0, "parameters": total, "frozen": frozen[:20]},
            "no parameter has requires_grad=True: the optimiser has nothing to change and the model cannot learn",
            "set p.requires_grad_(True) on the layers you mean to train (check for a leftover freeze loop), "
            "and pass those parameters to the optimiser")])
    idx = _pick_overfit_batch(ctx, min(OVERFIT_EXAMPLES, len(ctx.X)))
    xb, yb = ctx.X[idx], ctx.y[idx]
    before = {n: p.detach().clone() for n, p in names.items() if p.requires_grad}
    opt = ctx.make_optimizer(_trainable(m), OVERFIT_LR, "adam")
    best_acc, steps, passed, timed_out, first_loss, loss = 0.0, 0, False, False, None, float("nan")
    for steps in range(1, OVERFIT_MAX_STEPS + 1):
        if _timed_out(end):
            timed_out, steps = True, steps - 1
            break
        out, loss = _loss_step(m, opt, ctx.loss_fn, xb, yb)
        first_loss = loss if first_loss is None else first_loss
        acc = float((out.argmax(1) == yb).float().mean())
        best_acc = max(best_acc, acc)
        if acc == 1.0:  # scored before this step's update: the model already fits the batch
            passed = True
            break
    unchanged = [n for n, p in names.items() if p.requires_grad and torch.equal(p.detach(), before[n])]
    stuck = frozen + unchanged
    if stuck:
        n_stuck = sum(names[n].numel() for n in stuck)
        findings.append(Finding(
            "frozen-parameters", "warn",
            {"requires_grad_false": frozen[:20], "never_changed": unchanged[:20], "share_of_parameters": round(n_stuck / total, 4)},
            f"{len(stuck)} parameter tensor(s) ({n_stuck / total:.0%} of the weights) never change in training: "
            + ("requires_grad=False" if frozen else "") + (" and " if frozen and unchanged else "")
            + ("not reached by the loss's gradient" if unchanged else ""),
            "if not intended (fine-tuning a frozen backbone is fine), set requires_grad_(True), and make sure "
            "forward() uses every layer you defined"))
    ev = {"examples": len(idx), "steps": steps, "best_accuracy": best_acc, "first_loss": first_loss,
          "last_loss": loss, "lr": OVERFIT_LR, "optimizer": "adam"}
    if passed:
        return Outcome(findings, note=f"100 % on {len(idx)} examples after {steps} step(s)")
    if timed_out and steps < OVERFIT_MIN_STEPS:
        return Outcome(findings, status="skipped", note=f"out of time after {steps} steps (best accuracy {best_acc:.0%})")
    findings.insert(0, Finding(
        "cannot-overfit", "error" if best_acc < 0.9 else "warn", ev,
        f"after {steps} Adam steps the model reaches only {best_acc:.0%} on a batch of {len(idx)} examples it "
        "sees every step: a working set-up memorises it",
        "check that the parameters the optimiser holds are the ones forward() uses and that they require grad, "
        "that the loss takes logits, and that nothing detaches the graph (.data, .detach(), .item() in forward)"))
    return Outcome(findings)


def probe_no_signal(ctx: ProbeContext, end: float) -> Outcome:
    """Input-independent baseline: the same model, trained briefly on the
    real inputs and on zeroed inputs. The zeroed model's output cannot depend
    on the example, so we forward two zero rows and score that one output
    against the whole batch's labels: the same loss as a batch of zeros,
    at a fraction of the cost."""
    if not _trainable(ctx.model):
        raise Skip("no trainable parameters (see cannot-overfit)")
    n = len(ctx.X)
    bs = SIGNAL_BATCH if n >= SIGNAL_BATCH * 12 else max(4, n // 12)
    steps = min(SIGNAL_MAX_STEPS, n // bs)  # one pass: every batch is unseen when scored
    if steps < 8:
        raise Skip(f"too few training examples ({n})")
    order = ctx.batch_order(3)
    batches = [order[k * bs:(k + 1) * bs] for k in range(steps)]

    def run(zeroed: bool):
        ctx.seed_all(3)
        m = ctx.fresh()
        opt = ctx.make_optimizer(_trainable(m), SIGNAL_LR, "adam")
        accs, losses = [], []
        x0 = torch.zeros(2, *ctx.X.shape[1:], dtype=ctx.X.dtype, device=ctx.X.device)
        for b in batches:
            if _timed_out(end):
                break
            yb = ctx.y[b]
            if zeroed:
                out = m(x0)[:1].expand(len(yb), -1)
            else:
                out = m(ctx.X[b])
            loss = ctx.loss_fn(out, yb)
            accs.append(float((out.argmax(1) == yb).float().mean()))
            losses.append(float(loss.detach()))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return accs, losses

    # Zeroed first: it is cheap, so the real run gets whatever time is left.
    acc0, loss0 = run(True)
    acc1, loss1 = run(False)
    k = min(len(acc0), len(acc1))
    if k < 8:
        raise Skip(f"out of time after {k} steps")
    w = slice(k // 2, k)  # score the second half: by then the real model has had time to learn
    a0, a1 = np.mean(acc0[w]), np.mean(acc1[w])
    l0, l1 = np.mean(loss0[w]), np.mean(loss1[w])
    m_ = len(acc1[w])
    se_acc = math.sqrt(max(a0 * (1 - a0), 1e-4) / (m_ * bs)) * math.sqrt(2)
    se_loss = math.sqrt((np.var(loss0[w]) + np.var(loss1[w])) / m_)
    acc_gain, loss_gain = a1 - a0, l0 - l1
    ev = {"real_accuracy": round(float(a1), 4), "zeroed_accuracy": round(float(a0), 4),
          "real_loss": round(float(l1), 4), "zeroed_loss": round(float(l0), 4), "steps": k, "batch": bs,
          "scored_examples": m_ * bs, "lr": SIGNAL_LR}
    if acc_gain > max(0.03, 2 * se_acc) or loss_gain > max(0.02 * ctx.chance_loss, 3 * se_loss):
        return Outcome(note=f"real {a1:.0%} vs zeroed inputs {a0:.0%} on unseen batches")
    if acc_gain >= SIGNAL_CLEAR_GAIN or loss_gain >= SIGNAL_CLEAR_GAIN * ctx.chance_loss:
        # The real model is well ahead but m_ * bs examples cannot show it is not luck:
        # an error here would stop a sound run on a small table.
        return Outcome(status="skipped", note=(
            f"inconclusive: real {a1:.0%} (loss {l1:.3f}) vs zeroed inputs {a0:.0%} (loss {l0:.3f}) "
            f"on only {m_ * bs} unseen examples"))
    if 2 * se_acc > SIGNAL_CLEAR_GAIN:
        # Nor can so few show that there is no gain: on 20 examples a real gain
        # of 10 points reads as none about a quarter of the time. A 60-row
        # table of two overlapping blobs scored 60 % on real and on zeroed
        # inputs on one machine, 60 % against 40 % on another.
        return Outcome(status="skipped", note=(
            f"inconclusive: real {a1:.0%} (loss {l1:.3f}) vs zeroed inputs {a0:.0%} (loss {l0:.3f}) on only "
            f"{m_ * bs} unseen examples, too few to show a gain of {SIGNAL_CLEAR_GAIN:.0%} or its absence"))
    return Outcome([Finding(
        "no-signal", "error", ev,
        f"trained briefly, the model does no better on the real inputs ({a1:.1%}, loss {l1:.3f}) than on zeroed "
        f"inputs ({a0:.1%}, loss {l0:.3f}): it learns nothing from x",
        "check that labels stay aligned with inputs (a shuffle applied to one but not the other), that the "
        "inputs are not blank or constant, and that forward() actually uses x")])


def lr_range_test(ctx: ProbeContext, end: float) -> dict:
    """Leslie Smith's range test: raise the lr exponentially each step, watch the smoothed loss."""
    ctx.seed_all(4)
    m = ctx.fresh()
    opt = ctx.make_optimizer(_trainable(m), RANGE_LR_MIN)
    bs = min(RANGE_BATCH, max(2, len(ctx.X) // 4))
    order = ctx.batch_order(4)
    per_pass = max(1, len(order) // bs)
    beta, smooth, best, best_lr = 0.7, 0.0, math.inf, None
    lrs, losses, blowup_lr = [], [], None
    for i in range(RANGE_STEPS):
        if _timed_out(end):
            break
        lr = RANGE_LR_MIN * (RANGE_LR_MAX / RANGE_LR_MIN) ** (i / (RANGE_STEPS - 1))
        for g in opt.param_groups:
            g["lr"] = lr
        b = order[(i % per_pass) * bs:(i % per_pass + 1) * bs]
        out = m(ctx.X[b])
        loss = ctx.loss_fn(out, ctx.y[b])
        v = float(loss.detach())
        if not math.isfinite(v):
            blowup_lr = lr
            break
        smooth = beta * smooth + (1 - beta) * v
        s = smooth / (1 - beta ** (i + 1))  # bias-corrected
        lrs.append(lr)
        losses.append(s)
        if s < best:
            best, best_lr = s, lr
        if s > RANGE_BLOWUP * best and i > 3:
            blowup_lr = lr
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if len(lrs) < 10:
        raise Skip(f"out of time after {len(lrs)} steps")
    # Steepest descent of the smoothed curve before its minimum (per log-lr).
    imin = int(np.argmin(losses))
    slopes = np.diff(losses[: imin + 1])
    steepest = lrs[int(np.argmin(slopes))] if len(slopes) else lrs[imin]
    return {"suggested_lr": best_lr / 10, "min_loss_lr": best_lr, "steepest_lr": steepest, "blowup_lr": blowup_lr,
            "min_loss": best, "start_loss": losses[0], "steps": len(lrs), "batch": bs,
            "optimizer": ctx.optimizer if isinstance(ctx.optimizer, str) else "custom",
            "complete": blowup_lr is not None or len(lrs) == RANGE_STEPS,
            "curve": [[float(f"{a:.3g}"), round(b, 4)] for a, b in zip(lrs, losses)]}


def loss_at(r: dict, lr: float) -> float:
    """The smoothed range-test loss at the largest tested lr <= `lr` (inf past a blow-up)."""
    if r["blowup_lr"] is not None and lr >= r["blowup_lr"]:
        return math.inf
    below = [loss for a, loss in r["curve"] if a <= lr * 1.0001]
    return below[-1] if below else r["start_loss"]


def lr_too_high(r: dict, lr: float) -> bool:
    """Past the loss minimum, and the loss there has climbed back at least a
    quarter of the way from its minimum to where it started (or blown up).
    Climbing back covers collapse too: a net whose ReLUs die at a huge lr
    sits at chance level without ever exploding."""
    if lr <= r["min_loss_lr"]:
        return False
    return loss_at(r, lr) > r["min_loss"] + 0.25 * max(0.0, r["start_loss"] - r["min_loss"])


def probe_lr_range(ctx: ProbeContext, end: float) -> Outcome:
    """lr-range (info) and, when the user told us their lr, lr-too-high / lr-too-low."""
    if not _trainable(ctx.model):
        raise Skip("no trainable parameters (see cannot-overfit)")
    r = lr_range_test(ctx, end)
    ctx.results["lr_range"] = r
    # A curve that never falls (no signal, frozen model) makes the suggestion meaningless: say so.
    flat = "; the loss hardly fell at any lr, so treat the suggestion with care" if r["min_loss"] > 0.95 * r["start_loss"] else ""
    findings = [Finding(
        "lr-range", "info", dict(r),
        f"range test ({r['optimizer']}): the loss falls fastest near lr {r['steepest_lr']:.2g} and is lowest at "
        f"{r['min_loss_lr']:.2g}" + (f", blowing up by {r['blowup_lr']:.2g}" if r["blowup_lr"] else "") + flat,
        f"start from lr ≈ {r['suggested_lr']:.2g} (a tenth of the loss minimum) with this optimiser")]
    if ctx.lr is not None:
        user = {"lr": ctx.lr, "loss_at_lr": loss_at(r, ctx.lr),
                **{k: r[k] for k in ("suggested_lr", "min_loss_lr", "blowup_lr", "min_loss", "start_loss")}}
        if lr_too_high(r, ctx.lr):
            findings.append(Finding(
                "lr-too-high", "warn", user,
                f"lr {ctx.lr:g} is past {r['min_loss_lr']:.2g}, where the range-test loss stops falling; at lr "
                f"{ctx.lr:g} it is back up at {user['loss_at_lr']:.3g} (start {r['start_loss']:.3g}, best "
                f"{r['min_loss']:.3g}): training is likely to stall, collapse or diverge",
                f"use lr ≈ {r['suggested_lr']:.2g} (or a warm-up to at most {r['min_loss_lr'] / 3:.2g})"))
        elif ctx.lr < r["suggested_lr"] / LR_TOO_LOW_FACTOR:
            findings.append(Finding(
                "lr-too-low", "warn", user,
                f"lr {ctx.lr:g} is more than {LR_TOO_LOW_FACTOR:g}× below the range test's suggestion "
                f"{r['suggested_lr']:.2g}: training will crawl",
                f"use lr ≈ {r['suggested_lr']:.2g}"))
    return Outcome(findings, status="found" if len(findings) > 1 else "ok",
                   note=f"suggested lr {r['suggested_lr']:.2g}")
