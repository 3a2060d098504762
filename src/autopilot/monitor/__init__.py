"""Monitoring a served model: drift against the training reference and alert
rules. Nothing here imports torch: the server imports this package. Model
versions live in autopilot.registry and the retrain loop in autopilot.retrain
(started as a process when an alert says `on_fire: retrain`).
"""
