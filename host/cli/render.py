"""How the commands' results look to a person: rich tables and summary lines, and the event
handlers that turn the library's progress events into lines above the progress bar.

Every function takes a result the library returned (a dict of the documented schemas) and
prints it; none computes anything the library should. Text from outside (file, model, tensor
and host names, device messages) goes through `ui.escape` before rich sees it.
Imports: rich and edgeq.host.cli.ui at import time; edgeq.host.compare inside functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from edgeq.host.artifacts import KERAS_FILE, TRAIN_JSON
from edgeq.host.cli.ui import BoardsView, Task, console, err_console, escape
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

EventHandler = Callable[[str, dict], None]


def signed_points(x: float) -> str:
    """A difference in percentage points, signed ("+0.12 points"); zero never shows as -0.00."""
    return f"{x + 0.0:+.2f} points" if round(x, 2) != 0 else "+0.00 points"


def pct(x: float) -> str:
    return f"{100.0 * x:.2f} %"


def human_bytes(n: float) -> str:
    """1024-based sizes: B, KB, MB, GB (as deploy has always shown them)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def short(name: str, width: int = 48) -> str:
    """A tensor name cut to `width` (its first ';' part, the end kept), escaped."""
    name = name.split(";")[0]
    return escape(name if len(name) <= width else "…" + name[-(width - 1):])


def _table(title: Optional[str], columns: Iterable[tuple[str, str]], **kwargs: Any) -> Table:
    """A table with (name, justify) columns; `title` is markup (escape what is outside)."""
    table = Table(title=title, **kwargs)
    for name, justify in columns:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    return table


def say(text: str, out: Console = console) -> None:
    """A plain line (no markup, no highlighting)."""
    out.print(text, markup=False, highlight=False, soft_wrap=True)


# ------------------------------------------------------------------ models, train, quantize


def models(rows: list[dict[str, Any]]) -> None:
    table = _table("edgeq model zoo", (("name", "left"), ("default epochs", "right"),
                                       ("description", "left")))
    for row in rows:
        table.add_row(f"[bold]{escape(row['name'])}", str(row["default_epochs"]),
                      escape(row["description"]))
    console.print(table)


def trained(record: dict[str, Any], out: Path) -> None:
    console.print(
        f"trained [bold]{escape(record['model_name'])}[/] ({record['epochs']} epochs, seed "
        f"{record['seed']}, {record['train_count']} images) in {record['train_time_s']:.1f} s: "
        f"float32 top-1 [bold]{pct(record['float32_test_top1'])}[/] on {record['test_count']} "
        "test images")
    say(f"wrote {out / KERAS_FILE} and {out / TRAIN_JSON}")
    console.print(f"next: edgeq quantize {escape(out)}", style="dim")


def _qparams(io: dict[str, Any]) -> str:
    return f"{io['dtype']} s={io['scale']:g} zp={io['zero_point']}"


def quantized(manifest: dict[str, Any], where: Path) -> None:
    models_ = manifest["models"]
    table = _table(f"{escape(manifest['model_name'])}: TFLite models in {escape(where)}",
                   [("", "left")] + [(kind, "right") for kind in models_])
    rows: dict[str, Callable[[dict[str, Any]], str]] = {
        "file": lambda m: escape(m["file"]),
        "size (KB)": lambda m: f"{m['size_bytes'] / 1024:.1f}",
        "input": lambda m: _qparams(m["input"]),
        "output": lambda m: _qparams(m["output"]),
        "ops": lambda m: ", ".join(op["name"] for op in m["ops"]),
        "min runtime": lambda m: str(m["min_runtime_version"]),
        "sha256": lambda m: m["sha256"][:16] + "…",
    }
    for label, fn in rows.items():
        table.add_row(label, *(fn(models_[k]) for k in models_))
    console.print(table)
    cal = manifest["calibration"]
    ratio = models_["int8"]["size_bytes"] / models_["float32"]["size_bytes"]
    if cal is None:  # edgeq import: converted elsewhere
        check = manifest.get("full_integer") or {}
        say(f"int8 is {100 * ratio:.1f} % of float32; imported, full-integer: "
            + ("yes" if check.get("ok") else "NO (" + "; ".join(check.get("problems", [])) + ")"))
    else:
        weights = "per-channel" if cal["per_channel"] else "per-tensor"
        say(f"int8 is {100 * ratio:.1f} % of float32; calibration: {cal['size']} images from "
            f"{cal['source']} (seed {cal['seed']}), {weights} weights")
    _data_line(manifest)
    console.print(f"next: edgeq evaluate {escape(where)}", style="dim")


def _data_line(manifest: dict[str, Any]) -> None:
    """eval.npz's source, size and preprocessing (manifests before issue 10 lack some)."""
    ev, pre = manifest.get("eval_data") or {}, manifest.get("preprocessing") or {}
    resized = ev.get("resized")
    say(f"eval data: {ev.get('count')} samples from {ev.get('source', 'mnist-test')}"
        + (f", resized {resized['from']} -> {resized['to']}" if resized else "")
        + f"; {manifest.get('num_classes', '?')} classes; preprocessing: "
        + ("raw pixels" if pre.get("identity", True) else
           f"(x - {pre.get('mean') or 0}) / {pre.get('std') or 1} * {pre.get('scale')} + "
           f"{pre.get('offset')}"))


# ------------------------------------------------------------------ evaluate


def evaluated(result: dict[str, Any]) -> None:
    f32, i8 = result["models"]["float32"], result["models"]["int8"]
    rt, data = result["runtime"], result["data"]
    table = _table(
        f"{escape(result.get('model_name') or 'model')} on {data['count']} images "
        f"({escape(data['source'])}), {escape(rt['name'])} {escape(rt['version'])} on this host",
        (("", "left"), ("float32", "right"), ("int8", "right"), ("int8 vs float32", "right")))
    table.add_row("size (KB)", f"{f32['size_kb']:.1f}", f"{i8['size_kb']:.1f}",
                  f"{100 * result['size_ratio']:.1f} %")
    table.add_row("top-1", pct(f32["top1"]), pct(i8["top1"]),
                  signed_points(-result["drop_points"]))
    if f32.get("top5") is not None and i8.get("top5") is not None:  # more than 5 classes
        table.add_row("top-5", pct(f32["top5"]), pct(i8["top5"]),
                      signed_points((i8["top5"] - f32["top5"]) * 100))
    table.add_row("correct", f"{f32['correct']}/{f32['count']}",
                  f"{i8['correct']}/{i8['count']}", "")
    table.add_row("agreement", "", "", pct(result["agreement"]))
    table.add_row("eval time (s)", f"{f32['eval_s']:.2f}", f"{i8['eval_s']:.2f}", "")
    console.print(table)
    say(f"drop: {result['drop_points']:.2f} points (float32 top-1 minus int8 top-1)")


# ------------------------------------------------------------------ inspect


def inspection(report: dict[str, Any], channels: bool) -> None:
    """Everything `edgeq inspect` shows, table by table."""
    _inspection_header(report)
    console.print(_tensors_table(report["tensors"]))
    console.print(_weights_table(report))
    if channels:
        for w in report["weights"]:
            console.print(_channels_table(w))
    if report.get("layer_errors"):
        console.print(_layer_errors_table(report["layer_errors"]))


def _inspection_header(report: dict[str, Any]) -> None:
    verdict = ("[green]yes[/]" if report["full_integer"]
               else "[red]no[/]: " + escape("; ".join(report["full_integer_problems"])))
    console.print(
        f"[bold]{escape(report['file'])}[/]: {report['size_bytes'] / 1024:.1f} KB, "
        f"min runtime {report['min_runtime_version']}, full-integer int8: {verdict}")
    say("ops: " + ", ".join(f"{op['name']} v{op['version']}" for op in report["ops"]))


def _tensor_ranges(t: dict[str, Any]) -> tuple[str, str, str, str]:
    """(scale, zero point, real min, real max) of one tensor, as shown."""
    if not t["quantized"]:
        return "-", "-", "-", "-"
    if t["per_channel"]:
        return (f"{t['scale_min']:.3g}..{t['scale_max']:.3g} ({t['channels']} ch)",
                "0" if not any(t["zero_point"]) else "per ch",
                f"{min(t['real_min']):.4g}", f"{max(t['real_max']):.4g}")
    return (f"{t['scale']:.4g}", str(t["zero_point"]),
            f"{t['real_min']:.4g}" if t["real_min"] is not None else "-",
            f"{t['real_max']:.4g}" if t["real_max"] is not None else "-")


def _tensors_table(tensors: list[dict[str, Any]]) -> Table:
    table = _table(
        "tensors: real range = [(qmin - zero_point) * scale, (qmax - zero_point) * scale]",
        (("#", "right"), ("name", "left"), ("dtype", "left"), ("shape", "left"),
         ("scale", "right"), ("zero point", "right"), ("real min", "right"),
         ("real max", "right")))
    for t in tensors:
        table.add_row(str(t["index"]), short(t["name"]), t["dtype"], escape(t["shape"]),
                      *_tensor_ranges(t))
    return table


def _ratio(value: Optional[float]) -> str:
    return f"{value:.2f}" if value is not None else "inf"


def _weights_table(report: dict[str, Any]) -> Table:
    table = _table(
        f"weights (dequantized); outlier: {escape(report['outlier_rule'])}",
        [(c, "left" if c in ("name", "op", "granularity") else "right") for c in (
            "name", "op", "shape", "granularity", "min", "max", "max|w|/P99.9", "outlier",
            "outlier channels")])
    for w in report["weights"]:
        table.add_row(short(w["name"], 32), escape(w["op"]), escape(w["shape"]),
                      "per-channel" if w["per_channel"] else "per-tensor",
                      f"{w['min']:.4g}", f"{w['max']:.4g}", _ratio(w["outlier_ratio"]),
                      "[red]yes[/]" if w["outlier"] else "no",
                      f"{w['outlier_channels']}/{len(w['channels'])}")
    return table


def _channels_table(w: dict[str, Any]) -> Table:
    table = _table(f"channels of {short(w['name'], 60)}", [(c, "right") for c in (
        "channel", "min", "max", "levels used", "max|w|/P99.9", "outlier")])
    for c in w["channels"]:
        table.add_row(str(c["channel"]), f"{c['min']:.4g}", f"{c['max']:.4g}",
                      str(c["levels_used"]), _ratio(c["outlier_ratio"]),
                      "yes" if c["outlier"] else "no")
    return table


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else "-"


def _layer_errors_table(errors: dict[str, Any]) -> Table:
    cal = errors["calibration"]
    table = _table(
        f"per-layer quantization error (QuantizationDebugger, {cal['size']} images from "
        f"{escape(cal['source'])}); rmse/scale ~0.29 is pure rounding",
        [(c, "left" if c in ("op", "tensor") else "right") for c in (
            "op", "tensor", "scale", "rmse", "rmse/scale", "max |error|")])
    for layer in errors["layers"]:
        table.add_row(escape(layer["op"]), short(layer["tensor"], 40), _num(layer.get("scale")),
                      _num(layer.get("rmse")), _num(layer.get("rmse_per_scale")),
                      _num(layer.get("max_abs_error")))
    return table


# ------------------------------------------------------------------ deploy


def deploy_events(task: Task) -> EventHandler:
    """What deploy's events show above and next to the transfer bar."""
    def on_event(name: str, details: dict) -> None:
        if name == "probe":
            task.describe(f"probed {details.get('machine')}, Python {details.get('python')}")
        elif name == "wheels":
            task.note(f"wheels: {details['count']} for {details['runtime']} from "
                      f"{details['cache']}")
        elif name == "send":
            task.describe(f"sending {Path(details['file']).name[:40]}")
        elif name == "script":
            task.restart("deploy.sh: venv, runtime, daemon")
    return on_event


_DEPLOY_CATEGORIES = (("model", "models"), ("data", "eval data"), ("agent", "agent code"),
                      ("script", "deploy.sh"), ("wheel", "wheels"))


def deployed(doc: dict[str, Any]) -> None:
    """The edgeq.deploy/1 summary: where, what device, and what was sent or skipped."""
    say(f"deployed to {doc['device']} ({doc['device_dir']}) in {doc['seconds']:.1f} s")
    say(f"device    {doc['arch']}, Python {doc['python']}, glibc {doc['glibc']}")
    say(f"runtime   {doc['runtime']} (venv {doc['venv']})")
    say(f"daemon    {doc['daemon']}")
    table = _table(None, (("what", "left"), ("files", "right"), ("sent", "right"),
                        ("unchanged (skipped)", "right")), show_edge=False, pad_edge=False)
    for category, label in _DEPLOY_CATEGORIES:
        files = [f for f in doc["files"] if f["category"] == category]
        if files:
            sent = sum(f["size_bytes"] for f in files if f["sent"])
            skipped = sum(f["size_bytes"] for f in files if not f["sent"])
            table.add_row(label, str(len(files)), human_bytes(sent), human_bytes(skipped))
    table.add_row("[bold]total", str(len(doc["files"])), human_bytes(doc["sent_bytes"]),
                  human_bytes(doc["skipped_bytes"]))
    console.print(table)
    dep = doc.get("deployment") or {}
    say(f"current   {dep.get('model_name')}: float32 {str(dep.get('float32'))[:12]}, "
        f"int8 {str(dep.get('int8'))[:12]}")


# ------------------------------------------------------------------ bench-remote, history


def bench_events(task: Task) -> EventHandler:
    """What bench-remote's events show above the progress bar."""
    def on_event(name: str, details: dict) -> None:
        if name == "deployment":
            task.note(f"deployment: {details['model_name']} in {details['device_dir']} "
                      f"(float32 {details['float32'][:12]}, int8 {details['int8'][:12]})")
        elif name == "path":
            how = "the daemon" if details["path"] == "daemon" else "the one-shot agent"
            why = details.get("daemon_error")
            task.note(f"measuring through {how}" + (f" (no daemon: {why})" if why else ""))
        elif name == "measure":
            what = " + evaluation" if details.get("evaluate") else ""
            task.describe(f"round {details['round']}: {details['kind']}{what}")
        elif name == "daemon_restarted":
            task.note(f"restarted the agent daemon ({details['how']}): {details['reason']}")
        elif name == "unstored":
            where = details.get("path") or "nowhere (no writable place)"
            task.note(f"warning: the run was NOT stored in the history: {details['error']}; "
                      f"the result is saved in {where} (hint: {details.get('hint')})")
    return on_event


def compare(doc: dict[str, Any], out: Console = console) -> None:
    """The side-by-side table and the device environment block of a compare document."""
    from edgeq.host.compare import table_rows

    emulated = bool((doc.get("device") or {}).get("emulated"))
    run = f"run {doc['run_id']}" if doc.get("run_id") is not None else "run (not stored)"
    title = (f"float32 vs int8 on {escape(doc.get('host'))} - {run}, "
             f"{escape(doc.get('time_utc'))}" + ("  \\[EMULATED]" if emulated else ""))
    table = _table(title, (("metric", "left"), ("float32", "right"), ("int8", "right"),
                           ("int8/float32", "right")),
                   title_style="bold red" if emulated else "bold")
    for row in table_rows(doc):
        table.add_row(escape(row.name), escape(row.float32), escape(row.int8),
                      escape(row.ratio))
    out.print(table)
    out.print(_environment_panel(doc, emulated))
    if emulated:
        out.print("[bold red]EMULATED: these timings come from an emulator, not a real board; "
                  "compare float32 and int8 with each other only.[/]")


def _environment_panel(doc: dict[str, Any], emulated: bool) -> Panel:
    from edgeq.host.compare import environment_rows

    env = Table.grid(padding=(0, 2))
    env.add_column(style="bold")
    env.add_column()
    for name, value in environment_rows(doc):
        style = "bold red" if name == "emulated" and emulated else None
        env.add_row(escape(name), escape(value), style=style)
    return Panel(env, title="device environment", border_style="red" if emulated else "blue",
                 expand=False)


def stored(doc: dict[str, Any], history_path: Optional[Path], extra: str = "") -> None:
    if history_path is not None and doc.get("run_id") is not None:
        say(f"stored as run {doc['run_id']} in {history_path}{extra}")


def _opt(value: Optional[float], spec: str, scale: float = 1.0) -> str:
    return "n/a" if value is None else format(value * scale, spec)


_HISTORY_COLUMNS = (("run", "right"), ("time (UTC)", "left"), ("host", "left"),
                    ("model", "left"), ("machine", "left"), ("top-1 f32/int8 (%)", "right"),
                    ("agree (%)", "right"), ("p50 f32/int8 (ms)", "right"),
                    ("threads", "right"), ("xnnpack", "left"))


def history(rows: list[dict[str, Any]], path: Path) -> None:
    """The list of stored runs, newest first."""
    table = Table(title=f"edgeq runs ({escape(path)})")
    for name, justify in _HISTORY_COLUMNS:
        table.add_column(name, justify=justify,  # type: ignore[arg-type]
                         no_wrap=name.startswith("time"))
    for r in rows:
        machine = escape(r.get("machine") or "?") + (" [red]EMULATED[/]" if r.get("emulated")
                                                      else "")
        table.add_row(
            str(r["run_id"]), str(r["time_utc"]).replace("T", " ").rstrip("Z"),
            escape(r["host"]), escape(r.get("model_name") or "?"), machine,
            f"{_opt(r['float32_accuracy'], '.2f', 100)} / "
            f"{_opt(r['int8_accuracy'], '.2f', 100)}",
            _opt(r["agreement"], ".2f", 100),
            f"{_opt(r['float32_latency_ms_p50'], '.3f')} / "
            f"{_opt(r['int8_latency_ms_p50'], '.3f')}",
            str(r.get("threads") or "?"),
            {True: "on", False: "off"}.get(r.get("xnnpack"), "?"),  # type: ignore[arg-type]
        )
    console.print(table)


def history_delta(a: dict[str, Any], b: dict[str, Any], rows: list[tuple[str, ...]]) -> None:
    """Two runs side by side (edgeq.host.compare.delta_rows) and each one's setting."""
    table = _table(f"run {a['run_id']} ({escape(a['host'])}) vs run {b['run_id']} "
                   f"({escape(b['host'])})",
                   (("metric", "left"), (f"run {a['run_id']}", "right"),
                    (f"run {b['run_id']}", "right"), ("B/A", "right")))
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    console.print(table)
    for label, doc in (("A", a), ("B", b)):
        dev = doc.get("device") or {}
        s = doc.get("settings") or {}
        console.print(
            escape(f"{label}: {doc['host']} {dev.get('machine', '?')} "
                   f"{dev.get('cpu_model') or ''}, threads {s.get('threads')}, "
                   f"XNNPACK {'on' if s.get('xnnpack') else 'off'}")
            + (" [bold red]EMULATED[/]" if dev.get("emulated") else ""), highlight=False)


# ------------------------------------------------------------------ run


_STAGE_TITLES = {"train": "train", "quantize": "quantize", "evaluate": "evaluate on the host",
                 "deploy": "deploy to {device}", "bench": "bench on {device}"}


def run_events(task: Task) -> EventHandler:
    """`edgeq run`'s stages as rules and one line each; deploy and bench events as usual."""
    on_deploy, on_bench = deploy_events(task), bench_events(task)

    def on_event(name: str, details: dict) -> None:
        if name == "stage":
            title = _STAGE_TITLES[details["name"]].format(device=details.get("device"))
            task.rule(f"{details['index']}/{details['total']} {title}")
            task.restart(details["name"])
        elif name == "skipped":
            task.note(f"skipped: {details['reason']} (--force does it again)")
        elif name == "stage_done":
            result = details["result"]
            line = _STAGE_LINES[details["name"]](result) if result is not None else ""
            if line:
                task.note(line)
        else:
            on_deploy(name, details)
            on_bench(name, details)
    return on_event


def _trained_line(record: dict[str, Any]) -> str:
    acc = record.get("float32_test_top1")
    return f"trained {record.get('model_name')}" + (
        f": float32 top-1 {acc * 100:.2f} %" if isinstance(acc, float) else "")


def _quantized_line(manifest: dict[str, Any]) -> str:
    sizes = {k: m["size_bytes"] / 1024 for k, m in manifest["models"].items()}
    return ", ".join(f"{kind} {kb:.1f} KB" for kind, kb in sizes.items())


def _evaluated_line(result: dict[str, Any]) -> str:
    parts = [f"{kind} top-1 {m['top1'] * 100:.2f} %" for kind, m in result["models"].items()]
    return "on the host: " + ", ".join(parts + [f"agreement {result['agreement'] * 100:.2f} %"])


def _deployed_line(doc: dict[str, Any]) -> str:
    if str(doc.get("schema", "")).startswith("edgeq.fleet_deploy/"):
        ok = sum(1 for b in doc["boards"] if b["ok"])
        return f"deployed to {ok} of {len(doc['boards'])} boards in {doc['elapsed_s']:.1f} s"
    keys = ("device", "arch", "python", "runtime", "sent_bytes", "daemon")
    return "deployed: " + ", ".join(f"{k} {doc[k]}" for k in keys if k in doc)


_STAGE_LINES: dict[str, Callable[[dict[str, Any]], str]] = {
    "train": _trained_line, "quantize": _quantized_line, "evaluate": _evaluated_line,
    "deploy": _deployed_line, "bench": lambda doc: "",
}


def stage_times(seconds: dict[str, float]) -> None:
    say("stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()), err_console)


# ------------------------------------------------------------------ report, sweep


def report_written(paths: Any) -> None:
    say(f"report: {paths.html}")
    say(f"summary: {paths.markdown} ({len(paths.figures)} figures in "
        f"{paths.out_dir / 'figures'})")


def sweep_points(doc: dict[str, Any], artifacts_dir: Path) -> None:
    table = _table(f"sweep of {escape(artifacts_dir)} ({doc.get('eval_count')} test images)",
                   [(name, "left" if name == "weights" else "right") for name in (
                       "weights", "calib. images", "int8 top-1 %", "f32 top-1 %", "agree %",
                       "int8 KB")])
    for p in doc["points"]:
        extra = "" if p.get("method", "minmax") == "minmax" else f"{p['method']} "
        extra += f"fb{p['float_fallback']} " if p.get("float_fallback") else ""
        table.add_row(escape(extra) + p["granularity"], str(p["calibration_size"]),
                      f"{p['int8_top1'] * 100:.2f}", f"{p['float32_top1'] * 100:.2f}",
                      "n/a" if p.get("agreement") is None else f"{p['agreement'] * 100:.2f}",
                      f"{p['int8_size_bytes'] / 1024:.1f}")
    console.print(table)
    say(f"saved {doc['path']}; `edgeq report` includes it")


def robustness_table(doc: dict[str, Any]) -> None:
    """edgeq.robustness/1: top-1 per model and corruption (mean over severities), the gap."""
    cols = [("model", "left"), ("clean %", "right")] + [
        (c, "right") for c in doc["corruptions"]] + [("mean %", "right"), ("gap pts", "right")]
    table = _table(f"robustness ({doc['count']} images, severities "
                   f"{','.join(map(str, doc['severities']))}, seed {doc['seed']})", cols)
    for m in doc["models"]:
        per = [sum(m["top1"][c].values()) / len(m["top1"][c]) * 100 for c in doc["corruptions"]]
        gap = m.get("mean_gap_points")
        table.add_row(escape(m["name"]), f"{m['clean_top1'] * 100:.2f}",
                      *[f"{v:.2f}" for v in per], f"{m['mean_corrupted_top1'] * 100:.2f}",
                      "" if gap is None else f"{gap:+.2f}")
    console.print(table)
    say(f"saved {doc['path']}")


# ------------------------------------------------------------------ fleet (many boards)


def _cell_text(cell: dict[str, Any]) -> str:
    """A matrix cell in a few characters: "2 thr xnnpack" / "1 thr no-xnnpack tflite-runtime"."""
    text = f"{cell['threads']} thr {'xnnpack' if cell['xnnpack'] else 'no-xnnpack'}"
    return text + (f" {cell['runtime']}" if cell.get("runtime") else "")


def fleet_events(view: BoardsView) -> Callable[[str, str, dict], None]:
    """What a fleet's per-board events show in the live board table."""
    def on_event(board: str, name: str, details: dict) -> None:
        if name in ("board_queued", "board_connecting"):
            view.update(board, status=name[6:])
        elif name == "cell":
            view.update(board, status=f"cell {details['index'] + 1}/{details['total']}",
                        step=_cell_text(details["cell"]))
        elif name == "measure":
            view.update(board, step=f"round {details['round']}: {details['kind']}")
        elif name in ("probe", "send", "script"):
            view.update(board, status="deploying", step=name)
        elif name == "board_done":
            error = details.get("error") or {}
            view.update(board, status="ok" if details["ok"] else "failed",
                        step=f"{details['elapsed_s']:.1f} s" if details["ok"]
                        else error.get("message", ""))
    return on_event


def fleet_notes(task: Task) -> Callable[[str, str, dict], None]:
    """A fleet's per-board events as lines above a progress bar (`edgeq run`)."""
    def on_event(board: str, name: str, details: dict) -> None:
        if name == "cell":
            task.describe(f"{board}: cell {details['index'] + 1}/{details['total']}")
        elif name == "cell_failed":
            task.note(f"{board}: {_cell_text(details['cell'])} failed: "
                      f"{details['error']['message']}")
        elif name == "board_done":
            task.note(f"{board}: " + ("done" if details["ok"] else
                                      f"failed: {details['error']['message']}")
                      + f" ({details['elapsed_s']:.1f} s)")
    return on_event


def board_errors(boards: list[dict[str, Any]]) -> None:
    """Each failed board's own one-line error and hint, on stderr."""
    for b in boards:
        if b.get("error"):
            err = b["error"]
            err_console.print(f"[bold red]{escape(b['board'])}:[/] {escape(err['message'])}"
                              + (f" [yellow](hint: {escape(err['hint'])})[/]"
                                 if err.get("hint") else ""), highlight=False, soft_wrap=True)


def fleet_deployed(doc: dict[str, Any]) -> None:
    """The edgeq.fleet_deploy/1 summary: one row per board."""
    table = _table(f"deploy to {len(doc['boards'])} boards in {doc['elapsed_s']:.1f} s",
                   (("board", "left"), ("target", "left"), ("runtime", "left"),
                    ("sent", "right"), ("unchanged", "right"), ("seconds", "right"),
                    ("status", "left")))
    for b in doc["boards"]:
        d = b.get("deploy") or {}
        table.add_row(escape(b["board"]), escape(b["target"]), escape(d.get("runtime", "-")),
                      human_bytes(d["sent_bytes"]) if d else "-",
                      human_bytes(d["skipped_bytes"]) if d else "-", f"{b['elapsed_s']:.1f}",
                      "[green]ok[/]" if b["ok"] else "[red]failed[/]")
    console.print(table)
    board_errors(doc["boards"])


def _fleet_row(board: dict[str, Any], run: dict[str, Any]) -> list[str]:
    doc = run.get("compare") or {}
    f32 = (doc.get("models") or {}).get("float32") or {}
    i8 = (doc.get("models") or {}).get("int8") or {}
    from edgeq.host.compare import int8_speedup_p50

    p50 = (f32.get("latency_ms_p50"), i8.get("latency_ms_p50"))
    speedup = int8_speedup_p50(doc)
    status = "[green]ok[/]" if run.get("error") is None else "[red]failed[/]"
    return [escape(board["board"]), escape(_cell_text(run["cell"])), _opt(p50[0], ".3f"),
            _opt(p50[1], ".3f"), "n/a" if speedup is None else f"{speedup:.2f}x",
            f"{_opt(f32.get('accuracy'), '.2f', 100)}/{_opt(i8.get('accuracy'), '.2f', 100)}",
            str(run["run_id"]) if run.get("run_id") is not None else "-", status]


def fleet(doc: dict[str, Any]) -> None:
    """The edgeq.fleet/1 table: board x setting, p50 float32 / int8, int8 speed-up, top-1."""
    cells = len(doc["matrix"]["threads"]) * len(doc["matrix"]["xnnpack"]) \
        * len(doc["matrix"]["runtime"])
    title = (f"fleet run {doc['fleet_id'] if doc.get('fleet_id') is not None else '(not stored)'}"
             f": {len(doc['boards'])} boards x {cells} settings, seed {doc['seed']}, "
             f"{doc['elapsed_s']:.1f} s")
    table = _table(title, (("board", "left"), ("setting", "left"), ("p50 f32 ms", "right"),
                           ("p50 int8 ms", "right"), ("int8 speed-up", "right"),
                           ("top-1 f32/int8 %", "right"), ("run", "right"),
                           ("status", "left")))
    table.columns[1].no_wrap = True
    for b in doc["boards"]:
        runs = sorted(b["runs"], key=lambda r: (r["cell"]["threads"], not r["cell"]["xnnpack"],
                                                str(r["cell"].get("runtime"))))
        for run in runs:
            table.add_row(*_fleet_row(b, run))
        if not runs:
            table.add_row(escape(b["board"]), "-", "-", "-", "-", "-", "-",
                          "[red]failed[/]")
        table.add_section()
    console.print(table)
    if cells > 1:
        say("order (randomized per board from the seed): " + "; ".join(
            f"{b['board']}: " + " > ".join(_cell_text(c) for c in b["order"])
            for b in doc["boards"]), err_console)
    cell_failed = [b for b in doc["boards"] if any(r.get("error") for r in b["runs"])]
    for b in cell_failed:
        for run in b["runs"]:
            if run.get("error"):
                board_errors([{"board": f"{b['board']}, {_cell_text(run['cell'])}",
                               "error": run["error"]}])
    board_errors([b for b in doc["boards"] if b not in cell_failed])


def fleets(rows: list[dict[str, Any]], path: Path) -> None:
    """The list of stored fleet runs, newest first."""
    table = _table(f"edgeq fleet runs ({escape(path)})",
                   (("fleet", "right"), ("created (UTC)", "left"), ("boards ok", "right"),
                    ("threads", "left"), ("xnnpack", "left"), ("runtime", "left"),
                    ("runs", "right"), ("seed", "right")))
    for r in rows:
        m = r["matrix"]
        table.add_row(str(r["fleet_id"]), str(r["created_utc"]).replace("T", " ").rstrip("Z"),
                      f"{r['boards_ok']}/{r['boards']}", ",".join(map(str, m["threads"])),
                      ",".join("on" if x else "off" for x in m["xnnpack"]),
                      escape(",".join(x or "default" for x in m["runtime"])), str(r["runs"]),
                      str(r["seed"]))
    console.print(table)


def fleet_delta(a: dict[str, Any], b: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Two fleet runs side by side (edgeq.host.fleet.compare_fleets)."""
    fa, fb = a["fleet_id"], b["fleet_id"]
    table = _table(f"fleet run {fa} vs fleet run {fb}",
                   (("board", "left"), ("setting", "left"), ("p50 f32 ms A / B", "right"),
                    ("p50 int8 ms A / B", "right"), ("int8 B/A", "right"),
                    ("int8 speed-up A / B", "right"), ("runs A / B", "right")))
    table.columns[1].no_wrap = True

    def both(key: str, spec: str, row: dict[str, Any]) -> str:
        return " / ".join(_opt((row[side] or {}).get(key), spec) for side in ("a", "b"))

    for row in rows:
        ratio = row["int8_p50_b_over_a"]
        table.add_row(escape(row["board"]), escape(_cell_text(row["cell"])),
                      both("float32_latency_ms_p50", ".3f", row),
                      both("int8_latency_ms_p50", ".3f", row),
                      "n/a" if ratio is None else f"{ratio:.2f}x",
                      both("int8_speedup", ".2f", row),
                      " / ".join(str((row[s] or {}).get("run_id") or "-") for s in ("a", "b")))
    console.print(table)
