"""Siblings from scratch against siblings that continue the search's
weights, on run folders that `autopilot run` has already finished.

The fusion stage's siblings (autopilot.fusion.siblings) repeat the shipped
model's retraining with other seeds. When that retraining continued the
search's weights (the card's cv.retrain_warm_start), so do the siblings:
they share the shipped model's start, and could be too alike to gain as an
ensemble. This bench trains, for each run folder with a sibling
(fusion/sibling1), two more siblings of the same configuration on the same
rows (train+validation outside the gate slice) from scratch:

  scratch-same   the retraining's own epochs: the same cost as the
                 stage's sibling
  scratch-whole  the search's epochs and the retraining's together: what
                 a shipped model that continued the search's weights was
                 trained in all (twice the cost or more)

and scores on the test split (test errors): each model alone (`sibling`
is the stage's own, fusion/sibling1), and the shipped model's
probabilities averaged with each sibling's, equal weights. When the
retraining started from scratch (cv.retrain_warm_start false), the
stage's sibling did too, and only the schedules differ.
The test split decides nothing here; it is the only split the run did not
train on.

    .venv/bin/python bench/fusion.py --datasets mnist5k --budget 7m --keep   # run folders to read
    .venv/bin/python bench/siblings.py /tmp/fusion-bench-*/mnist5k-*

Prints one line per run and the sums; writes bench/results/siblings-<UTC
time>.json and siblings-latest.json with the load average at start and end.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from record import write_record

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SCRATCH_SEED_STEP = 7000  # the bench's siblings: seeds no sibling of the stage (2000 k) or fold (1000 f) uses
COLUMNS = ("shipped", "sibling", "scratch-same", "scratch-whole")  # sibling: the stage's own (fusion/sibling1)


def one_folder(path: Path, threads: int) -> dict:
    import torch
    from scipy.special import softmax

    from autopilot.compress.measure import torch_logits
    from autopilot.data.gate import with_gate
    from autopilot.models import load_model
    from autopilot.rundata import load_run_data
    from autopilot.rundir import RunDir
    from autopilot.schemas.card import read_card
    from autopilot.train import DEFAULTS, train_configuration

    torch.set_num_threads(threads)
    rd = RunDir(path)
    card = read_card(rd.path)
    if not (card.cv and card.cv.retrained and (rd.path / "fusion" / "sibling1").exists()):
        return {"run": path.name, "skipped": "no retrained model with a sibling"}
    _, _, data, _ = load_run_data(rd)
    data = with_gate(rd.data_dir, data)
    Xte, yte = data["test"]

    def probs(model) -> np.ndarray:  # as the fusion stage scores its members: torch_logits, then softmax
        return softmax(torch_logits(model, Xte), axis=1)

    shipped, spec = load_model(rd.model_dir)
    p = {"shipped": probs(shipped), "sibling": probs(load_model(rd.path / "fusion" / "sibling1")[0])}
    hp = {**DEFAULTS, **card.hyperparameters.training}
    retrain_epochs = int(hp["epochs"])
    search_epochs = sum(1 for line in (rd.trial_dir(card.best_trial) / "metrics.jsonl").open() if line.strip())
    seconds = {}
    for k, (name, epochs) in enumerate((("scratch-same", retrain_epochs),
                                         ("scratch-whole", search_epochs + retrain_epochs)), start=1):
        t0 = time.monotonic()
        # patience past the schedule: a sibling trains its whole schedule, as the stage's do
        model = train_configuration(spec, {**hp, "epochs": epochs, "patience": epochs + 1}, None, *data["train"],
                                    kind=card.kind, seed=card.seed + card.best_trial + SCRATCH_SEED_STEP * k,
                                    device="cpu", deadline=None)
        seconds[name] = round(time.monotonic() - t0, 1)
        if model is None:
            return {"run": path.name, "skipped": f"{name}: the training stopped before its {epochs} epochs"}
        p[name] = probs(model)

    def errors(q) -> int:
        return int((q.argmax(1) != yte).sum())

    return {"run": path.name, "test_examples": int(len(yte)), "epochs": {"search": search_epochs,
            "retraining": retrain_epochs}, "seconds": seconds,
            "alone": {c: errors(p[c]) for c in COLUMNS},
            "with_shipped": {c: errors(p["shipped"] + p[c]) for c in COLUMNS[1:]}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="finished run folders (with fusion/sibling1)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2, as the stage's siblings)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args(argv)
    load_start = os.getloadavg()
    rows = []
    for path in args.runs:
        row = one_folder(path, args.threads)
        rows.append(row)
        print(json.dumps(row), flush=True)
    done = [r for r in rows if "alone" in r]
    sums = {"alone": {c: sum(r["alone"][c] for r in done) for c in COLUMNS},
            "with_shipped": {c: sum(r["with_shipped"][c] for r in done) for c in COLUMNS[1:]}}
    print(f"{len(done)} runs, test errors summed: alone " + ", ".join(f"{c} {v}" for c, v in sums["alone"].items())
          + "; averaged with the shipped model " + ", ".join(f"{c} {v}" for c, v in sums["with_shipped"].items()))
    doc = {"benchmark": "siblings", "runs": rows, "sums": sums, "machine": {"platform": platform.platform(),
           "cpus": os.cpu_count()}, "load_average": {"start": load_start, "end": os.getloadavg()}}
    path = write_record(args.out, "siblings", doc)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
