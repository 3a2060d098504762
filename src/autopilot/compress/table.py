"""The terminal view of a compression run: every candidate, the Pareto
front marked, the chosen one highlighted, and why it was chosen."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table


def render(results: dict, console: Console | None = None) -> None:
    console = console or Console(stderr=True)
    cands = results["candidates"]
    base = next(c for c in cands if c.get("baseline"))
    b1 = base["latency_ms"]["1"]["p50"]
    t = Table(title=f"compression of {results['run']} (target {results['target']}, 1 thread; "
                    f"* = Pareto front on val acc vs {results['target']}; val drop <=: "
                    f"{results['confidence']:.0%} upper bound in points, limit {results['max_drop']:.2f})",
              title_justify="left")
    for col in ("candidate", "method", "params", "KiB", "val acc", "val drop <=", "test acc", "b1 p50 ms", "b1 p90 ms",
                "b64 p50 ms", "b64 /s", "b1 speed-up", "parity"):
        t.add_column(col, justify="left" if col in ("candidate", "method") else "right")
    key = {"latency": lambda c: c["latency_ms"]["1"]["p50"], "size": lambda c: c["file_bytes"],
           "throughput": lambda c: -c["throughput_per_s"]["64"]}[results["target"]]
    for c in sorted(cands, key=key):
        lat = c["latency_ms"]
        name = ("* " if c.get("pareto") else "  ") + c["name"]
        style = "bold green" if c["name"] == results["chosen"] else ("dim" if not c["parity"]["passed"] else None)
        t.add_row(name, c["method"], f"{c['params']:,}", f"{c['file_bytes'] / 1024:.0f}", f"{c['val_acc']:.4f}",
                  f"{c['drop_upper_points']:.2f}", f"{c['test_acc']:.4f}", f"{lat['1']['p50']:.3f}", f"{lat['1']['p90']:.3f}",
                  f"{lat['64']['p50']:.2f}", f"{c['throughput_per_s']['64']:.0f}",
                  f"{b1 / lat['1']['p50']:.2f}x", f"{c['parity']['argmax_agree']:.4f}", style=style)
    # Off a terminal rich assumes 80 columns and would squeeze 12 columns to
    # nothing; a log file can take a wide table.
    (console if console.is_terminal else Console(file=console.file, width=160, color_system=None)).print(t)
    console.print(f"chose [bold]{results['chosen']}[/bold]: {results['reason']}", highlight=False, soft_wrap=True)
