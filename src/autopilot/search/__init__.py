"""Search: the space, the Optuna study, parallel workers, progress, and the
choice of the trial to ship (`select.best_trial`)."""
from .select import Selection, best_trial, rank_trial
from .study import PRUNERS, SAMPLERS, open_study, recover_interrupted, summarize

__all__ = ["PRUNERS", "SAMPLERS", "Selection", "best_trial", "open_study", "rank_trial", "recover_interrupted",
           "summarize"]
