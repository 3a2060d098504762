"""What the user sees during the search: a live table, or plain log lines
with --quiet. It only reads the study, so it works the same for trials run in
this process and in worker processes."""
from __future__ import annotations

import threading
import time

from optuna.trial import TrialState
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .select import accuracy
from .study import PROGRESS_STEPS


def _short_params(params: dict) -> str:
    out = []
    fam = params.get("family", "")
    if fam:
        out.append(fam)
    for k, v in params.items():
        if k.endswith("_width"):
            out.append(f"w{v}")
        elif k.endswith("_depth"):
            out.append(f"d{v}")
        elif k.startswith("lr_"):
            out.append(f"{k[3:]} lr={v:.1e}")
    if "epochs" in params:
        out.append(f"{params['epochs']}ep")
    return " ".join(out)


def _value(t):
    if t.state == TrialState.COMPLETE:
        return accuracy(t)
    if t.intermediate_values:
        return t.intermediate_values[max(t.intermediate_values)]
    return None


def _epochs(t) -> str:
    """Epochs trained of those planned, e.g. "12/30". Running trials report
    at steps in per mille of their schedule (see study.PROGRESS_STEPS)."""
    planned = t.user_attrs.get("planned_epochs", t.params.get("epochs"))
    done = t.user_attrs.get("epochs")
    if done is None and t.intermediate_values and planned:
        done = round(max(t.intermediate_values) * planned / PROGRESS_STEPS)
    if done is None:
        return "-"
    return f"{done}/{planned}" if planned else str(done)


def _state(t) -> str:
    """The state, and why a trial that is not complete stopped."""
    name = t.state.name.lower()
    if t.state == TrialState.PRUNED and t.user_attrs.get("stopped") == "deadline":
        return f"{name} (deadline)"
    return name


class Progress:
    def __init__(self, study_loader, deadline_wall: float | None, quiet: bool = False, console: Console | None = None):
        self._load = study_loader  # () -> list[FrozenTrial]
        self.deadline = deadline_wall
        self.quiet = quiet
        self.console = console or Console(stderr=True)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Live | None = None
        self._reported: set[int] = set()

    def __enter__(self):
        if self.quiet or not self.console.is_terminal:
            self._thread = threading.Thread(target=self._log_loop, daemon=True)
            self._thread.start()
        else:
            self._live = Live(get_renderable=self._render, console=self.console, refresh_per_second=2, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._log_once()
        if self._live is not None:
            self._live.__exit__(*exc)

    def _trials(self):
        try:
            return self._load()
        except Exception:  # a half-written journal line: try again next tick
            return []

    def _time_left(self) -> str:
        if self.deadline is None:
            return "-"
        return f"{max(0.0, self.deadline - time.time()):.0f}s"

    def _log_loop(self):
        while not self._stop.wait(1.0):
            self._log_once()

    def _log_once(self):
        trials = self._trials()
        best = max((accuracy(t) for t in trials if t.state == TrialState.COMPLETE), default=None)
        for t in trials:
            if t.state.is_finished() and t.number not in self._reported:
                self._reported.add(t.number)
                v = _value(t)
                err = t.user_attrs.get("error")
                self.console.print(
                    f"trial {t.number:3d} {_state(t):8s} epochs={_epochs(t)} "
                    f"val_acc={'-' if v is None else f'{v:.4f}'} best={'-' if best is None else f'{best:.4f}'} "
                    f"left={self._time_left()} {_short_params(t.params)}" + (f"  error: {err}" if err else ""),
                    highlight=False, soft_wrap=True,
                )

    def _render(self):
        trials = self._trials()
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        best = max(done, key=accuracy, default=None)
        counts = {s: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}
        head = Text.assemble(
            ("search ", "bold"),
            f"trials {len(trials)}  complete {counts[TrialState.COMPLETE]}  pruned {counts[TrialState.PRUNED]}  "
            f"failed {counts[TrialState.FAIL]}  running {counts[TrialState.RUNNING]}  ",
            ("best ", "bold"), (f"{accuracy(best):.4f} (trial {best.number})" if best else "-", "green"),
            f"  time left {self._time_left()}",
        )
        table = Table(box=None, pad_edge=False)
        for col in ("trial", "state", "epochs", "val acc", "parameters"):
            table.add_column(col)
        for t in trials[-12:]:
            v = _value(t)
            style = {"COMPLETE": "green", "PRUNED": "yellow", "FAIL": "red", "RUNNING": "cyan"}.get(t.state.name, "")
            info = _short_params(t.params)
            if t.user_attrs.get("error"):
                info += f"  [red]{t.user_attrs['error'][:60]}[/red]"
            table.add_row(str(t.number), Text(_state(t), style=style), _epochs(t),
                          "-" if v is None else f"{v:.4f}", info)
        return Group(head, table)
