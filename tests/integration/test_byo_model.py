"""Bring your own model: a user's classifier and data (not MNIST) through the whole CLI.

Data and models come from tests/integration/byo_data.py: scikit-learn's bundled 8x8 digits
(1,797 real scans, offline) as an image folder and .npz files, a colour variant (RGB 16x16,
4 classes) and small Keras models trained here. Every stage runs as the user runs it, as a
subprocess of the real CLI: quantize -> evaluate --json -> deploy --host local (a temporary
device directory, the real daemon) -> bench-remote --json -> report, and `edgeq import` on a
pair of .tflite files made by tf.lite.TFLiteConverter directly. The accuracies each stage
reports must EQUAL an independent evaluation of the same .tflite files on the same source
data: ai_edge_litert's Interpreter used directly, the input preprocessed and quantized here
with the file's own scale and zero point (byo_data.litert_evaluate).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from byo_data import (
    COLOUR_NAMES,
    DIGIT_NAMES,
    colour_digits,
    convert_pair,
    digits,
    litert_evaluate,
    read_folder,
    stored_order,
    train_classifier,
    write_folder,
    write_npz,
)
from edgeq.device.evaldata import load_eval_data

SCALE = 1.0 / 255.0  # the digits model takes pixels scaled to 0..1
EVAL_LIMIT = 200
FAST = ["--runs-min", "10", "--run-s-min", "0.02", "--rounds", "2"]

pytestmark = pytest.mark.slow


def _edgeq(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "edgeq.host", *args], capture_output=True,
                       text=True, env=env, timeout=600)
    if ok:
        assert r.returncode == 0, f"edgeq {' '.join(args)} failed:\n{r.stderr[-3000:]}"
    return r


def _json(env: dict[str, str], *args: str) -> Any:
    return json.loads(_edgeq(env, *args, "--json").stdout)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("byo-env")
    return dict(os.environ, EDGEQ_HISTORY_DB=str(base / "history.sqlite3"), COLUMNS="160",
                TF_CPP_MIN_LOG_LEVEL="2")


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> Iterator[Path]:
    """One temporary device directory; its daemon (started by deploy) is stopped at the end."""
    home = tmp_path_factory.mktemp("byo-device") / "edgeq"
    yield home
    subprocess.run([sys.executable, "-m", "edgeq.device", "--home", str(home), "stop"],
                   capture_output=True, env=env, timeout=60)


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The digits as the user has them: a trained model, calibration .npz, eval image folder."""
    base = tmp_path_factory.mktemp("digits")
    d = digits()
    return {
        "model": train_classifier(d["train"], 10, scale_inside=False, epochs=12,
                                  out=base / "digits.keras"),
        "calib": write_npz(base / "calib.npz", d["calib"]),
        "eval_folder": write_folder(base / "eval", d["eval"], DIGIT_NAMES),
        "eval_npz": write_npz(base / "eval.npz", d["eval"], DIGIT_NAMES),
        "base": base,
    }


def _bench_remote(env: dict[str, str], art: Path, device: Path) -> dict[str, Any]:
    deployed = _json(env, "deploy", str(art), "--host", "local", "--device-dir", str(device))
    assert deployed["daemon"].startswith("running"), deployed
    return _json(env, "bench-remote", str(art), "--host", "local", "--device-dir", str(device),
                 "--eval-limit", str(EVAL_LIMIT), *FAST)


def _check_stage(what: str, got: dict[str, Any], want: Any, n: int) -> None:
    """`got` (top1/top5/predictions of one model at one stage) equals `want` on the first n."""
    p = np.asarray(want.predictions[:n])
    assert got["predictions"] == p.tolist(), what


def test_digits_quantize_evaluate_deploy_bench_report(
        digits_files: dict[str, Path], env: dict[str, str], device: Path,
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    art = tmp_path / "digits"
    manifest = _json(env, "quantize", str(art), "--model", str(digits_files["model"]),
                     "--calibration-data", str(digits_files["calib"]),
                     "--eval-data", str(digits_files["eval_folder"]),
                     "--input-scale", repr(SCALE))
    assert manifest["class_names"] == list(DIGIT_NAMES) and manifest["num_classes"] == 10
    assert manifest["models"]["int8"]["input"]["shape"][1:] == [8, 8, 1]

    # the independent evaluation: the PNGs read back with Pillow and scaled here, in the order
    # edgeq stored them (each stored image matched to one of ours with the same values)
    raw, labels = read_folder(digits_files["eval_folder"], DIGIT_NAMES)
    inputs = raw.astype(np.float32) * np.float32(SCALE)
    with np.load(art / "eval.npz") as npz:  # what edgeq stored: uint8 pixels + the map
        assert npz["pixels"].dtype == np.uint8 and "images" not in npz.files
    stored, stored_labels = load_eval_data(art / "eval.npz")  # the same model-ready values
    assert stored.dtype == np.float32
    order = stored_order(stored, stored_labels, inputs, labels)
    inputs, labels = inputs[order], labels[order]
    want = {k: litert_evaluate(art / f"model_{k}.tflite", inputs, labels)
            for k in ("float32", "int8")}

    ev = _json(env, "evaluate", str(art))
    assert ev["class_names"] == list(DIGIT_NAMES)
    for kind in ("float32", "int8"):
        m = ev["models"][kind]
        assert m["count"] == len(labels) == 497
        assert m["top1"] == want[kind].top1 and m["top5"] == want[kind].top5, kind
        _check_stage(f"evaluate {kind}", m, want[kind], len(labels))
    assert want["float32"].top1 > 0.8  # a real classifier, not chance

    doc = _bench_remote(env, art, device)
    n = EVAL_LIMIT
    for kind in ("float32", "int8"):
        m = doc["models"][kind]
        acc = m["result"]["accuracy"]
        top1_n = float(np.mean(want[kind].predictions[:n] == labels[:n]))
        assert m["accuracy"] == top1_n and m["eval_count"] == n, kind
        independent5 = litert_evaluate(art / f"model_{kind}.tflite", inputs[:n], labels[:n])
        assert m["accuracy_top5"] == independent5.top5, kind
        assert acc["num_classes"] == 10 and len(acc["per_class_top1"]) == 10
        _check_stage(f"bench-remote {kind}", acc, want[kind], n)

    out = tmp_path / "report"
    paths = _json(env, "report", "--out", str(out))
    html = Path(paths["html"]).read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="edgeq-report-data">(.*?)</script>', html, re.S)
                      .group(1).replace("<\\/", "</"))
    for kind in ("float32", "int8"):
        s = data["summary"]["models"][kind]
        assert s["accuracy"] == doc["models"][kind]["accuracy"]
        assert s["accuracy_top5"] == doc["models"][kind]["accuracy_top5"]
        assert len(s["per_class"]) == 10
    assert data["summary"]["class_names"] == list(DIGIT_NAMES)
    assert 'id="per-class-table"' in html and "7-seven" in html and "Top-5 (%)" in html
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| 9-nine |" in md and "8x8x1" in md
    assert (out / "figures" / "per_class.png").is_file()
    with capsys.disabled():
        print(f"\n[byo digits] independent LiteRT top-1 float32 {want['float32'].top1:.4f} "
              f"int8 {want['int8'].top1:.4f}, top-5 float32 {want['float32'].top5:.4f} "
              f"int8 {want['int8'].top5:.4f} on {len(labels)} images; evaluate top-1 "
              f"{ev['models']['float32']['top1']:.4f}/{ev['models']['int8']['top1']:.4f}; "
              f"bench-remote (first {n}) top-1 {doc['models']['float32']['accuracy']:.4f}/"
              f"{doc['models']['int8']['accuracy']:.4f} top-5 "
              f"{doc['models']['float32']['accuracy_top5']:.4f}/"
              f"{doc['models']['int8']['accuracy_top5']:.4f}; report "
              f"{data['summary']['models']['float32']['accuracy']:.4f}/"
              f"{data['summary']['models']['int8']['accuracy']:.4f}")


def test_colour_images_quantize_evaluate_bench(env: dict[str, str], device: Path,
                                               tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    """RGB 16x16, 4 classes: raw pixels in (the model rescales inside), calibration from a
    folder of RGB PNGs, evaluation from an .npz naming its classes; no top-5 (4 classes)."""
    c = colour_digits()
    model = train_classifier(c["train"], 4, scale_inside=True, epochs=10,
                             out=tmp_path / "colour.keras")
    calib = write_folder(tmp_path / "calib", c["calib"], COLOUR_NAMES)
    ev_npz = write_npz(tmp_path / "eval.npz", c["eval"], COLOUR_NAMES)
    art = tmp_path / "colour"
    manifest = _json(env, "quantize", str(art), "--model", str(model),
                     "--calibration-data", str(calib), "--eval-data", str(ev_npz))
    assert manifest["models"]["int8"]["input"]["shape"][1:] == [16, 16, 3]
    assert manifest["class_names"] == list(COLOUR_NAMES)
    images, labels = c["eval"].images, c["eval"].labels
    with np.load(art / "eval.npz") as npz:  # identity preprocessing: the raw pixels
        assert npz["images"].dtype == np.uint8 and npz["images"].shape[1:] == (16, 16, 3)
        np.testing.assert_array_equal(npz["images"], images)
    want = {k: litert_evaluate(art / f"model_{k}.tflite", images.astype(np.float32), labels)
            for k in ("float32", "int8")}
    ev = _json(env, "evaluate", str(art))
    for kind in ("float32", "int8"):
        m = ev["models"][kind]
        assert m["top1"] == want[kind].top1 and m["top5"] is None, kind
        assert len(m["per_class_top1"]) == 4
        _check_stage(f"evaluate {kind}", m, want[kind], len(labels))
    assert want["float32"].top1 > 0.8
    doc = _bench_remote(env, art, device)
    n = min(EVAL_LIMIT, len(labels))
    for kind in ("float32", "int8"):
        m = doc["models"][kind]
        assert m["accuracy"] == float(np.mean(want[kind].predictions[:n] == labels[:n]))
        assert m["accuracy_top5"] is None and m["result"]["accuracy"]["num_classes"] == 4
        _check_stage(f"bench-remote {kind}", m["result"]["accuracy"], want[kind], n)
    table = _edgeq(env, "bench-remote", str(art), "--host", "local", "--device-dir",
                   str(device), "--eval-limit", "20", "--no-history", *FAST).stdout
    with capsys.disabled():
        print(f"\n[byo colour] independent LiteRT top-1 float32 {want['float32'].top1:.4f} "
              f"int8 {want['int8'].top1:.4f} on {len(labels)} images; evaluate "
              f"{ev['models']['float32']['top1']:.4f}/{ev['models']['int8']['top1']:.4f}; "
              f"bench-remote (first {n}) {doc['models']['float32']['accuracy']:.4f}/"
              f"{doc['models']['int8']['accuracy']:.4f}")
    assert "Top-1 (%)" in table and "Top-5" not in table  # the human table: no top-5 row


def test_import_a_pair_converted_elsewhere(digits_files: dict[str, Path], env: dict[str, str],
                                           device: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    """Two .tflite files from tf.lite.TFLiteConverter (not edgeq) -> import -> evaluate ->
    deploy -> bench-remote, with the evaluation set as an .npz of raw pixels + --input-scale."""
    d = digits()
    calib = d["calib"].images.astype(np.float32)[..., None] * np.float32(SCALE)
    f32, i8 = convert_pair(digits_files["model"], calib, tmp_path)
    art = tmp_path / "imported"
    manifest = _json(env, "import", str(f32), str(i8), "--eval-data",
                     str(digits_files["eval_npz"]), "--input-scale", repr(SCALE),
                     "--out", str(art))
    assert manifest["class_names"] == list(DIGIT_NAMES)
    images, labels = d["eval"].images, d["eval"].labels
    inputs = images.astype(np.float32) * np.float32(SCALE)
    want = {"float32": litert_evaluate(f32, inputs, labels),
            "int8": litert_evaluate(i8, inputs, labels)}
    ev = _json(env, "evaluate", str(art))
    for kind in ("float32", "int8"):
        m = ev["models"][kind]
        assert m["top1"] == want[kind].top1 and m["top5"] == want[kind].top5, kind
        _check_stage(f"evaluate {kind}", m, want[kind], len(labels))
    doc = _bench_remote(env, art, device)
    n = EVAL_LIMIT
    for kind in ("float32", "int8"):
        m = doc["models"][kind]
        assert m["accuracy"] == float(np.mean(want[kind].predictions[:n] == labels[:n]))
        _check_stage(f"bench-remote {kind}", m["result"]["accuracy"], want[kind], n)
    assert doc["settings"]["deployment"]["int8"] == manifest["models"]["int8"]["sha256"]
    with capsys.disabled():
        print(f"\n[byo import] independent LiteRT top-1 float32 {want['float32'].top1:.4f} "
              f"int8 {want['int8'].top1:.4f}; evaluate "
              f"{ev['models']['float32']['top1']:.4f}/{ev['models']['int8']['top1']:.4f}; "
              f"bench-remote (first {n}) {doc['models']['float32']['accuracy']:.4f}/"
              f"{doc['models']['int8']['accuracy']:.4f}")
