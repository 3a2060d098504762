"""Search: the space, the Optuna study, parallel workers, progress."""
from .study import PRUNERS, SAMPLERS, open_study, recover_interrupted, summarize

__all__ = ["PRUNERS", "SAMPLERS", "open_study", "recover_interrupted", "summarize"]
