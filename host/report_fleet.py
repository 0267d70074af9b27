"""`edgeq report` on a fleet run: many boards x a settings matrix on one self-contained page.

`build_fleet_report(doc, out_dir=...)` takes an `edgeq.fleet/1` document (docs/SCHEMA.md;
from `bench-remote` on several boards or settings, or `History.get_fleet`) and writes

    OUT/report.html     one file (CSS inline, figures as data: URIs, no script, no network)
    OUT/report.md       the same tables in Markdown, figures linked from OUT/figures/
    OUT/figures/*.png   the board x setting heat maps (and the per-layer profile figure)

The page has one table row per board and setting, boards side by side within a setting:
latency p50/p90 of float32 and int8, the int8 speed-up (float32 p50 / int8 p50, so > 1 means
int8 is faster), top-1 of both and the int8 - float32 difference; a board table (target,
groups, CPU, runtime, the randomized order its cells ran in, its one-line error); and the heat
maps of int8 p50 and speed-up, board x setting (edgeq.host.plots_fleet). A board that failed
keeps its row, with its error instead of numbers. Given an `edgeq.profile/1` document
(`edgeq profile`), the per-layer profile figure is drawn by edgeq.host.profile.profile_figure.

The numbers are the compare documents' own (edgeq.host.compare made them); this module only
picks, lays out and renders, with edgeq.host.report's page style, figure embedding and section
rendering. Every number of a table cell is machine-readable like the run report's
(`data-metric` = table id + column, `data-model` = "board / setting", `data-value`); the
rows and the heat-map grid are embedded as `<script type="application/json"
id="edgeq-report-data">` (data, never executed).
Imports: standard library, numpy, edgeq.device (errors, fileutil, store), edgeq.host.{matrix
(the settings' labels and order), report, report_sections, report_figures, report_tables};
edgeq.host.plots_fleet (matplotlib) and edgeq.host.profile lazily.
"""
from __future__ import annotations

import html
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from edgeq.device import __version__
from edgeq.device.errors import EdgeqError
from edgeq.device.fileutil import utc_now
from edgeq.device.store import atomic_write_bytes
from edgeq.host.compare import int8_speedup_p50
from edgeq.host.matrix import Cell, Matrix
from edgeq.host.report import CSS, ReportPaths, section_html, section_markdown
from edgeq.host.report_figures import Figure
from edgeq.host.report_sections import Section, Table
from edgeq.host.report_tables import get_path

logger = logging.getLogger(__name__)

FLEET_SCHEMA = "edgeq.fleet/1"
PROFILE_SCHEMA = "edgeq.profile/1"
FLEET_REPORT_SCHEMA = "edgeq.fleet_report/1"

ProgressCallback = Callable[[int, int], None]


class FleetReportError(EdgeqError):
    """A document that is not a fleet run this report can show."""


def is_fleet(doc: Any) -> bool:
    """True for an `edgeq.fleet/...` document."""
    return isinstance(doc, dict) and str(doc.get("schema", "")).startswith("edgeq.fleet/")


def check_fleet(doc: Any) -> None:
    """FleetReportError unless `doc` is an `edgeq.fleet/1` document with a list of boards."""
    if not is_fleet(doc):
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise FleetReportError(f"not a fleet run (schema {got!r}, want {FLEET_SCHEMA})",
                               hint="pass what `edgeq bench-remote` printed for several boards "
                                    "or settings with --json, or use --fleet ID")
    if doc["schema"] != FLEET_SCHEMA:
        raise FleetReportError(f"fleet schema {doc['schema']} is newer than this edgeq knows "
                               f"({FLEET_SCHEMA})", hint="upgrade edgeq")
    if not isinstance(doc.get("boards"), list) or not all(
            isinstance(b, dict) and b.get("board") for b in doc["boards"]):
        raise FleetReportError("the fleet document has no list of named boards",
                               hint="pass the edgeq.fleet/1 document unchanged")


def cell_label(cell: dict[str, Any]) -> str:
    """A setting (a fleet document's cell) as edgeq.host.matrix labels it: "2t xnn"."""
    return Cell(cell.get("threads", 1), bool(cell.get("xnnpack", True)),
                cell.get("runtime")).label


def error_text(error: Any) -> str:
    """A board's or cell's error as one line: "message (hint: ...)"."""
    if not error:
        return ""
    if not isinstance(error, dict):
        return " ".join(str(error).split())
    text = " ".join(str(error.get("message") or error.get("code") or "failed").split())
    hint = " ".join(str(error.get("hint") or "").split())
    return text + (f" (hint: {hint})" if hint else "")


def _pct(value: Optional[float]) -> Optional[float]:
    return None if value is None else float(value) * 100.0


def settings_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The matrix's cells in its order (threads x xnnpack x runtime), then any other cell a
    board ran."""
    m = doc.get("matrix") or {}
    cells = [c.to_dict() for c in Matrix(tuple(m.get("threads") or ()),
                                         tuple(m.get("xnnpack") or ()),
                                         tuple(m.get("runtime") or (None,))).cells]
    seen = {cell_label(c) for c in cells}
    for board in doc.get("boards") or []:
        for run in board.get("runs") or []:
            cell = run.get("cell") or {}
            if cell and cell_label(cell) not in seen:
                seen.add(cell_label(cell))
                cells.append(cell)
    return cells


def _runs_by_label(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {cell_label(r.get("cell") or {}): r for r in board.get("runs") or []}


#: the fleet table's latency columns: (column, model, key of the model entry); units in the
#: names
LATENCY_COLUMNS = (("float32_latency_ms_p50", "float32", "latency_ms_p50"),
                   ("int8_latency_ms_p50", "int8", "latency_ms_p50"),
                   ("float32_latency_ms_p90", "float32", "latency_ms_p90"),
                   ("int8_latency_ms_p90", "int8", "latency_ms_p90"))


def _row(board: dict[str, Any], setting: str, run: Optional[dict[str, Any]]) -> dict[str, Any]:
    comp = (run or {}).get("compare")
    row: dict[str, Any] = {"board": board["board"], "setting": setting,
                           "int8_speedup_p50": int8_speedup_p50(comp)}
    for col, model, key in LATENCY_COLUMNS:
        row[col] = get_path(comp, "models", model, key)
    f32 = _pct(get_path(comp, "models", "float32", "accuracy"))
    i8 = _pct(get_path(comp, "models", "int8", "accuracy"))
    row["float32_top1_pct"], row["int8_top1_pct"] = f32, i8
    row["top1_delta_pp"] = None if f32 is None or i8 is None else i8 - f32
    row["run_id"] = (run or {}).get("run_id")
    row["error"] = ("" if comp is not None else
                    error_text((run or {}).get("error") or board.get("error")) or "no result")
    return row


def fleet_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per setting and board (boards side by side within a setting): latencies,
    speed-up, top-1 (%), the int8 - float32 top-1 difference (points), the run id and the
    error. A board that failed before any setting ran has one row, with its error and no
    numbers; one that failed midway, a row with the error for each setting it did not run."""
    boards = doc.get("boards") or []
    ran = [b for b in boards if b.get("runs")]
    rows = []
    for cell in settings_of(doc):
        label = cell_label(cell)
        for board in ran:
            run = _runs_by_label(board).get(label)
            if run is not None or not board.get("ok", True):
                rows.append(_row(board, label, run))
    rows += [_row(b, "(every setting)", None) for b in boards if not b.get("runs")]
    return rows


def _first_compare(board: dict[str, Any]) -> Optional[dict[str, Any]]:
    return next((r["compare"] for r in board.get("runs") or [] if r.get("compare")), None)


def board_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per board: where it is, what it is, the order its cells ran in, its error."""
    rows = []
    for board in doc.get("boards") or []:
        comp = _first_compare(board) or {}
        dev = comp.get("device") or {}
        runtime = dev.get("runtime") or {}
        ran = sum(1 for r in board.get("runs") or [] if r.get("compare"))
        rows.append({
            "board": board["board"], "target": board.get("target") or "",
            "groups": ", ".join(board.get("groups") or []),
            "ok": "yes" if board.get("ok") else "FAILED",
            "error": error_text(board.get("error")),
            "cpu": " ".join(str(v) for v in (dev.get("machine"), dev.get("cpu_model"),
                                             dev.get("board_model")) if v),
            "cores": dev.get("cpu_count_usable") or dev.get("cpu_count"),
            "runtime": " ".join(str(v) for v in (runtime.get("name"), runtime.get("version"))
                                if v),
            "emulated": ("EMULATED " + str(dev.get("emulator") or "") if dev.get("emulated")
                         else ("no" if dev else "")).strip(),
            "settings_run": ran,
            "order": " -> ".join(cell_label(c) for c in board.get("order") or []),
        })
    return rows


@dataclass(frozen=True)
class Grid:
    """The heat maps' data: rows = boards, columns = settings; NaN = no value."""

    boards: tuple[str, ...]
    settings: tuple[str, ...]
    int8_latency_ms_p50: np.ndarray
    int8_speedup_p50: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        def plain(a: np.ndarray) -> list[list[Optional[float]]]:
            return [[float(v) if np.isfinite(v) else None for v in row] for row in a]

        return {"boards": list(self.boards), "settings": list(self.settings),
                "int8_latency_ms_p50": plain(self.int8_latency_ms_p50),
                "int8_speedup_p50": plain(self.int8_speedup_p50)}


def fleet_grid(doc: dict[str, Any]) -> Grid:
    """int8 p50 and int8 speed-up per board x setting, from the compare documents."""
    boards = [b["board"] for b in doc.get("boards") or []]
    labels = [cell_label(c) for c in settings_of(doc)]
    lat = np.full((len(boards), len(labels)), np.nan)
    spd = np.full_like(lat, np.nan)
    for i, board in enumerate(doc.get("boards") or []):
        runs = _runs_by_label(board)
        for j, label in enumerate(labels):
            comp = (runs.get(label) or {}).get("compare")
            p50 = get_path(comp, "models", "int8", "latency_ms_p50")
            s = int8_speedup_p50(comp)
            lat[i, j] = np.nan if p50 is None else float(p50)
            spd[i, j] = np.nan if s is None else s
    return Grid(tuple(boards), tuple(labels), lat, spd)


def speedup_pivot(grid: Grid, failed: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The boards side by side: one row per setting, one int8 speed-up column per board
    ("failed" where a failed board has no value)."""
    rows = []
    for j, setting in enumerate(grid.settings):
        row: dict[str, Any] = {"setting": setting}
        for i, board in enumerate(grid.boards):
            v = grid.int8_speedup_p50[i, j]
            row[board] = float(v) if np.isfinite(v) else ("failed" if board in failed else None)
        rows.append(row)
    return rows


def heatmap_figure(grid: Grid) -> Optional[Figure]:
    """The board x setting heat maps (None when no board has a result)."""
    from edgeq.host import plots_fleet

    if not grid.boards or not grid.settings or not np.isfinite(grid.int8_speedup_p50).any():
        return None
    return Figure("fleet_heatmap", "int8 latency and speed-up, board x setting",
                  "Left: the int8 model's median batch-1 latency (ms) per board and setting. "
                  "Right: the int8 speed-up, float32 p50 / int8 p50 of the same run (float32 "
                  "and int8 alternated ABBA); blue = int8 faster, red = int8 slower, white = "
                  f"1.0x. Grey '{plots_fleet.MISSING_TEXT}': no result (the board's error is "
                  "in the table).",
                  plots_fleet.fleet_heatmaps(grid.boards, grid.settings,
                                             grid.int8_latency_ms_p50, grid.int8_speedup_p50))


def profile_section(profile: dict[str, Any]) -> Section:
    """The per-layer profile: the figure edgeq.host.profile.profile_figure draws and the
    profile's own check lines (whole model vs the sum of the layers, within its tolerance)."""
    if not isinstance(profile, dict) or profile.get("schema") != PROFILE_SCHEMA:
        got = profile.get("schema") if isinstance(profile, dict) else type(profile).__name__
        raise FleetReportError(f"the profile is not an {PROFILE_SCHEMA} document ({got!r})",
                               hint="pass the JSON that `edgeq profile --json` printed")
    try:
        from edgeq.host.profile import check_lines, profile_figure
    except ImportError:
        raise FleetReportError("this edgeq cannot draw per-layer profiles (no "
                               "edgeq.host.profile)", hint="upgrade edgeq, or leave out "
                                                          "--profile") from None
    with tempfile.TemporaryDirectory(prefix="edgeq-profile-") as tmp:
        png = profile_figure(profile, Path(tmp) / "profile.png").read_bytes()
    where = profile.get("host") or "the board"
    fig = Figure("profile", f"Per-layer latency on {where}",
                 "float32 and int8 time per layer (ms), the int8/float32 ratio above each "
                 "pair, hatched = the layer was not taken by XNNPACK; from `edgeq profile`.",
                 png)
    sec = Section("profile", f"Where the time goes: per-layer profile on {where}",
                  figures=[fig])
    method = profile.get("method")
    if isinstance(method, dict):
        method = "; ".join(f"{k}: {v}" for k, v in method.items() if isinstance(v, str))
    if method:
        sec.paragraphs.append(f"method: {method}")
    sec.paragraphs += list(check_lines(profile))
    return sec


# ------------------------------------------------------------------ layout


def fleet_sections(doc: dict[str, Any], rows: list[dict[str, Any]], grid: Grid,
                   heatmap: Optional[Figure]) -> list[Section]:
    """The page's sections after the title: the boards side by side (heat maps and the
    speed-up per setting), every board and setting, the boards."""
    failed = [b["board"] for b in doc.get("boards") or [] if not b.get("ok", True)]
    side = Section("side-by-side", "Boards side by side", figures=[heatmap] if heatmap else [])
    side.paragraphs.append(
        "int8 speed-up = float32 p50 / int8 p50 of the same run (> 1: int8 is faster); one "
        "column per board, one row per setting.")
    side.tables.append(Table("speedup-table", speedup_pivot(grid, failed)))
    table = Section("fleet", "Every board and setting",
                    tables=[Table("fleet-table", rows, key=("board", "setting"))])
    table.paragraphs.append(
        "Latency: batch-1 milliseconds, pooled over the rounds of the run (float32 and int8 "
        "alternate ABBA). int8_speedup_p50 = float32_latency_ms_p50 / int8_latency_ms_p50. "
        "top1_pct: top-1 (%) on the deployed evaluation set; top1_delta_pp = int8 - float32 "
        "in points. run_id: the run in `edgeq history`. A failed board shows its error "
        "instead of numbers.")
    boards = Section("boards", "Boards", tables=[Table("boards-table", board_rows(doc))])
    boards.paragraphs.append(
        f"{len(doc.get('boards') or [])} boards, {len(failed)} failed"
        + (f" ({', '.join(failed)})" if failed else "") + ". order: the randomized order "
        f"the settings ran in on that board (seed {doc.get('seed', '?')} and the board's "
        "name).")
    return [side, table, boards]


def _title(doc: dict[str, Any]) -> str:
    fid = doc.get("fleet_id")
    n_boards, n_cells = len(doc.get("boards") or []), len(settings_of(doc))
    return (f"edgeq fleet report: {n_boards} board{'s' if n_boards != 1 else ''} x {n_cells} "
            f"setting{'s' if n_cells != 1 else ''}" + (f" (fleet {fid})" if fid is not None
                                                       else ""))


def _summary_line(doc: dict[str, Any], generated: str) -> str:
    return (f"measured {doc.get('created_utc', '?')} from {doc.get('artifacts', '?')}, "
            f"seed {doc.get('seed', '?')}, {doc.get('elapsed_s', '?')} s, "
            f"{'every board succeeded' if doc.get('ok') else 'NOT every board succeeded'}; "
            f"report generated {generated} by edgeq {__version__}")


def _emulated(doc: dict[str, Any]) -> list[str]:
    return [b["board"] for b in doc.get("boards") or []
            if get_path(_first_compare(b), "device", "emulated")]


def reproduce_text(doc: dict[str, Any]) -> str:
    m = doc.get("matrix") or {}
    xnn = ",".join("on" if x else "off" for x in m.get("xnnpack") or [True])
    runtimes = [r for r in m.get("runtime") or [] if r]
    line = (f"# measured with: edgeq bench-remote {doc.get('artifacts') or 'ART'} "
            "--inventory FILE (or --host ... repeated) --threads "
            f"{','.join(str(t) for t in m.get('threads') or [1])} --xnnpack {xnn}"
            + (f" --runtime {','.join(runtimes)}" if runtimes else "")
            + f" --seed {doc.get('seed', 'S')}")
    fid = doc.get("fleet_id")
    return line + "\n" + (f"edgeq report --fleet {fid} --out DIR" if fid is not None
                          else "edgeq report --result FLEET.json --out DIR")


def render_html(doc: dict[str, Any], sections: Sequence[Section], generated: str,
                embedded: dict[str, Any]) -> str:
    e = html.escape
    out = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{e(_title(doc))}</title><style>{CSS}"
           "#fleet-table td,#speedup-table td{white-space:nowrap;overflow-wrap:normal}"
           "#boards-table td{overflow-wrap:normal}</style>"
           "</head><body>", f"<h1>{e(_title(doc))}</h1>",
           f'<p class="note">{e(_summary_line(doc, generated))}</p>']
    emu = _emulated(doc)
    if emu:
        out.append(f'<div class="emulated" id="emulated">EMULATED: {e(", ".join(emu))} ran on '
                   "an emulator, not real boards. Their latencies and speed-ups are NOT the "
                   "hardware's; sizes and accuracy are.</div>")
    for sec in sections:
        out.extend(section_html(sec))
    out.append('<h2 id="reproduce">Reproduce</h2><pre>' + e(reproduce_text(doc)) + "</pre>")
    data = json.dumps(embedded, sort_keys=True).replace("</", "<\\/")
    out.append(f'<script type="application/json" id="edgeq-report-data">{data}</script>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def render_markdown(doc: dict[str, Any], sections: Sequence[Section], generated: str) -> str:
    out = [f"# {_title(doc)}", "", _summary_line(doc, generated) + ".", ""]
    emu = _emulated(doc)
    if emu:
        out += [f"> **EMULATED: {', '.join(emu)} ran on an emulator; their latencies are NOT "
                "the hardware's.**", ""]
    for sec in sections:
        out += section_markdown(sec)
    out += ["## Reproduce", "", "```", reproduce_text(doc), "```", ""]
    return "\n".join(out)


# ------------------------------------------------------------------ the entry point


def build_fleet_report(doc: dict[str, Any], *, out_dir: Path,
                       profile: Optional[dict[str, Any]] = None,
                       progress: Optional[ProgressCallback] = None) -> ReportPaths:
    """Write OUT/report.html (self-contained), OUT/report.md and OUT/figures/*.png for the
    fleet run `doc`; with `profile` (an edgeq.profile/1 document) also its per-layer figure."""
    check_fleet(doc)
    out_dir = Path(out_dir)
    prof = profile_section(profile) if profile is not None else None  # fail before work
    rows = fleet_rows(doc)
    grid = fleet_grid(doc)
    if progress:
        progress(1, 3)
    heat = heatmap_figure(grid)
    sections = fleet_sections(doc, rows, grid, heat) + ([prof] if prof else [])
    if progress:
        progress(2, 3)
    written = []
    for fig in (f for sec in sections for f in sec.figures):
        path = out_dir / "figures" / f"{fig.name}.png"
        atomic_write_bytes(path, fig.png, mode=None)  # a report is meant to be shared
        written.append(path)
    generated = utc_now()
    embedded = {"schema": FLEET_REPORT_SCHEMA, "fleet_id": doc.get("fleet_id"),
                "created_utc": doc.get("created_utc"), "generated_utc": generated,
                "rows": rows, "boards": board_rows(doc), "grid": grid.to_dict()}
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    atomic_write_bytes(html_path, render_html(doc, sections, generated, embedded).encode(),
                       mode=None)
    atomic_write_bytes(md_path, render_markdown(doc, sections, generated).encode(), mode=None)
    if progress:
        progress(3, 3)
    logger.info("fleet report written to %s", html_path)
    return ReportPaths(out_dir=out_dir, html=html_path, markdown=md_path, figures=tuple(written))
