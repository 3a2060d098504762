"""Live diagnostics: a training callback that watches the run as it happens.

With autopilot's trainer:

    live = LiveDoctor()
    autopilot.train.train(model, train, val, hp, callbacks=[live])
    live.findings                 # or render(live.report())

In your own loop, call the hooks yourself (every one is optional):

    live = LiveDoctor()
    live.on_train_start(model, opt, total_steps=epochs * len(loader))
    for epoch in range(epochs):
        for x, y in loader:
            loss = loss_fn(model(x), y)
            opt.zero_grad(); loss.backward(); opt.step(); sched.step()
            live.on_step(step, loss.item(), model, opt)   # lr is read from opt when not given
        live.on_epoch_end({"train_loss": tl, "val_loss": vl, "train_acc": ta, "val_acc": va}, model)
    live.on_train_end(None)       # removes the forward hooks

Cost: every `every` steps it copies the weight matrices once (for the
update-to-data ratio) and hooks the ReLUs for one forward pass; between
samples it only adds the loss to running sums. See bench/doctor.py.
"""
from __future__ import annotations

import math
import statistics
from collections import deque

import torch
from torch import nn

from .findings import DoctorReport, Finding

REGULARISE = ("in the recipe's order: get more data, add data augmentation, add weight decay, add dropout, "
              "use a smaller model, stop early (keep the best-validation weights)")


def _metric(m, name: str):
    return m.get(name) if isinstance(m, dict) else getattr(m, name, None)


class LiveDoctor:
    def __init__(self, *, every: int | None = None, spike_window: int = 50, spike_z: float = 6.0,
                 ud_high: float = -1.0, ud_low: float = -5.0, dead_share: float = 0.5, overfit_patience: int = 3):
        """every: sampling interval in steps (default: ~25 samples per run, 5..50 steps apart)."""
        self.every_arg = every
        self.spike_window, self.spike_z = spike_window, spike_z
        self.ud_high, self.ud_low = ud_high, ud_low
        self.dead_share, self.overfit_patience = dead_share, overfit_patience
        self._hooks: list = []
        self._reset_run()

    def _reset_run(self) -> None:
        """One LiveDoctor watches one run: on_train_start starts over."""
        self.findings: list[Finding] = []
        self.ud_samples: list[dict] = []  # {"step", "lr", "median_log10", "loss", "loss_rose", "layers"}
        self.dead_samples: list[dict] = []  # {"step", "layers": {name: share of dead units}}
        self.every = self.every_arg or 25
        self.total_steps = None
        self.peak_lr = 0.0
        self._losses: deque = deque(maxlen=self.spike_window)
        self._sum, self._sumsq, self._pushed = 0.0, 0.0, 0
        self._last_finite = None
        self._first_losses: list[float] = []  # the loss at the start, to see if it ever falls
        self._window_sum, self._window_n = 0.0, 0  # losses since the last update-ratio sample
        self._spikes: list[dict] = []
        self._weights: list[tuple[str, nn.Parameter]] = []
        self._snapshot: list[torch.Tensor] | None = None
        self._hooks: list = []
        self._relus: list[tuple[str, nn.Module]] = []
        self._relu_records: dict[str, float] = {}
        self._relu_calls: dict[str, int] = {}
        self._dead_streak: dict[str, int] = {}
        self._history: list[dict] = []
        self._by_id: dict[str, Finding] = {}

    # -------------------------------------------------------------- helpers

    def _emit(self, id: str, severity: str, evidence: dict, why: str, suggestion: str) -> Finding:
        """One finding per id: later evidence updates the same finding."""
        f = Finding(id, severity, evidence, why, suggestion)
        if id in self._by_id:
            self.findings[self.findings.index(self._by_id[id])] = f
        else:
            self.findings.append(f)
        self._by_id[id] = f
        return f

    def report(self) -> DoctorReport:
        return DoctorReport(findings=list(self.findings))

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self._snapshot = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -------------------------------------------------------------- callbacks

    def on_train_start(self, model: nn.Module, optimizer=None, hparams=None, total_steps: int | None = None) -> None:
        self.close()
        self._reset_run()
        self.total_steps = total_steps
        if self.every_arg is None and total_steps:
            self.every = max(5, min(50, total_steps // 25))
        if optimizer is not None:
            self.peak_lr = max(float(g["lr"]) for g in optimizer.param_groups)
        # Weight matrices and kernels only (Karpathy's ratio is about weights,
        # and biases/BN scales start at 0/1 where a ratio means little).
        self._weights = [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
        # Hooks go on only for the one forward pass we sample, so between
        # samples training runs exactly as without the doctor.
        self._relus = [(name or "relu", mod) for name, mod in model.named_modules() if isinstance(mod, nn.ReLU)]

    def _hook_relus(self) -> None:
        if not self._hooks:
            self._hooks = [mod.register_forward_hook(self._relu_hook(name)) for name, mod in self._relus]

    def _unhook_relus(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def _relu_hook(self, name: str):
        def hook(module, inputs, output):
            if not module.training:
                return  # an evaluation pass between two training steps: not what we sample
            k = self._relu_calls.get(name, 0)
            self._relu_calls[name] = k + 1
            with torch.no_grad():
                o = output.detach()
                if o.ndim >= 3:  # (N, C, ...): a unit is a channel
                    alive = (o > 0).transpose(0, 1).reshape(o.shape[1], -1).any(1)
                elif o.ndim == 2:
                    alive = (o > 0).any(0)
                else:
                    return
                self._relu_records[f"{name}" + (f"#{k}" if k else "")] = 1.0 - float(alive.float().mean())
        return hook

    def on_step(self, step: int, loss, model: nn.Module | None = None, optimizer=None, lr: float | None = None) -> None:
        loss = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        if lr is None and optimizer is not None:
            lr = float(optimizer.param_groups[0]["lr"])
        if lr is not None:
            self.peak_lr = max(self.peak_lr, lr)
        if not math.isfinite(loss):
            self._diverged(step, loss, lr)
            return
        self._spike(step, loss)
        self._last_finite = loss
        if len(self._first_losses) < 3:
            self._first_losses.append(loss)
        self._window_sum += loss
        self._window_n += 1
        self._schedule(step, lr)
        if self._relu_records:
            self._dead(step)
        if self._snapshot is not None:
            self._update_ratio(step, lr)
        if step % self.every == 0:
            # Copy the weights now (after this step's update) to compare after the next one.
            self._snapshot = [p.detach().clone() for _, p in self._weights]
            self._hook_relus()

    def on_epoch_end(self, metrics, model: nn.Module | None = None) -> None:
        row = {k: _metric(metrics, k) for k in ("train_loss", "val_loss", "train_acc", "val_acc")}
        if row["val_loss"] is None or row["train_loss"] is None:
            return
        self._history.append(row)
        self._overfitting()

    def on_train_end(self, result=None) -> None:
        self._judge_lr(final=True)
        self.close()

    # -------------------------------------------------------------- rules

    def _diverged(self, step: int, loss: float, lr) -> None:
        self._emit("diverged", "error",
                   {"step": step, "loss": loss, "lr": lr, "last_finite_loss": self._last_finite,
                    "recent_losses": [round(v, 4) for v in list(self._losses)[-10:]]},
                   f"the training loss became {loss} at step {step}" + (f" (lr {lr:.3g})" if lr else ""),
                   "lower the learning rate (×0.1, or run the doctor's lr range test), add a warm-up and gradient "
                   "clipping; if it happens at any lr, look for log(0), division by zero or NaN inputs")
        self.close()  # training stops here (autopilot's trainer raises); leave no hooks behind

    def _spike(self, step: int, loss: float) -> None:
        w = self._losses
        n = len(w)
        if n >= 20:
            # Running sums: O(1) per step; the median only when z already fires.
            mean = self._sum / n
            std = math.sqrt(max(0.0, self._sumsq / n - mean * mean))
            z = (loss - mean) / std if std > 0 else 0.0
            med = statistics.median(w) if z > self.spike_z else 0.0
            # z alone fires on a flat, near-zero loss; also ask for a real jump.
            if z > self.spike_z and loss > 1.5 * med:
                self._spikes.append({"step": step, "loss": round(loss, 4), "z": round(z, 1), "window_median": round(med, 4)})
                self._emit("loss-spike", "warn",
                           {"spikes": len(self._spikes), "first": self._spikes[0], "largest_z": max(s["z"] for s in self._spikes),
                            "window": self.spike_window, "z_threshold": self.spike_z},
                           f"{len(self._spikes)} loss spike(s) more than {self.spike_z:g} standard deviations above the "
                           f"last {self.spike_window} steps (first at step {self._spikes[0]['step']})",
                           "lower the peak learning rate or lengthen warm-up, clip gradients, and look at the batch that "
                           "spiked (a mislabelled or corrupt example)")
        if n == w.maxlen:
            old = w[0]
            self._sum -= old
            self._sumsq -= old * old
        w.append(loss)
        self._sum += loss
        self._sumsq += loss * loss
        self._pushed += 1
        if self._pushed % 1000 == 0:  # wipe the rounding drift of the running sums now and then
            self._sum, self._sumsq = math.fsum(w), math.fsum(v * v for v in w)

    def _schedule(self, step: int, lr) -> None:
        if lr is None or not self.total_steps or "schedule-decays-early" in self._by_id or self.peak_lr <= 0:
            return
        if step < self.total_steps / 2 and lr < 0.01 * self.peak_lr:
            self._emit("schedule-decays-early", "warn",
                       {"step": step, "total_steps": self.total_steps, "lr": lr, "peak_lr": self.peak_lr},
                       f"by step {step} of {self.total_steps} the learning rate is {lr:.3g}, under 1 % of its peak "
                       f"{self.peak_lr:.3g}: the second half of training barely moves the weights",
                       "stretch the schedule over the whole run (e.g. set the scheduler's total steps to epochs × "
                       "steps per epoch, step it per batch or per epoch consistently)")

    def _update_ratio(self, step: int, lr) -> None:
        layers = {}
        with torch.no_grad():
            for (name, p), before in zip(self._weights, self._snapshot):
                d = p.detach() - before
                s = float(p.detach().float().std()) if p.numel() > 1 else 0.0
                u = float(d.float().std()) if d.numel() > 1 else 0.0
                if s > 0 and u > 0:
                    layers[name] = math.log10(u / s)
        self._snapshot = None
        window = self._window_sum / max(1, self._window_n)
        self._window_sum, self._window_n = 0.0, 0
        if layers:
            start = statistics.fmean(self._first_losses)
            self.ud_samples.append({"step": step, "lr": lr, "median_log10": statistics.median(layers.values()),
                                    "loss": window, "loss_rose": window > 1.05 * start,
                                    "layers": {k: round(v, 2) for k, v in layers.items()}})
            self._judge_lr(final=False)

    def _judge_lr(self, final: bool) -> None:
        """Judge on samples taken near the peak lr: warm-up and the end of a
        decaying schedule are supposed to make small updates.

        Why -1 and not Karpathy's ~-3 rule of thumb: measured on autopilot's
        default models (batch norm, AdamW at 3e-3, a good setting), the median
        log10 ratio at peak lr is -1.4 to -1.9. Batch norm makes weights scale
        invariant, so large relative updates are tolerated; with gradient
        clipping even lr=10 SGD stays near -1.5. So a second sign also counts:
        at peak lr the loss sits above where it started (Karpathy: "loss going
        up: lr too high"), with updates big enough to be the cause."""
        near_peak = [s for s in self.ud_samples if s["lr"] is None or s["lr"] >= 0.5 * self.peak_lr]
        if len(near_peak) < (1 if final else 2):
            return
        med = statistics.median(s["median_log10"] for s in near_peak)
        rose = sum(s["loss_rose"] for s in near_peak)
        last = near_peak[-1]
        ev = {"median_log10_update_ratio": round(med, 2), "samples": len(near_peak), "peak_lr": self.peak_lr,
              "samples_loss_above_start": rose, "start_loss": round(statistics.fmean(self._first_losses), 4),
              "layers_last_sample": last["layers"], "high": self.ud_high, "low": self.ud_low}
        if "lr-too-high" not in self._by_id and (med > self.ud_high or (rose >= 2 and med > -2.5)):
            what = (f"each step changes the weights by 10^{med:.1f} of their size (median over layers; Karpathy's "
                    "rule of thumb is ~10^-3)")
            if rose >= 2:
                what += f", and at peak lr the loss stays above its starting value {ev['start_loss']:.3g}"
            self._emit("lr-too-high", "warn", ev, what + ": the learning rate is too high",
                       "lower the learning rate 3-10× (or run autopilot.doctor.doctor(..., lr=...) for a range test)")
        elif med < self.ud_low and (final or len(near_peak) >= 3) and "lr-too-low" not in self._by_id:
            self._emit("lr-too-low", "warn", ev,
                       f"each step changes the weights by only 10^{med:.1f} of their size (a healthy run is near "
                       "10^-3): the learning rate is too low and training crawls",
                       f"raise the learning rate about {10 ** (-3 - med):.0f}× (or run autopilot.doctor.doctor(..., "
                       "lr=...) for a range test)")

    def _dead(self, step: int) -> None:
        layers = self._relu_records
        self._relu_records, self._relu_calls = {}, {}
        self._unhook_relus()
        self.dead_samples.append({"step": step, "layers": {k: round(v, 3) for k, v in layers.items()}})
        for name, share in layers.items():
            self._dead_streak[name] = self._dead_streak.get(name, 0) + 1 if share > self.dead_share else 0
        # Two samples in a row: one batch can silence a unit by chance.
        dead = {k: layers[k] for k, n in self._dead_streak.items() if n >= 2 and k in layers}
        if dead:
            self._emit("dead-units", "warn", {"layers": {k: round(v, 3) for k, v in dead.items()}, "step": step,
                                              "threshold": self.dead_share},
                       f"in {len(dead)} ReLU layer(s) more than {self.dead_share:.0%} of units output 0 for the whole "
                       f"batch (e.g. {next(iter(dead))}: {max(dead.values()):.0%}): they no longer learn",
                       "lower the learning rate, add batch norm before the ReLU, check the init (He/Kaiming), or use "
                       "LeakyReLU/GELU")

    def _overfitting(self) -> None:
        h = self._history
        b = min(range(len(h)), key=lambda i: h[i]["val_loss"])
        e = len(h) - 1
        if e - b < self.overfit_patience:
            return
        best, now = h[b], h[e]
        rise = now["val_loss"] - best["val_loss"]
        gap_best = best["val_loss"] - best["train_loss"]
        gap_now = now["val_loss"] - now["train_loss"]
        if not (rise > 0.1 * best["val_loss"] + 0.01 and now["train_loss"] < best["train_loss"] and gap_now > gap_best):
            return
        acc_gap = (now["train_acc"] - now["val_acc"]) if now["train_acc"] is not None and now["val_acc"] is not None else None
        self._emit("overfitting", "warn",
                   {"best_val_epoch": b + 1, "epoch": e + 1, "best_val_loss": round(best["val_loss"], 4),
                    "val_loss": round(now["val_loss"], 4), "train_loss": round(now["train_loss"], 4),
                    "loss_gap": round(gap_now, 4), "loss_gap_at_best": round(gap_best, 4),
                    "acc_gap": None if acc_gap is None else round(acc_gap, 4)},
                   f"validation loss has risen {rise:.3f} since epoch {b + 1} while training loss kept falling: the "
                   "model is memorising the training set",
                   "regularise " + REGULARISE)
