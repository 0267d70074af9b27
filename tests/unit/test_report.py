"""`edgeq report` on a real run: the session's tiny real models, measured by the real one-shot
device agent (`python -m edgeq.device bench ... --json`) on this machine, merged by
edgeq.host.compare. Checks that the report's numbers are the run's numbers (read back from the
HTML data attributes and from the Markdown table), that the page needs no network, and that a
headless Chromium renders it (screenshot not blank, no console errors).
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edgeq.host import report, stats
from edgeq.host.artifacts import ArtifactsError
from edgeq.host.compare import build_compare
from report_html import html_resources, parse_html_metrics  # tests/report_html.py

KINDS = ("float32", "int8")
# the agent's shortest honest measurement: enough runs for a distribution, little time
AGENT_ARGS = ("--runs-min", "60", "--run-s-min", "0.2", "--warmup-runs-min", "3",
              "--warmup-s-min", "0.05")


def agent_bench(model: Path, data: Path) -> dict[str, Any]:
    """One real one-shot agent measurement (a subprocess, as bench-remote runs it)."""
    out = subprocess.run(
        [sys.executable, "-m", "edgeq.device", "bench", str(model), "--data", str(data),
         "--json", *AGENT_ARGS],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout)
    assert doc["schema"] == "edgeq.bench/1"
    return doc


def make_run(artifacts: Path) -> dict[str, Any]:
    """A compare document from real agent results on the artifacts' two models."""
    manifest = json.loads((artifacts / "manifest.json").read_text())
    results = {k: agent_bench(artifacts / manifest["models"][k]["file"], artifacts / "eval.npz")
               for k in KINDS}
    doc = build_compare([results["float32"]], [results["int8"]], host="local",
                        settings={"threads": 1, "xnnpack": True, "order": "one-shot",
                                  "rounds": 1, "path": "one-shot"},
                        time_utc=results["float32"]["time_utc"], artifacts_dir=str(artifacts))
    doc["run_id"] = 7
    return doc


@pytest.fixture(scope="session")
def real_run(tiny_artifacts: Path) -> dict[str, Any]:
    return make_run(tiny_artifacts)


@pytest.fixture(scope="session")
def built(real_run: dict[str, Any], tiny_artifacts: Path,
          tmp_path_factory: pytest.TempPathFactory) -> report.ReportPaths:
    out = tmp_path_factory.mktemp("report")
    steps: list[tuple[int, int]] = []
    paths = report.build_report(real_run, artifacts_dir=tiny_artifacts, out_dir=out,
                                progress=lambda d, t: steps.append((d, t)))
    assert steps and steps[-1][0] == steps[-1][1]
    return paths


def _labels(artifacts: Path, n: int) -> np.ndarray:
    with np.load(artifacts / "eval.npz") as data:
        return data["labels"][:n].astype(np.int64)


# ------------------------------------------------------------------ the numbers


def test_html_numbers_are_the_runs_numbers(built: report.ReportPaths, real_run: dict[str, Any],
                                           tiny_artifacts: Path) -> None:
    metrics = parse_html_metrics(built.html.read_text(encoding="utf-8"))
    for kind in KINDS:
        entry = real_run["models"][kind]
        for key in ("size_bytes", "accuracy", "latency_ms_p50", "latency_ms_p90",
                    "latency_ms_p99", "latency_ms_mean", "throughput_samples_per_s", "init_ms",
                    "peak_rss_bytes", "runs"):
            assert metrics[(key, kind)] == pytest.approx(entry[key], rel=1e-12), (key, kind)
        # derived numbers, recomputed here from the run's raw data
        preds = np.asarray(entry["result"]["accuracy"]["predictions"])
        correct = int(np.sum(preds == _labels(tiny_artifacts, preds.size)))
        assert correct == entry["result"]["accuracy"]["correct"]
        low, high = stats.wilson_interval(correct, preds.size)
        assert metrics[("accuracy_ci_low", kind)] == pytest.approx(low, rel=1e-12)
        assert metrics[("accuracy_ci_high", kind)] == pytest.approx(high, rel=1e-12)
        assert metrics[("count", kind)] == preds.size
        blo, bhi = stats.bootstrap_median_interval(entry["latencies_ms"], seed=0)
        assert metrics[("latency_ms_p50_ci_low", kind)] == pytest.approx(blo, rel=1e-12)
        assert metrics[("latency_ms_p50_ci_high", kind)] == pytest.approx(bhi, rel=1e-12)
        assert blo <= entry["latency_ms_p50"] <= bhi
    for key, ratio in real_run["ratios"].items():
        if ratio is not None and (key, "ratio") in metrics:
            assert metrics[(key, "ratio")] == pytest.approx(ratio, rel=1e-12), key
    assert metrics[("size_bytes", "ratio")] == pytest.approx(
        real_run["models"]["int8"]["size_bytes"] / real_run["models"]["float32"]["size_bytes"])
    assert metrics[("agreement", "both")] == pytest.approx(real_run["agreement"], rel=1e-12)
    # McNemar's counts from the two prediction lists
    pf = np.asarray(real_run["models"]["float32"]["result"]["accuracy"]["predictions"])
    pq = np.asarray(real_run["models"]["int8"]["result"]["accuracy"]["predictions"])
    y = _labels(tiny_artifacts, pf.size)
    assert metrics[("mcnemar_b", "both")] == int(np.sum((pf == y) & (pq != y)))
    assert metrics[("mcnemar_c", "both")] == int(np.sum((pf != y) & (pq == y)))
    mc = stats.mcnemar(pf, pq, y)
    assert metrics[("mcnemar_p_value", "both")] == pytest.approx(mc.p_value, rel=1e-12)


def _markdown_rows(text: str) -> dict[str, list[str]]:
    """key -> [float32, int8, ratio] cells of the side-by-side Markdown table."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = re.match(r"^\| [^|]+ \| `(\w+)` \|(.*)\|$", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
    return rows


def _numbers(cell: str) -> list[tuple[float, float]]:
    """(value, half a unit of the last printed digit) for every number in a cell."""
    out = []
    for tok in re.findall(r"[-+]?\d+(?:\.\d+)?", cell):
        decimals = len(tok.split(".")[1]) if "." in tok else 0
        out.append((float(tok), 0.5 * 10.0 ** -decimals))
    return out


def test_markdown_numbers_are_the_runs_numbers(built: report.ReportPaths,
                                               real_run: dict[str, Any]) -> None:
    rows = _markdown_rows(built.markdown.read_text(encoding="utf-8"))
    scale = {"size_bytes": 1024.0, "accuracy": 0.01, "peak_rss_bytes": 1024.0 ** 2}
    for key in ("size_bytes", "accuracy", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99",
                "throughput_samples_per_s", "init_ms", "peak_rss_bytes"):
        assert key in rows, f"no Markdown row for {key}"
        for col, kind in enumerate(KINDS):
            (shown, tol), = _numbers(rows[key][col])
            want = real_run["models"][kind][key] / scale.get(key, 1.0)
            assert abs(shown - want) <= tol * 1.0001, (key, kind, shown, want)
        ratio = real_run["ratios"][key]
        shown, tol = _numbers(rows[key][2])[0]
        assert abs(shown - ratio) <= tol * 1.0001, (key, "ratio", shown, ratio)
    (agree, tol), = _numbers(rows["agreement"][2])
    assert abs(agree - 100 * real_run["agreement"]) <= tol * 1.0001
    for col, kind in enumerate(KINDS):
        (lo, tl), (hi, th) = _numbers(rows["latency_ms_p50_ci"][col])
        blo, bhi = stats.bootstrap_median_interval(real_run["models"][kind]["latencies_ms"], seed=0)
        assert abs(lo - blo) <= tl * 1.0001 and abs(hi - bhi) <= th * 1.0001


# ------------------------------------------------------------------ offline and rendering


def test_the_page_needs_no_network(built: report.ReportPaths) -> None:
    text = built.html.read_text(encoding="utf-8")
    assert not re.search(r"(?i)https?://", text), "the page references a URL"
    assert not re.search(r"(?i)<link\b|@import|url\(|<script\b[^>]*\bsrc=", text)
    srcs, resources = html_resources(text)
    assert len(srcs) >= 3  # latency, per-class, changed images at least
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(r.startswith("data:") or r.startswith("#") for r in resources), resources
    # every figure is also a PNG file next to the Markdown, which links it
    md = built.markdown.read_text(encoding="utf-8")
    for fig in built.figures:
        assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"figures/{fig.name}" in md


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="no chromium binary (Debian package `chromium`)")
def test_headless_chromium_renders_the_report(built: report.ReportPaths, tmp_path: Path) -> None:
    from matplotlib.image import imread

    shot = tmp_path / "shot.png"
    common = [str(_chromium()), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
              "--no-first-run", "--disable-background-networking", "--disable-component-update",
              "--disable-sync", "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND",
              f"--user-data-dir={tmp_path / 'profile'}",
              "--enable-logging=stderr", "--v=0"]
    url = built.html.resolve().as_uri()
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = subprocess.run(common + [f"--screenshot={shot}", "--window-size=1280,2000", url],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console
    assert "net::ERR" not in proc.stderr, "the page tried to load something"
    img = imread(shot)
    assert img.shape[0] == 2000 and img.shape[1] == 1280
    gray = img[..., :3].mean(axis=2)
    assert gray.std() > 0.05, "the screenshot is blank"
    assert (gray < 0.5).mean() > 0.005, "no dark pixels: no text or figures rendered"
    dom = subprocess.run(common + ["--dump-dom", url], capture_output=True, text=True,
                         timeout=120, env=env)
    assert dom.returncode == 0
    assert 'id="comparison"' in dom.stdout and 'data-metric="latency_ms_p50"' in dom.stdout


# ------------------------------------------------------------------ content and errors


def test_layers_section_and_environment(built: report.ReportPaths,
                                        real_run: dict[str, Any]) -> None:
    text = built.html.read_text(encoding="utf-8")
    assert 'id="layers"' in text and 'id="env"' in text
    names = {p.stem for p in built.figures}
    assert {"latency", "per_class", "changed"} <= names
    assert any(n.startswith("weights_") for n in names), names
    assert "activations" in names and "layer_errors" in names
    assert real_run["models"]["int8"]["sha256"] in text
    assert 'class="emulated"' not in text  # this machine is not emulated
    embedded = re.search(r'<script type="application/json" id="edgeq-report-data">(.*?)</script>',
                         text, re.S)
    assert embedded
    data = json.loads(embedded.group(1))
    assert data["run_id"] == 7 and data["schema"] == "edgeq.report/1"


def test_top5_and_per_class_table_are_the_runs_numbers(built: report.ReportPaths,
                                                       real_run: dict[str, Any],
                                                       tiny_artifacts: Path) -> None:
    """10 classes: the Top-5 row holds the device's top-5; the per-class table holds the
    per-class top-1 recomputed from the predictions and the labels, by class name."""
    text = built.html.read_text(encoding="utf-8")
    metrics = parse_html_metrics(text)
    for kind in KINDS:
        acc = real_run["models"][kind]["result"]["accuracy"]
        assert metrics[("accuracy_top5", kind)] == pytest.approx(acc["top5"], rel=1e-12)
        preds = np.asarray(acc["predictions"])
        y = _labels(tiny_artifacts, preds.size)
        for c in range(10):
            want = float(np.mean(preds[y == c] == c))
            assert metrics[("per_class_top1", f"{kind}:{c}")] == pytest.approx(want, rel=1e-12)
    assert "Top-5 (%)" in text and 'id="per-class-table"' in text
    md = built.markdown.read_text(encoding="utf-8")
    assert "## Per class" in md and "| Top-5 (%) | `accuracy_top5` |" in md
    assert "28x28x1 int8" in md  # the model's input, from the manifest


def test_gallery_draws_colour_and_float_images_of_any_size() -> None:
    """The changed-images figure is not MNIST-only: RGB 16x16 uint8, float32 model-ready
    (N, 8, 8, 1) with negative values, and class names under each image."""
    from edgeq.host import plots

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    shown, colour = plots.display_image(rgb[0], (0.0, 255.0))
    assert colour and shown.shape == (16, 16, 3)
    np.testing.assert_allclose(shown, rgb[0] / 255.0)
    flt = rng.normal(size=(6, 8, 8, 1)).astype(np.float32)
    lo, hi = float(flt.min()), float(flt.max())
    shown, colour = plots.display_image(flt[1], (lo, hi))
    assert not colour and shown.shape == (8, 8) and 0.0 <= shown.min() <= shown.max() <= 1.0
    labels, pf, pq = [0, 1, 2, 0, 1, 2], [0, 1, 2, 0, 1, 1], [1, 1, 2, 0, 2, 1]
    for images in (rgb, flt):
        png = plots.changed_gallery(images, labels, pf, pq, [0, 4, 5],
                                    class_names=["cat", "dog", "bird"])
        assert png.startswith(b"\x89PNG") and len(png) > 1000
    png = plots.per_class_accuracy({"float32": [1.0, 0.5, None], "int8": [0.5, 0.5, None]},
                                   class_names=["cat", "dog", "bird"])
    assert png.startswith(b"\x89PNG")


def test_a_model_that_crashes_the_interpreter_leaves_a_note(real_run: dict[str, Any],
                                                            tiny_artifacts: Path,
                                                            tmp_path: Path) -> None:
    """The per-layer analysis loads both models in this process; a damaged file that
    segfaults LiteRT (test_device_runtime.damaged_model) is opened in a child first, so the
    report is still written, with a note naming the file instead of the layer section."""
    from edgeq.device.fileutil import sha256_file
    from test_device_runtime import damaged_model

    art = tmp_path / "art"
    shutil.copytree(tiny_artifacts, art)
    bad = damaged_model(tiny_artifacts / "model_int8.tflite", art / "model_int8.tflite")
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["models"]["int8"]["sha256"] = sha256_file(bad)
    (art / "manifest.json").write_text(json.dumps(manifest))
    run = json.loads(json.dumps(real_run))
    run["models"]["int8"]["sha256"] = sha256_file(bad)
    paths = report.build_report(run, artifacts_dir=art, out_dir=tmp_path / "out")
    text = paths.html.read_text(encoding="utf-8")
    assert ("per-layer analysis not available: model_int8.tflite crashed the TFLite "
            "interpreter (SIGSEGV)") in text
    assert 'id="comparison"' in text and not any(p.stem.startswith("weights_")
                                                 for p in paths.figures)


def test_an_emulated_run_says_so_loudly(real_run: dict[str, Any], tiny_artifacts: Path,
                                        tmp_path: Path) -> None:
    run = json.loads(json.dumps(real_run))
    run["device"]["emulated"] = True
    run["device"]["emulator"] = "qemu-aarch64"
    paths = report.build_report(run, artifacts_dir=tiny_artifacts, out_dir=tmp_path, layers=False)
    text = paths.html.read_text(encoding="utf-8")
    assert 'class="emulated"' in text and "EMULATED" in text and "qemu-aarch64" in text
    md = paths.markdown.read_text(encoding="utf-8")
    assert md.splitlines()[2].startswith("> **EMULATED")


def test_a_run_of_other_artifacts_is_refused(real_run: dict[str, Any], tiny_artifacts: Path,
                                             tmp_path: Path) -> None:
    run = json.loads(json.dumps(real_run))
    run["models"]["int8"]["sha256"] = "0" * 64
    with pytest.raises(report.ReportError, match="not the one"):
        report.build_report(run, artifacts_dir=tiny_artifacts, out_dir=tmp_path, layers=False)
    run = json.loads(json.dumps(real_run))
    preds = run["models"]["int8"]["result"]["accuracy"]["predictions"]
    preds[0] = (preds[0] + 1) % 10  # no longer what the device counted
    with pytest.raises(stats.RunError, match="correct"):
        report.build_report(run, artifacts_dir=tiny_artifacts, out_dir=tmp_path, layers=False)
    with pytest.raises(stats.RunError, match="schema"):
        report.build_report({"schema": "nope"}, artifacts_dir=tiny_artifacts, out_dir=tmp_path)
    with pytest.raises(ArtifactsError, match="does not exist"):
        report.build_report(real_run, artifacts_dir=tmp_path / "nowhere", out_dir=tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_cli_reports_the_latest_run_of_the_history(real_run: dict[str, Any],
                                                   tiny_artifacts: Path, tmp_path: Path) -> None:
    from edgeq.host.history import History

    db = tmp_path / "history.sqlite3"
    doc = dict(real_run)
    doc.pop("run_id")
    run_id = History(db).add(doc)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "edgeq.host", "report", "--db", str(db), "--out", str(out),
         "--no-layers", "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    paths = json.loads(proc.stdout)
    text = Path(paths["html"]).read_text(encoding="utf-8")
    assert f"(run {run_id})" in text
    metrics = parse_html_metrics(text)
    assert metrics[("latency_ms_p50", "int8")] == pytest.approx(
        real_run["models"]["int8"]["latency_ms_p50"], rel=1e-12)
    # a run id that is not there: a one-line error with a hint, exit code 1
    bad = subprocess.run([sys.executable, "-m", "edgeq.host", "report", "999", "--db", str(db),
                          "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "no run 999" in bad.stderr


def test_fmt_num_keeps_four_significant_digits() -> None:
    assert report.fmt_num(0.0123456) == "0.01235"
    assert report.fmt_num(98.765) == "98.77"
    assert report.fmt_num(123456.7) == "123457"
    assert report.fmt_num(300) == "300"
    assert report.fmt_num(None) == "n/a"
