"""Model fusion: ensembles chosen from the models a search already trained.

    select.greedy_ensemble   Caruana et al. (2004) ensemble selection on validation predictions
    ensemble.Ensemble        the chosen members as one nn.Module (exported as one ONNX graph)
"""
