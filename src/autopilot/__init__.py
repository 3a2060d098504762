"""autopilot: a labelled data set in, a checked, deployable model out.

    import autopilot
    rd = autopilot.run("digits", budget="2m")        # the same as `autopilot run`
    report = autopilot.doctor(model, (X, y))          # recipe checks on any nn.Module
"""
from .version import __version__


def run(data, **kwargs):
    """See autopilot.runner.run; imported lazily so `import autopilot` is cheap."""
    from .runner import run as _run

    return _run(data, **kwargs)


def __getattr__(name):
    if name == "doctor":  # a callable module: autopilot.doctor(model, train, ...)
        import importlib

        return importlib.import_module(".doctor", __name__)
    raise AttributeError(f"module 'autopilot' has no attribute {name!r}")
