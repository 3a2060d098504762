"""Cross-validated finalists: the search ranks trials on one validation
split, which is noisy on small data; the best few trials are re-scored by
k-fold cross-validation on train+validation, the winner is the best mean
(ties to the model with fewer parameters), and its configuration is trained
again on train+validation. The test split is not touched here.

The time comes from inside the run's budget (config.finalists_reserve plus
whatever the search left unused). The stage plans before it trains: from
each finalist's measured seconds per epoch it decides how many finalists,
how long each fold's schedule and whether the retraining fit; what it had to
leave out is said on the console and in the card (`cv.notes`).

Fold scores are the held-out fold's accuracy at the end of the fold's
schedule, with early stopping off: choosing each fold's best epoch on the
fold it is scored on would flatter every finalist.

A gate slice of the validation split (data/gate.py, config.gate_frac) is
kept out of the folds and the retraining, so the compression and fusion
stages judge on data the shipped model never trained on. Each fold's model
(the weights at the end of its schedule) and the out-of-fold logits of every
finalist are kept in finalists/<trial>/ (safetensors, .npy): a bag of K
models whose out-of-fold predictions are honest validation predictions for
ensemble selection (fusion/).

Modules: plan (which finalists, how long their folds, whether and how the
winner is retrained, who wins: decisions over measured costs and scores),
stage (the stage itself: the folds, the retraining, the card's record).
"""
from .plan import reserve_too_small
from .stage import Outcome, run_finalists

__all__ = ["Outcome", "reserve_too_small", "run_finalists"]
