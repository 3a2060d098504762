"""Model fusion: ensembles chosen from the models a search already trained.

    members.pool             the trials' stored validation logits (trials/<n>/val_logits.npy)
    select.greedy_ensemble   Caruana et al. (2004) ensemble selection on validation predictions
    ensemble.Ensemble        the chosen members as one nn.Module (exported as one ONNX graph)
    student.distil_student   the single model's architecture, warm-started, taught by the ensemble
    stage.fuse_run           the stage of `autopilot run`: build, measure, choose what ships (--ship)
"""
