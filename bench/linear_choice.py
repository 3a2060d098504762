"""Can choosing a table's linear model beat scikit-learn's default one?

Why: on breast_cancer `bench/tables.py` asks autopilot to be better than
`LogisticRegression(C=1)`, and autopilot's search ships a linear model there
on every seed. This measures, on the same seeded splits as `autopilot run`
(autopilot.data.split.split, train+validation to fit, test to score), what
the choices a search could make would have scored against that default:

  default   LogisticRegression(C=1) after standard scaling (the baseline)
  cv5       C from C_GRID by 5-fold stratified cross-validation
  cv5x3     the same, 5 folds repeated 3 times (less noise in the choice)
  svc       an RBF SVC, its C from SVC_GRID by 5-fold cross-validation

Per choice: the test accuracy per split seed, its mean and median, and its
wins, ties and losses against the default on the same test rows. Fitted on
one thread; the scores are what is compared. JSON: bench/results/
linear_choice-<UTC time>.json and linear_choice-latest.json.

    .venv/bin/python bench/linear_choice.py                    # breast_cancer, split seeds 0-14: ~20 s
    .venv/bin/python bench/linear_choice.py --table wine --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

from record import write_record
from tables import BUNDLED, LABEL, baseline_features, table

C_GRID = [0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30]
SVC_GRID = [0.3, 1, 3, 10]


def logistic(C: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000))


def svc(C: float):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return make_pipeline(StandardScaler(), SVC(C=C))


def chosen_by_cv(make, grid, X, y, folds) -> float:
    """The grid value with the best mean cross-validated accuracy (the first on a tie)."""
    from sklearn.model_selection import cross_val_score

    return grid[int(np.argmax([cross_val_score(make(c), X, y, cv=folds).mean() for c in grid]))]


def one_split(X, y, seed: int) -> dict[str, float]:
    from sklearn.model_selection import RepeatedStratifiedKFold, StratifiedKFold

    from autopilot.data.split import split

    s = split(y, seed=seed)
    fit, te = np.concatenate([s["train"], s["val"]]), s["test"]
    Xf, yf = X[fit], y[fit]

    def test_acc(model) -> float:
        return float(100 * model.fit(Xf, yf).score(X[te], y[te]))

    five = StratifiedKFold(5, shuffle=True, random_state=seed)
    repeated = RepeatedStratifiedKFold(n_splits=5, n_repeats=3, random_state=seed)
    return {"default": test_acc(logistic(1.0)),
            "cv5": test_acc(logistic(chosen_by_cv(logistic, C_GRID, Xf, yf, five))),
            "cv5x3": test_acc(logistic(chosen_by_cv(logistic, C_GRID, Xf, yf, repeated))),
            "svc": test_acc(svc(chosen_by_cv(svc, SVC_GRID, Xf, yf, five)))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    numeric = [name for name, task in BUNDLED.items() if task == "classification"]
    ap.add_argument("--table", default="breast_cancer", choices=numeric)
    ap.add_argument("--seeds", nargs="+", type=int, default=list(range(15)))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)

    from threadpoolctl import threadpool_limits

    from autopilot.data.split import split

    df, roles = table(args.table)
    X = baseline_features(df, roles).to_numpy(float)
    y = df[LABEL].to_numpy()
    per_seed = {}
    with threadpool_limits(limits=1):
        for seed in args.seeds:
            per_seed[seed] = one_split(X, y, seed)
            print(f"seed {seed}: " + ", ".join(f"{k} {v:.2f}" for k, v in per_seed[seed].items()), file=sys.stderr)

    base = [per_seed[s]["default"] for s in args.seeds]
    summary = {}
    for choice in per_seed[args.seeds[0]]:
        accs = [per_seed[s][choice] for s in args.seeds]
        diffs = [a - b for a, b in zip(accs, base)]
        summary[choice] = {"mean": statistics.mean(accs), "median": statistics.median(accs),
                           "mean_minus_default": statistics.mean(diffs),
                           "wins": sum(d > 0 for d in diffs), "ties": sum(d == 0 for d in diffs),
                           "losses": sum(d < 0 for d in diffs)}
    print(f"\n{args.table}, split seeds {args.seeds[0]}-{args.seeds[-1]}: test accuracy %, against LogisticRegression(C=1)")
    print(f"{'choice':<9}{'mean':>8}{'median':>8}{'vs default':>12}  wins/ties/losses")
    for choice, row in summary.items():
        print(f"{choice:<9}{row['mean']:>8.2f}{row['median']:>8.2f}{row['mean_minus_default']:>+12.2f}"
              f"  {row['wins']}/{row['ties']}/{row['losses']}")
    path = write_record(args.out, "linear_choice", {
        "benchmark": "linear_choice", "table": args.table, "seeds": args.seeds, "c_grid": C_GRID,
        "svc_grid": SVC_GRID, "test_rows": int(len(split(y, seed=args.seeds[0])["test"])), "summary": summary,
        "per_seed": {str(s): v for s, v in per_seed.items()}})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
