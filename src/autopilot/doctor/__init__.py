"""The doctor: Karpathy's recipe checks on data, set-up and live training.

    import autopilot
    report = autopilot.doctor(model, (X_train, y_train))   # the module is callable

    from autopilot.doctor import doctor, render
    report = doctor(model, (X_train, y_train), val=(X_val, y_val))
    render(report)                       # a table in the terminal
    report.to_dict()                     # JSON: findings, per-check status and seconds

    from autopilot.doctor import LiveDoctor
    live = LiveDoctor()
    autopilot.train.train(model, tr, va, callbacks=[live]); live.findings

Finding ids and what they mean: see autopilot.doctor.findings.
"""
import sys
import types

from .api import CHECK_NAMES, doctor, doctor_data, doctor_dataset
from .findings import IDS, CheckResult, DoctorReport, Finding
from .fixes import init_final_bias
from .live import LiveDoctor
from .render import render

__all__ = [
    "CHECK_NAMES",
    "IDS",
    "CheckResult",
    "DoctorReport",
    "Finding",
    "LiveDoctor",
    "doctor",
    "doctor_data",
    "doctor_dataset",
    "init_final_bias",
    "render",
]


class _CallableModule(types.ModuleType):
    """`autopilot.doctor(model, train, ...)` reads best; the module stays a
    package too, so `from autopilot.doctor import LiveDoctor` works."""

    def __call__(self, *args, **kwargs) -> DoctorReport:
        return doctor(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
