"""The search as Optuna stored it: parameter importances and the data of the
parallel-coordinate view.

The study (not search.json) is read here because importances need the
parameters' distributions (log scale, choices), which only the study holds.
Only Optuna's public API is used: `load_study` and
`optuna.importance.get_param_importances`.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

MAX_AXES = 8  # parameters on the parallel-coordinate view; more is unreadable
IMPORTANCE_SEED = 0  # fANOVA fits a random forest: seeded, so the same run gives the same report


@dataclass
class Axis:
    """One parameter of the parallel-coordinate view."""
    name: str
    kind: str  # "log", "linear" or "categorical"
    low: float = 0.0
    high: float = 1.0
    choices: list = field(default_factory=list)

    def position(self, value) -> float:
        """value -> [0, 1] on this axis; NaN when the trial has no such parameter."""
        if value is None:
            return math.nan
        if self.kind == "categorical":
            i = next((k for k, c in enumerate(self.choices) if c == value), None)
            return math.nan if i is None else (i / (len(self.choices) - 1) if len(self.choices) > 1 else 0.5)
        v = float(value)
        lo, hi = self.low, self.high
        if self.kind == "log":
            v, lo, hi = math.log10(v), math.log10(lo), math.log10(hi)
        return 0.5 if hi == lo else (v - lo) / (hi - lo)


@dataclass
class StudyView:
    completed: int = 0
    importances: dict[str, float] = field(default_factory=dict)  # name -> share, largest first
    importance_note: str | None = None  # why there are none
    axes: list[Axis] = field(default_factory=list)
    lines: list[tuple[int, float, list[float]]] = field(default_factory=list)  # (number, value, positions)


def load_study(run_dir: Path, storage_url: str | None):
    """The run's Optuna study, or (None, why). Never creates a file."""
    import optuna

    if storage_url:
        storage = storage_url
    else:
        journal = run_dir / "study" / "journal.log"
        if not journal.is_file():
            return None, "study/journal.log is missing"
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        path = str(journal)
        storage = JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    names = optuna.get_all_study_names(storage)
    if len(names) != 1:  # a run directory holds exactly one study
        return None, f"the study storage holds {len(names)} studies, expected 1"
    return optuna.load_study(study_name=names[0], storage=storage), None


def study_view(study) -> StudyView:
    """Importances over completed trials (pruned and failed ones are not results),
    and each completed trial as a line across the most important parameters."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances
    from optuna.trial import TrialState

    from ..search.select import accuracy

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if accuracy(t) is not None and math.isfinite(accuracy(t))]
    view = StudyView(completed=len(done))
    if len(done) < 2:
        view.importance_note = f"{len(done)} completed trial(s): importances need at least 2."
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                imp = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=IMPORTANCE_SEED),
                                            target=accuracy)  # also for an accuracy-latency (pareto) study
            view.importances = {k: float(v) for k, v in imp.items()}
            if not view.importances:
                view.importance_note = "no parameter was sampled in every completed trial."
        except (ValueError, RuntimeError) as exc:  # e.g. every trial has the same parameters
            view.importance_note = f"Optuna could not compute importances: {exc}"

    # Axes: the most important parameters first; without importances, the
    # parameters most trials share.
    names = list(view.importances)
    if not names:
        counts: dict[str, int] = {}
        for t in done:
            for k in t.params:
                counts[k] = counts.get(k, 0) + 1
        names = sorted(counts, key=lambda k: -counts[k])
    for name in names:
        dists = [t.distributions[name] for t in done if name in t.distributions]
        values = [t.params[name] for t in done if name in t.params]
        if not dists or len({repr(v) for v in values}) < 2:
            continue  # a parameter every trial shares says nothing on this view
        d = dists[0]
        if isinstance(d, optuna.distributions.CategoricalDistribution):
            view.axes.append(Axis(name, "categorical", choices=list(d.choices)))
        else:
            view.axes.append(Axis(name, "log" if getattr(d, "log", False) else "linear",
                                  float(min(x.low for x in dists)), float(max(x.high for x in dists))))
        if len(view.axes) == MAX_AXES:
            break
    view.lines = [(t.number, float(accuracy(t)), [a.position(t.params.get(a.name)) for a in view.axes]) for t in done]
    return view
