"""`edgeq report`'s issue-12 sections from REAL output: the session's tiny trained model is
re-quantized by `edgeq.host.sweep.sweep` with four calibration methods (the converter's
Min-Max, ai-edge-quantizer's Min-Max, percentile and MSE; real converter and
ai-edge-quantizer, every variant evaluated with LiteRT), corrupted by
`edgeq.host.robustness.robustness` (real LiteRT on every variant), measured by the real one-shot
device agent (test_report.make_run), and reported. Every number of the new tables is read back
from the HTML's data attributes and checked against the sweep/robustness documents and against
statistics recomputed here from the labels in eval.npz.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edgeq.host import report, stats
from edgeq.host.report_sections import (
    methods_section,
    plain_sweep,
    ranges_section,
    robustness_models,
    robustness_section,
    short_tensor,
)
from report_html import parse_html_metrics  # tests/report_html.py

METHODS = ("minmax", "aeq-minmax", "percentile:99.9", "mse")
EVAL_LIMIT = 300
TODAY_SECTIONS = ["table", "per-class", "environment", "figures", "layers", "reproduce"]


@pytest.fixture(scope="module")
def swept(tiny_artifacts: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """A copy of the session's artifacts with a real sweep.json and robustness.json."""
    from edgeq.host.robustness import robustness, sweep_variant_dirs
    from edgeq.host.sweep import sweep

    copy = tmp_path_factory.mktemp("report-methods") / "artifacts"
    shutil.copytree(tiny_artifacts, copy)
    doc = sweep(copy, calibration_sizes=(50,), granularities=("per-tensor",), methods=METHODS,
                eval_limit=EVAL_LIMIT)
    rob = robustness(copy, variants=sweep_variant_dirs(copy),
                     corruptions=("gaussian_noise", "contrast"), limit=100)
    return copy, doc, rob


@pytest.fixture(scope="module")
def built(swept: tuple[Path, dict[str, Any], dict[str, Any]],
          tmp_path_factory: pytest.TempPathFactory) -> report.ReportPaths:
    from test_report import make_run  # the same real agent run (tests/unit is on sys.path)

    artifacts = swept[0]
    return report.build_report(make_run(artifacts), artifacts_dir=artifacts,
                               out_dir=tmp_path_factory.mktemp("report"), layers=False)


def _labels(artifacts: Path, n: int) -> np.ndarray:
    with np.load(artifacts / "eval.npz") as data:
        return data["labels"][:n].astype(np.int64)


def _name(p: dict[str, Any]) -> str:
    return p["dir"].rsplit("/", 1)[-1]


def test_method_table_is_the_sweeps_numbers(swept: tuple[Path, dict[str, Any], dict[str, Any]],
                                            built: report.ReportPaths) -> None:
    artifacts, doc, _ = swept
    metrics = parse_html_metrics(built.html.read_text(encoding="utf-8"))
    y = _labels(artifacts, EVAL_LIMIT)
    assert doc["labels"] == y.tolist()  # the sweep kept the images' labels in eval.npz order
    pf = np.asarray(doc["float32_predictions"])
    base = next(p for p in doc["points"] if p["method"] == "minmax")
    pb = np.asarray(base["int8_predictions"])
    assert {p["method"] for p in doc["points"]} == set(METHODS)
    for p in doc["points"]:
        v = _name(p)
        pq = np.asarray(p["int8_predictions"])
        correct = int(np.sum(pq == y))
        assert correct / y.size == pytest.approx(p["int8_top1"], abs=1e-12)
        assert metrics[("methods-table.top1_pct", v)] == pytest.approx(100 * p["int8_top1"])
        lo, hi = stats.wilson_interval(correct, y.size)
        assert metrics[("methods-table.top1_low", v)] == pytest.approx(100 * lo)
        assert metrics[("methods-table.top1_high", v)] == pytest.approx(100 * hi)
        assert metrics[("methods-table.drop_pp", v)] == pytest.approx(
            100 * (p["float32_top1"] - p["int8_top1"]))
        rf, rq = pf == y, pq == y
        dlo, dhi = stats.paired_difference_interval(
            int(np.sum(rf & rq)), int(np.sum(rf & ~rq)), int(np.sum(~rf & rq)),
            int(np.sum(~rf & ~rq)))
        assert metrics[("methods-table.drop_low", v)] == pytest.approx(100 * dlo)
        assert metrics[("methods-table.drop_high", v)] == pytest.approx(100 * dhi)
        if p is base:
            assert ("methods-table.p", v) not in metrics
            continue
        rb = pb == y
        assert metrics[("methods-table.b", v)] == int(np.sum(rb & ~rq))
        assert metrics[("methods-table.c", v)] == int(np.sum(~rb & rq))
        assert metrics[("methods-table.p", v)] == pytest.approx(
            stats.mcnemar(pb, pq, y).p_value)
    # the converter's Min-Max next to ai-edge-quantizer's, with the reason
    aeq = next(p for p in doc["points"] if p["method"] == "aeq-minmax")
    key = "per-tensor / 50"
    assert metrics[("minmax-quantizers.converter_top1_pct", key)] == pytest.approx(
        100 * base["int8_top1"])
    assert metrics[("minmax-quantizers.aeq_top1_pct", key)] == pytest.approx(
        100 * aeq["int8_top1"])
    assert metrics[("minmax-quantizers.predictions_differ", key)] == int(
        np.sum(np.asarray(aeq["int8_predictions"]) != pb))
    md = built.markdown.read_text(encoding="utf-8")
    assert "## Calibration methods: accuracy drop vs float32" in md
    assert "Why the two Min-Max files differ:" in md
    assert "| variant | method | weights | calibration |" in md
    for name in ("methods", "clipped_ranges", "robustness"):
        png = built.out_dir / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"figures/{name}.png" in md


def test_ranges_table_marks_outliers_and_clipping(
        swept: tuple[Path, dict[str, Any], dict[str, Any]], built: report.ReportPaths) -> None:
    _, doc, _ = swept
    metrics = parse_html_metrics(built.html.read_text(encoding="utf-8"))
    text = built.html.read_text(encoding="utf-8")
    shown = 0
    for p in doc["points"]:
        if p["method"] == "minmax":
            assert p["ranges"] == []  # the converter records none: the grey band only
            continue
        for r in p["ranges"]:
            if r["io"]:
                continue
            key = f"{short_tensor(r['tensor'])} / {stats.variant_name(p)}"
            assert metrics[("ranges-table.minmax_max", key)] == pytest.approx(r["minmax_max"])
            assert metrics[("ranges-table.chosen_max", key)] == pytest.approx(r["max"])
            assert metrics[("ranges-table.clipped_pct", key)] == pytest.approx(
                100 * r["clipped_fraction"])
            # every method's range lies inside the global Min-Max range (ai-edge-quantizer's
            # own Min-Max is a moving average of per-sample ranges: inside too)
            assert r["minmax_min"] - 1e-6 <= r["min"] <= r["max"] <= r["minmax_max"] + 1e-6
            shown += 1
    assert shown >= 3 * 3
    pct = next(p for p in doc["points"] if p["method"] == "percentile:99.9")
    assert any(r["clipped"] for r in pct["ranges"])  # percentile clipped something
    outliers = [r for r in pct["ranges"] if r["outliers"] and not r["io"]]
    assert text.count(">yes</td>") >= len(outliers) * 3  # one mark per method row


def test_weight_ranges_table_is_each_variants_choice(
        swept: tuple[Path, dict[str, Any], dict[str, Any]], built: report.ReportPaths) -> None:
    """Per weighted layer and variant, the report shows the Min-Max weight range and the one
    the method chose, as the sweep recorded them; percentile clips, the Min-Max methods do
    not; the figure is there."""
    _, doc, _ = swept
    metrics = parse_html_metrics(built.html.read_text(encoding="utf-8"))
    shown = 0
    for p in doc["points"]:
        assert p["weight_ranges"], p["method"]  # every method records its weight ranges
        for r in p["weight_ranges"]:
            key = f"{short_tensor(r['layer'])} / {stats.variant_name(p)}"
            assert metrics[("weight-ranges-table.minmax_max_abs", key)] == pytest.approx(
                max(r["minmax_abs"]))
            assert metrics[("weight-ranges-table.chosen_max_abs", key)] == pytest.approx(
                max(r["chosen_abs"]))
            assert metrics[("weight-ranges-table.channel_spread", key)] == pytest.approx(
                max(r["channel_max_abs"]) / float(np.median(r["channel_max_abs"])))
            ratio = [c / m for c, m in zip(r["chosen_abs"], r["minmax_abs"])]
            if p["method"] in ("minmax", "aeq-minmax"):
                assert ratio == [1.0] * len(ratio) and not r["clipped"]
            assert all(x <= 1.0 + 1e-12 for x in ratio)
            shown += 1
    assert shown >= 4 * len(METHODS)
    pct = next(p for p in doc["points"] if p["method"] == "percentile:99.9")
    assert any(r["clipped"] for r in pct["weight_ranges"])
    png = built.out_dir / "figures" / "weight_ranges.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_robustness_table_is_the_documents_numbers(
        swept: tuple[Path, dict[str, Any], dict[str, Any]], built: report.ReportPaths) -> None:
    _, _, rob = swept
    metrics = parse_html_metrics(built.html.read_text(encoding="utf-8"))
    assert len(rob["models"]) == 2 + len(METHODS)  # float32, this int8, every variant
    names = [m["name"] for m in robustness_models(rob)]
    assert len(set(names)) == len(names)  # one row name per model
    ref = rob["models"][0]
    for name, m in zip(names, rob["models"]):
        for c in rob["corruptions"]:
            key = f"{name} / {c}"
            for s in rob["severities"]:
                assert metrics[(f"robustness-table.severity {s} (%)", key)] == pytest.approx(
                    100 * m["top1"][c][str(s)])
            if m["kind"] == "float32":
                assert ("robustness-table.gap vs float32 (pp)", key) not in metrics
                continue
            gap = 100 * np.mean([ref["top1"][c][str(s)] - m["top1"][c][str(s)]
                                 for s in rob["severities"]])
            assert metrics[("robustness-table.gap vs float32 (pp)", key)] == pytest.approx(
                gap, abs=1e-3)  # the document rounds to 4 decimals
    assert "## Robustness under corruptions" in built.markdown.read_text(encoding="utf-8")


def test_the_report_without_sweep_or_robustness_has_todays_sections(
        swept: tuple[Path, dict[str, Any], dict[str, Any]], tmp_path: Path) -> None:
    from test_report import make_run

    artifacts = tmp_path / "plain"
    shutil.copytree(swept[0], artifacts, ignore=shutil.ignore_patterns(
        "sweep", "sweep.json", "robustness.json"))
    paths = report.build_report(make_run(artifacts), artifacts_dir=artifacts,
                                out_dir=tmp_path / "out", layers=False)
    text = paths.html.read_text(encoding="utf-8")
    assert re.findall(r'<h2 id="([^"]+)"', text) == TODAY_SECTIONS
    assert not (tmp_path / "out" / "figures" / "methods.png").exists()
    embedded = json.loads(text.split('id="edgeq-report-data">', 1)[1].split("</script>")[0])
    assert "sections" not in embedded and embedded["sweep_points"] is None


def test_old_or_plain_sweeps_keep_the_old_section() -> None:
    # a sweep.json from before issue 12 (no methods, no predictions) and one of the
    # converter's Min-Max only: no method sections, the size x granularity table as before
    old = {"schema": "edgeq.sweep/1", "eval_count": 10, "points": [
        {"granularity": "per-tensor", "calibration_size": 10, "int8_top1": 0.9,
         "float32_top1": 0.9, "dir": "sweep/per-tensor-cal10"}]}
    assert methods_section(old) is None and ranges_section(old) is None
    assert plain_sweep(old) == old
    assert robustness_section(None) is None
    mixed = {**old, "methods": ["minmax", "mse"], "points": old["points"] + [
        {**old["points"][0], "method": "mse", "dir": "sweep/mse-per-tensor-cal10"}]}
    assert [p["dir"] for p in plain_sweep(mixed)["points"]] == ["sweep/per-tensor-cal10"]
    sec = methods_section(mixed)
    assert sec is not None and [r["variant"] for r in sec.tables[0].rows] == [
        "per-tensor-cal10", "mse-per-tensor-cal10"]
    assert "keeps no predictions" in sec.paragraphs[0]
