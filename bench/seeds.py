"""Training-seed spread: how far one network's test accuracy moves when
nothing changes but the training seed, and whether averaging those models
(an ensemble of equals) moves it.

Why: an acceptance line such as "mnist5k at 0.99" is seven errors on the
750-image test split. Whether a change to the search or the network
helps by one or two errors cannot be told from one run when the same
network, trained again with another seed, moves by more than that.

For each split seed and training seed: the data set's first-trial network
and training (search.space.default_params, what `autopilot run` trains
first, with the augmentation families the doctor excludes on this data
left out as `autopilot run` leaves them out), trained --epochs epochs on
the split's training rows, its best validation epoch's weights, scored on
the split's test rows. Reported per split: each seed's test errors, their
median and range, and the errors of every pair's and of all the seeds'
averaged probabilities. The split seeds default to 1-4, not 0: seed 0 is
the split `autopilot run` uses by default, whose test figure is the one
being judged, so nothing here is chosen on it.

Two changes that would cost the search no training are measured on the
same runs, against the plain weights of the same training:
  --ema D ...   the exponential moving average of the weights (decay D per
                step, buffers included), scored at its own best validation
                epoch. It consumes no randomness, so the trajectory it
                averages is the plain run's, step for step.
  --tta         test-time views of the chosen weights, probabilities
                averaged: one-pixel shifts (5 views), +-6 degree rotations
                (3 views), and all 7 (the cost at serving is the views').
  --last        the last epoch's weights, where the one-cycle schedule has
                annealed, instead of the best validation epoch's.
Two more change the training, for comparison with another run of the bench
on the same splits and seeds:
  --set K=V     a training hyper-parameter changed for every run (for
                example aug_strength=1.0, or elastic=1.0: Simard's elastic
                distortion after the policy, data.policies).
  --arch K=V    an architecture parameter of the search space changed
                (for example cnn2d_s2_width=48).
  --network     which of search.space.first_params: the first (default) or
                the second known-good network (two stages, flatten head:
                what a kept mnist5k --budget 7m run shipped).
  --train-share F  train on a stratified share F of the split's training
                rows (the same rows for every training seed): what fewer
                rows cost, e.g. 0.91 for a run's shipped model, which trains
                on train+validation without the gate slice (3,870 of 4,250
                rows on mnist5k).

    python bench/seeds.py --jobs 2                                  # mnist5k, splits 1-4, 3 seeds, 37 epochs
    python bench/seeds.py --splits 1 --seeds 0 1 --epochs 2         # smoke test
    python bench/seeds.py --jobs 2 --network second --ema 0.99 0.998 --tta
    python bench/seeds.py --jobs 2 --last
"""
from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import build_data  # noqa: E402  (bench/accuracy.py: the splits as `autopilot run` makes them)
from augment import doctor_exclusions  # noqa: E402  (bench/augment.py: the doctor's excluded families)
from record import write_record  # noqa: E402

# mnist5k's finalists trained 32-40 epochs in the quiet --budget 10m runs of 2026-12-02.
DEFAULT_EPOCHS = 37


NETWORKS = ("first", "second")  # search.space.first_params, in order
TTA_ROTATION = 6.0  # degrees: within the affine policy's own +-7.5 at strength 0.5


class WeightAverages:
    """Training callback: exponential moving averages of the weights (and
    buffers), one per decay, with timm's warm-up (the decay grows as
    (1 + step) / (10 + step) until it reaches its own); after each epoch
    every average is scored on validation and test, so that each can be
    taken at its own best validation epoch."""

    def __init__(self, decays, spec: dict, val, test):
        from autopilot.models import build_model

        self.decays, self.val, self.test = list(decays), val, test
        self.shadow = build_model(spec)
        self.states: dict = {d: None for d in self.decays}
        self.epochs: dict = {d: [] for d in self.decays}

    def on_step(self, step, _loss, model, _opt, _lr) -> None:
        state = model.state_dict()
        for d in self.decays:
            if self.states[d] is None:
                self.states[d] = {k: v.detach().clone() for k, v in state.items()}
                continue
            rate = min(d, (1 + step) / (10 + step))
            for k, v in state.items():
                if v.dtype.is_floating_point:
                    self.states[d][k].mul_(rate).add_(v.detach(), alpha=1 - rate)
                else:  # num_batches_tracked
                    self.states[d][k].copy_(v)

    def on_epoch_end(self, _metrics, _model) -> None:
        from autopilot.train import evaluate, predict_logits

        for d in self.decays:
            self.shadow.load_state_dict(self.states[d])
            val_loss, val_acc = evaluate(self.shadow, *self.val)
            errors = int((predict_logits(self.shadow, self.test[0]).argmax(1) != self.test[1]).sum())
            self.epochs[d].append((val_acc, -val_loss, errors))

    def errors(self) -> dict:
        """Test errors of each average at its best validation epoch (ties to the lower loss)."""
        return {str(d): max(self.epochs[d], key=lambda e: e[:2])[2] for d in self.decays}


class LastEpoch:
    """Training callback: test errors of the weights as each epoch ends, so
    that the last epoch's can be scored against the best validation epoch's
    (the weights `train` returns)."""

    def __init__(self, test):
        self.test, self.errors = test, []

    def on_epoch_end(self, _metrics, model) -> None:
        from autopilot.train import predict_logits

        self.errors.append(int((predict_logits(model, self.test[0]).argmax(1) != self.test[1]).sum()))


def tta_errors(model, X, y) -> dict:
    """Test errors of the model's probabilities averaged over views of each image."""
    import math

    import torch
    import torch.nn.functional as F

    from autopilot.train import float_batch

    x = float_batch(X)

    def probs(v):
        with torch.no_grad():
            return torch.softmax(model(v), 1)

    def shifted(dx, dy):  # one pixel, the edge filled with background (0)
        return torch.roll(F.pad(x, (1, 1, 1, 1)), (dy, dx), (2, 3))[..., 1:-1, 1:-1]

    def rotated(degrees):
        a = math.radians(degrees)
        theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]])[None].expand(len(x), 2, 3)
        return F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False)

    plain = probs(x)
    shifts = plain + sum(probs(shifted(dx, dy)) for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)))
    rotations = plain + probs(rotated(TTA_ROTATION)) + probs(rotated(-TTA_ROTATION))
    y = torch.as_tensor(y)
    every = shifts + rotations - plain  # the unmoved view once, as in each of the other two
    return {name: int((p.argmax(1) != y).sum()) for name, p in
            (("shift5", shifts), ("rotate3", rotations), ("all7", every))}


def train_one(case: tuple) -> dict:
    """One (split, training seed): test errors and test probabilities."""
    import torch

    from autopilot.models import build_model, count_params
    from autopilot.search import space
    from autopilot.train import as_inputs, predict_logits, train

    dataset, split_seed, seed, epochs, options = case
    torch.set_num_threads(1)
    data, info = build_data(dataset, split_seed)
    if options["train_share"] < 1.0:
        from autopilot.search.budget import stratified_subset

        Xtr, ytr = data["train"]
        rows = stratified_subset(ytr, int(round(options["train_share"] * len(ytr))), split_seed)
        data = {**data, "train": (Xtr[rows], ytr[rows])}
    exclude, _status = doctor_exclusions(data, info, split_seed)
    params = space.first_params(info)[NETWORKS.index(options["network"])]
    spec, hp = space.to_config({**params, **options["arch"], "epochs": epochs}, info)
    hp = {**hp, "patience": epochs + 1, "aug_exclude": exclude, **options["set"]}  # every run trains its planned epochs
    t0 = time.perf_counter()
    model = build_model(spec)
    X, y = data["test"]
    Xt = as_inputs(X)
    averages = (WeightAverages(options["ema"], spec, (as_inputs(data["val"][0]), torch.as_tensor(data["val"][1])),
                               (Xt, torch.as_tensor(y))) if options["ema"] else None)
    last = LastEpoch((Xt, torch.as_tensor(y))) if options["last"] else None
    res = train(model, data["train"], data["val"], hp, kind=info["kind"], seed=seed, device="cpu",
                callbacks=[c for c in (averages, last) if c] or None)
    model.load_state_dict(res.state_dict)
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(predict_logits(model, Xt), 1).numpy()
    run = {"split": split_seed, "seed": seed, "errors": int((probs.argmax(1) != y).sum()), "n_test": int(len(y)),
           "n_train": int(len(data["train"][1])),
           "val_acc": res.best_val_acc, "best_epoch": res.best_epoch, "aug_exclude": exclude,
           "params": count_params(model)}
    if averages:
        run["ema_errors"] = averages.errors()
    if last:
        run["last_errors"] = {"epoch": last.errors[-1]}
        run["epoch_errors"] = last.errors  # every epoch's, to read where the test errors fall
    if options["tta"]:
        run["tta_errors"] = tta_errors(model, Xt, y)
    return {**run, "seconds": round(time.perf_counter() - t0, 1), "probs": probs, "y": y}


def ensemble_errors(runs: list[dict]) -> dict:
    """Errors of every pair's and of all the runs' averaged probabilities."""
    y = runs[0]["y"]
    pairs = [int(((a["probs"] + b["probs"]).argmax(1) != y).sum()) for a, b in itertools.combinations(runs, 2)]
    return {"pairs": pairs, "all": int((sum(r["probs"] for r in runs).argmax(1) != y).sum()) if len(runs) > 2 else None}


def hyper_parameter(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def variant_totals(runs: list[dict]) -> dict:
    """Each measured variant against the plain weights of the same runs: total
    test errors, and runs where it had fewer / more errors."""
    plain = [r["errors"] for r in runs]
    out = {"plain": {"total": sum(plain)}}
    for field, prefix in (("ema_errors", "ema "), ("tta_errors", "tta "), ("last_errors", "last ")):
        for name in runs[0].get(field, {}):
            errs = [r[field][name] for r in runs]
            out[prefix + name] = {"total": sum(errs), "fewer": sum(e < p for e, p in zip(errs, plain)),
                                  "more": sum(e > p for e, p in zip(errs, plain))}
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist5k", choices=("digits", "mnist1d", "mnist5k", "fashion"))
    p.add_argument("--splits", nargs="+", type=int, default=[1, 2, 3, 4], help="split seeds (default 1 2 3 4)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds (default 0 1 2)")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help=f"epochs of every training (default {DEFAULT_EPOCHS})")
    p.add_argument("--jobs", type=int, default=1, help="trainings side by side, one thread each")
    p.add_argument("--network", default="first", choices=NETWORKS,
                   help="which known-good first network (search.space.first_params; default first)")
    p.add_argument("--ema", nargs="+", type=float, default=[], metavar="DECAY",
                   help="also score moving averages of the weights with these per-step decays")
    p.add_argument("--tta", action="store_true", help="also score test-time shifted and rotated views")
    p.add_argument("--last", action="store_true", help="also score the last epoch's weights")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", type=hyper_parameter,
                   help="training hyper-parameters for every run, VALUE as JSON (e.g. aug_strength=1.0)")
    p.add_argument("--arch", nargs="+", default=[], metavar="KEY=VALUE", type=hyper_parameter,
                   help="the network's search-space parameters for every run (e.g. cnn2d_s2_width=48)")
    p.add_argument("--train-share", type=float, default=1.0, metavar="F",
                   help="train on this stratified share of the split's training rows (default 1.0: all)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                   help="folder for seeds-<UTC time>.json and seeds-latest.json (default: bench/results)")
    args = p.parse_args(argv)
    if not 0.0 < args.train_share <= 1.0:
        p.error(f"--train-share must be in (0, 1], got {args.train_share}")
    if args.tta and args.dataset == "mnist1d":
        p.error("--tta shifts and rotates images; mnist1d is a signal")
    return args


def main(argv=None) -> int:
    import torch

    import autopilot

    args = parse_args(argv)
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    options = {"network": args.network, "ema": args.ema, "tta": args.tta, "last": args.last, "set": dict(args.set),
               "arch": dict(args.arch), "train_share": args.train_share}
    todo = [(args.dataset, s, t, args.epochs, options) for s in args.splits for t in args.seeds]
    runs = []

    def done(run: dict) -> None:  # a line per finished training: a full bench takes tens of minutes
        runs.append(run)
        print(f"[{len(runs)}/{len(todo)}] split {run['split']} seed {run['seed']}: {run['errors']} test errors "
              f"({run['seconds']:.0f} s, load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)

    if args.jobs > 1:
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            for run in pool.imap_unordered(train_one, todo, chunksize=1):
                done(run)
    else:
        for c in todo:
            done(train_one(c))
    runs.sort(key=lambda r: (args.splits.index(r["split"]), args.seeds.index(r["seed"])))
    changed = f", with {options['arch'] | options['set']}" if options["arch"] or options["set"] else ""
    if args.train_share < 1.0:
        changed += f", on {runs[0]['n_train']:,} training rows ({args.train_share:g} of the split's)"
    print(f"{args.dataset}, {args.network} known-good network ({runs[0]['params']:,} parameters){changed}, "
          f"{args.epochs} epochs; test errors per training seed {args.seeds}")
    print(f"{'split':>5} {'n_test':>6}  {'per seed':<16} {'median':>6} {'range':>7}  {'pairs averaged':<16} {'all averaged':>12}")
    splits = []
    for s in args.splits:
        rs = [r for r in runs if r["split"] == s]
        errs = [r["errors"] for r in rs]
        ens = ensemble_errors(rs)
        splits.append({"split": s, "n_test": rs[0]["n_test"], "errors": errs, "median": statistics.median(errs),
                       "range": max(errs) - min(errs), "ensemble": ens,
                       "runs": [{k: v for k, v in r.items() if k not in ("probs", "y")} for r in rs]})
        print(f"{s:>5} {rs[0]['n_test']:>6}  {str(errs):<16} {statistics.median(errs):>6g} {max(errs) - min(errs):>7}"
              f"  {str(ens['pairs']):<16} {'-' if ens['all'] is None else ens['all']:>12}")
    spread = [x["range"] for x in splits]
    singles = [e for x in splits for e in x["errors"]]
    pairs = [e for x in splits for e in x["ensemble"]["pairs"]]
    summary = {"median_range": statistics.median(spread), "mean_single_errors": round(statistics.mean(singles), 2),
               "mean_pair_errors": round(statistics.mean(pairs), 2) if pairs else None}
    print(f"median range over seeds {summary['median_range']:g} errors; mean errors: single "
          f"{summary['mean_single_errors']}, pair averaged {summary['mean_pair_errors']}")
    if args.ema or args.tta or args.last:
        summary["variants"] = variant_totals(runs)
        print(f"test errors over all {len(runs)} runs, against the plain weights of the same runs:")
        for name, v in summary["variants"].items():
            vs = "" if name == "plain" else f"  fewer in {v['fewer']} runs, more in {v['more']}"
            print(f"  {name:<14} {v['total']:>5}{vs}")
    record = {
        "bench": "seeds", "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"},
        "splits": splits, "summary": summary, "elapsed_s": round(time.perf_counter() - t0, 1),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "autopilot": autopilot.__version__, "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
    }
    path = write_record(args.out, "seeds", record)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
