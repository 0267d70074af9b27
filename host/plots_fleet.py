"""The fleet report's figure: board x setting heat maps, drawn with matplotlib as PNG bytes.

`fleet_heatmaps(boards, settings, int8_p50_ms, speedup)` draws two panels side by side: the
int8 median latency (sequential colours, ms) and the int8 speed-up, float32 p50 / int8 p50
(a diverging map on a log scale centred on 1.0x: blue = int8 faster, red = int8 slower,
symmetric in the ratio so 0.5x and 2x are equally strong). Every cell is annotated with its
value; a cell with no value (the board failed, or never ran that setting) is grey and says so.
Built on edgeq.host.plots' Agg figure and PNG writer (no pyplot, no timestamps).
Imports: standard library, numpy, edgeq.host.plots; matplotlib lazily.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
from edgeq.host.plots import new_figure, to_png

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

#: colour of a cell without a value, and the word written in it
MISSING_COLOR = "#d9d9d9"
MISSING_TEXT = "failed"


def speedup_limits(values: np.ndarray) -> tuple[float, float]:
    """(vmin, vmax) of the speed-up colours: symmetric around 1.0 in the ratio (1/r, r), so on
    a log scale 1.0x is the centre (white); at least 0.9x..1.11x so a flat fleet is not
    painted at full strength."""
    finite = values[np.isfinite(values) & (values > 0)]
    spread = max([0.1053] + [abs(math.log(float(v))) for v in finite]) * (1 + 1e-9)
    return math.exp(-spread), math.exp(spread)  # widened a hair: exp(log(v)) may miss v


def _panel(ax: "Axes", values: np.ndarray, boards: Sequence[str], settings: Sequence[str], *,
           cmap: str, norm: object, fmt: str, title: str, label: str) -> None:
    from matplotlib import colormaps
    from matplotlib.ticker import FuncFormatter

    cm = colormaps[cmap].with_extremes(bad=MISSING_COLOR)
    masked = np.ma.masked_invalid(values)
    im = ax.imshow(masked, cmap=cm, norm=norm, aspect="auto")
    ax.set_xticks(range(len(settings)), labels=list(settings), rotation=30, ha="right",
                  fontsize=8)
    ax.set_yticks(range(len(boards)), labels=list(boards), fontsize=8)
    ax.set_title(title, fontsize=10)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            if not np.isfinite(v):
                ax.text(j, i, MISSING_TEXT, ha="center", va="center", fontsize=8, color="#555")
                continue
            r, g, b, _ = cm(norm(v))
            dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
    bar = ax.figure.colorbar(im, ax=ax, label=label, shrink=0.9)
    plain = FuncFormatter(lambda v, _pos: f"{v:g}")
    bar.ax.yaxis.set_major_formatter(plain)
    bar.ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))


def fleet_heatmaps(boards: Sequence[str], settings: Sequence[str],
                   int8_p50_ms: np.ndarray, speedup: np.ndarray,
                   title: Optional[str] = None) -> bytes:
    """PNG of the two board x setting panels (rows = boards, columns = settings); NaN = no
    value."""
    from matplotlib.colors import LogNorm, Normalize

    lat = np.asarray(int8_p50_ms, dtype=float)
    spd = np.asarray(speedup, dtype=float)
    width = min(16.0, 3.0 + 2.0 * max(1.2 * len(settings), 2.0))
    fig = new_figure(width, 1.8 + 0.45 * max(len(boards), 2))
    ax_lat, ax_spd = fig.subplots(1, 2)
    finite = lat[np.isfinite(lat)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    hi = hi if hi > lo else lo * 1.01 + 1e-9
    lat_norm = LogNorm(lo, hi) if lo > 0 and hi / lo > 10 else Normalize(lo, hi)
    _panel(ax_lat, lat, boards, settings, cmap="viridis_r", norm=lat_norm, fmt="{:.3g}",
           title="int8 latency p50 (ms)", label="ms (darker = slower)")
    vmin, vmax = speedup_limits(spd)
    _panel(ax_spd, spd, boards, settings, cmap="RdBu", norm=LogNorm(vmin, vmax), fmt="{:.2f}x",
           title="int8 speed-up (float32 p50 / int8 p50)",
           label="x (blue: int8 faster, red: slower)")
    if title:
        fig.suptitle(title, fontsize=11)
    return to_png(fig)
