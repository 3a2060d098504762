"""Retraining, the closed loop: new labelled data -> warm-started search ->
challenger compressed as the run was -> paired tests -> a new model version
or not. It sits above serve and monitor (the server starts it as a
process, `python -m autopilot.retrain`, and never imports it) and below the
runner and the CLI.

    from autopilot.retrain import retrain
    decision = retrain("runs/digits-001", data="new.npz", budget="2m")
    decision.promote, decision.new_data.p_value, decision.original_test.p_value

Modules: newdata (where new examples come from, how they are split), rule
(the promotion rule: paired tests at a stated level), loop (the steps),
cli (`autopilot retrain`, `autopilot rollback`).
"""
from .loop import RetrainError, retrain
from .rule import DEFAULT_ALPHA, DEFAULT_TOLERANCE, RULE

__all__ = ["DEFAULT_ALPHA", "DEFAULT_TOLERANCE", "RULE", "RetrainError", "retrain"]
