"""HTML building blocks and the page shell.

Every string that came from a file goes through `e()` (html.escape) exactly once,
at the point it becomes markup. Helpers here take *raw* values and return markup;
helpers whose argument is already markup say so (`body`, `cells`).
"""
from __future__ import annotations

import html
import json
import math

from .load import num


def e(x) -> str:
    return html.escape(str(x), quote=True)


def fmt(x) -> str:
    """A raw value as escaped, human-readable markup."""
    if x is None:
        return '<span class="muted">—</span>'
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if not math.isfinite(x):
            return e(x)
        if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
            return f"{x:.3g}"
        return f"{x:.4g}"
    if isinstance(x, (list, dict)):
        s = json.dumps(x, ensure_ascii=False)
        return f"<code>{e(s if len(s) <= 200 else s[:199] + '…')}</code>"
    return e(x)


def pct(x, digits: int = 1) -> str:
    x = num(x)
    return "—" if x is None else f"{100 * x:.{digits}f}&#8239;%"


def duration(s) -> str:
    s = num(s)
    if s is None:
        return "—"
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {sec:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def table(headers: list[str], rows: list[list[str]], numeric: set[int] = frozenset(),
          row_classes: list[str] | None = None) -> str:
    """headers: raw text; rows: cells already as markup; numeric: right-aligned columns."""
    def cls(j):
        return ' class="n"' if j in numeric else ""

    head = "".join(f"<th{cls(j)}>{e(h)}</th>" for j, h in enumerate(headers))
    body = []
    for i, row in enumerate(rows):
        rc = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{rc}>" + "".join(f"<td{cls(j)}>{c}</td>" for j, c in enumerate(row)) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def kv(pairs: list[tuple[str, str]]) -> str:
    """pairs: (raw label, value markup)."""
    items = "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in pairs)
    return f'<dl class="kv">{items}</dl>'


def note(body: str, kind: str = "info") -> str:
    """body: markup."""
    return f'<div class="note {kind}">{body}</div>'


def plot(svg: str) -> str:
    return f'<figure class="plot">{svg}</figure>'


def bar(x) -> str:
    """A small inline bar for a share in [0, 1]."""
    x = num(x)
    w = 0 if x is None else max(0.0, min(1.0, x)) * 100
    return f'<span class="bar"><span style="width:{w:.1f}%"></span></span>'


def section(sid: str, title: str, body: str) -> str:
    return f'<section id="{e(sid)}"><h2>{e(title)}</h2>{body}</section>'


def page(title: str, header: str, sections: list[str], footer: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{header}{''.join(sections)}<footer>{footer}</footer></main></body></html>\n"
    )


CSS = """
:root{--fg:#111827;--muted:#6b7280;--line:#e5e7eb;--bg:#f6f7f9;--card:#fff;--accent:#2563eb;
--ok:#16a34a;--warn:#d97706;--bad:#dc2626}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
main{max-width:1100px;margin:0 auto;padding:28px 20px}
h1{font-size:28px;margin:0;display:inline-block;margin-right:10px;word-break:break-all}
h2{font-size:18px;margin:0 0 12px;padding-bottom:6px;border-bottom:1px solid var(--line)}
h3{font-size:14px;margin:16px 0 6px}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:18px 22px;margin:18px 0}
.sub{color:var(--muted);margin-top:4px}
.muted{color:var(--muted)}
.badge{display:inline-block;padding:2px 10px;border-radius:999px;font-size:12px;font-weight:600;
background:#e5e7eb;color:#374151;vertical-align:middle}
.badge.done,.badge.COMPLETE{background:#dcfce7;color:#166534}
.badge.running,.badge.RUNNING{background:#dbeafe;color:#1e40af}
.badge.failed,.badge.FAIL{background:#fee2e2;color:#991b1b}
.badge.PRUNED{background:#f3f4f6;color:#4b5563}
.kpis{display:flex;flex-wrap:wrap;gap:12px;margin-top:18px}
.kpi{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 18px;min-width:150px}
.kpi .label{color:var(--muted);font-size:11px;text-transform:uppercase;letter-spacing:.05em}
.kpi .value{font-size:22px;font-weight:600;font-variant-numeric:tabular-nums}
.kpi .detail{color:var(--muted);font-size:12px}
.kpi.hero .value{font-size:42px;line-height:1.15;color:var(--accent)}
.kpi.hero .pm{font-size:20px;font-weight:400;color:var(--muted)}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:13px;margin:8px 0}
th,td{text-align:left;padding:5px 9px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:#f3f4f6;font-weight:600;white-space:nowrap}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.best td{background:#f0fdf4;font-weight:600}
.kv{display:grid;grid-template-columns:max-content 1fr;gap:3px 18px;margin:8px 0}
.kv dt{color:var(--muted)}
.kv dd{margin:0;word-break:break-word}
.plot{margin:10px 0;overflow-x:auto}
.plot svg{max-width:100%;height:auto}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:8px 28px}
pre{background:#f3f4f6;border-radius:6px;padding:10px 12px;overflow:auto;max-height:520px;font-size:12px;margin:6px 0}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
code{font-size:12px}
.note{border-left:4px solid var(--accent);background:#eff6ff;padding:8px 12px;border-radius:4px;margin:8px 0}
.note.warn{border-color:var(--warn);background:#fffbeb}
.note.bad{border-color:var(--bad);background:#fef2f2}
.note ul{margin:4px 0;padding-left:20px}
.warn-text{color:var(--warn);font-weight:600}
.bad-text{color:var(--bad);font-weight:600}
.ok-text{color:var(--ok)}
.bar{display:inline-block;width:120px;height:10px;background:#e5e7eb;border-radius:3px;vertical-align:middle;margin-right:8px}
.bar>span{display:block;height:100%;background:var(--accent);border-radius:3px}
.sev{display:inline-block;padding:1px 8px;border-radius:4px;font-size:12px;font-weight:600;color:#fff;background:#6b7280}
.sev.error{background:var(--bad)}.sev.warning{background:var(--warn)}.sev.info{background:var(--accent)}
details summary{cursor:pointer;color:var(--muted)}
footer{color:var(--muted);font-size:12px;margin:24px 4px}
footer table{font-size:12px}
@media print{body{background:#fff}section{break-inside:avoid;border:none}}
"""
