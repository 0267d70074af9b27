"""The report's table cells and plain tables: numbers shown with their machine-readable value.

A `Cell` holds `Part`s; a numeric Part carries `data-metric`, `data-model` and `data-value`
(the exact value in the document's unit) into the HTML. `dict_table` / `md_dict_table` render
rows of plain values (every float cell machine-readable). Used by edgeq.host.report.
Imports: standard library, numpy.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np


def fmt_num(value: Optional[float], sig: int = 4) -> str:
    """A number with `sig` significant digits, never in exponent notation ("n/a" for None)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    v = float(value)
    if v == 0:
        return "0"
    decimals = max(0, min(12, sig - 1 - int(math.floor(math.log10(abs(v))))))
    return f"{v:.{decimals}f}"


def get_path(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


@dataclass(frozen=True)
class Part:
    """One machine-readable number (or a plain text) inside a table cell."""

    text: str
    metric: Optional[str] = None
    model: Optional[str] = None
    value: Optional[float] = None


@dataclass
class Cell:
    parts: list[Part] = field(default_factory=list)
    sep: str = " "

    def markdown(self) -> str:
        return self.sep.join(p.text for p in self.parts).replace("|", "\\|")

    def html(self, tag: str = "td", attrs: str = "") -> str:
        if len(self.parts) == 1:
            p = self.parts[0]
            return f"<{tag}{_data_attrs(p)}{attrs}>{html.escape(p.text)}</{tag}>"
        inner = html.escape(self.sep).join(
            f"<span{_data_attrs(p)}>{html.escape(p.text)}</span>" if p.metric
            else html.escape(p.text) for p in self.parts)
        return f"<{tag}{attrs}>{inner}</{tag}>"


def _data_attrs(p: Part) -> str:
    if p.metric is None:
        return ""
    value = "" if p.value is None else repr(float(p.value))
    return (f' data-metric="{html.escape(p.metric)}" data-model="{html.escape(p.model or "")}"'
            f' data-value="{value}"')


def num_cell(metric: str, model: str, value: Optional[float], scale: float = 1.0,
              suffix: str = "") -> Cell:
    shown = None if value is None else (value if scale == 1.0 else float(value) / scale)
    return Cell([Part(fmt_num(shown) + (suffix if shown is not None else ""), metric, model,
                      None if value is None else float(value))])


def text_cell(text: str) -> Cell:
    return Cell([Part(text)])



def dict_table(table_id: str, rows: Sequence[dict[str, Any]],
               key: Sequence[str] = ()) -> str:
    """Rows as an HTML table; a number's data-model is the row's `key` columns joined by
    " / " (default: the first column), its data-metric `table_id.column`."""
    e = html.escape
    cols = list(rows[0])
    key = list(key) or cols[:1]
    out = [f'<div class="scroll"><table id="{e(table_id)}"><thead><tr>'
           + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr></thead><tbody>"]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            if isinstance(v, (float, int, np.integer)) and not isinstance(v, bool):
                model = " / ".join(str(r.get(k)) for k in key)
                cells.append(f'<td class="num" data-metric="{e(table_id)}.{e(c)}" '
                             f'data-model="{e(model)}" data-value="{float(v)!r}">'
                             f"{e(fmt_num(v))}</td>")
            else:
                cells.append(f"<td>{e('' if v is None else str(v))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def md_dict_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        out.append("| " + " | ".join(
            fmt_num(v) if isinstance(v, float)
            else ("" if v is None else str(v).replace("|", "\\|"))
            for v in (r.get(c) for c in cols)) + " |")
    return out
