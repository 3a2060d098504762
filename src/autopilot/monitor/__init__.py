"""Monitoring a served model: drift against the training reference, alert
rules, model versions and the retrain loop.

Nothing here imports torch except `retrain`, which trains a challenger: the
server imports `features`, `drift`, `alerts`, `versions` and `window` only.
"""
