"""The cut models of edgeq profile, checked with real LiteRT on the tiny real artifacts.

A prefix model must compute exactly the source model's intermediate tensor (same kernels,
same data, same quantization), a single-op model exactly that op's output from its input,
and the zero-op model its input. Both sides run without XNNPACK so the full model's
intermediate tensors stay readable (experimental_preserve_all_tensors). The arithmetic of
the per-layer figures (differences, the check, the XNNPACK flags) is checked on results of
the device's own result form.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edgeq.device.runtime import load_model
from edgeq.host.profile import (
    CutModel,
    cut_models,
    layer_names,
    pair_layers,
    summarize_kind,
)
from edgeq.host.tflite_file import parse_tflite, read_tflite

KINDS = ("float32", "int8")


def _interp(path: Path, preserve: bool = False) -> Any:
    return load_model(path, xnnpack=False, preserve_all_tensors=preserve).interpreter


def _write(tmp_path: Path, cut: CutModel) -> Path:
    p = tmp_path / f"{cut.kind}-{cut.role}-{cut.op_index}.tflite"
    p.write_bytes(cut.data)
    return p


def _inputs(artifacts: Path, interp: Any, n: int = 3) -> list[np.ndarray]:
    """Real evaluation images in the model's input dtype (quantized with its own params)."""
    images = np.load(artifacts / "eval.npz")["images"][:n].astype(np.float32)
    d = interp.get_input_details()[0]
    out = []
    for img in images:
        x = img.reshape(d["shape"])
        if d["dtype"] != np.float32:
            scale, zero = d["quantization"]
            x = np.clip(np.round(x / scale + zero), -128, 127)
        out.append(x.astype(d["dtype"]))
    return out


def _run(interp: Any, x: np.ndarray) -> np.ndarray:
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])


@pytest.mark.parametrize("kind", KINDS)
def test_prefix_models_compute_the_source_intermediates(tiny_artifacts: Path, tmp_path: Path,
                                                        kind: str) -> None:
    src_path = tiny_artifacts / f"model_{kind}.tflite"
    src = read_tflite(src_path)
    cuts = cut_models(src_path, kind)
    full = _interp(src_path, preserve=True)
    prefixes = {c.op_index: c for c in cuts if c.role == "prefix"}
    assert sorted(prefixes) == list(range(len(src.operators)))
    for x in _inputs(tiny_artifacts, full):
        full.set_tensor(full.get_input_details()[0]["index"], x)
        full.invoke()
        for k, cut in prefixes.items():
            part = parse_tflite(cut.data)
            out_t = src.operators[k].outputs[0]
            # the same ops, the same output tensor with the same quantization parameters
            assert [o.name for o in part.operators] == [o.name for o in src.operators[:k + 1]]
            assert part.outputs == [out_t]
            a, b = part.tensors[out_t], src.tensors[out_t]
            assert (a.name, a.dtype, a.shape, a.scales, a.zero_points) == \
                (b.name, b.dtype, b.shape, b.scales, b.zero_points)
            interp = _interp(_write(tmp_path, cut))
            got = _run(interp, x)
            want = full.get_tensor(out_t)
            assert got.dtype == want.dtype and np.array_equal(got, want), (kind, k)


@pytest.mark.parametrize("kind", KINDS)
def test_single_op_and_zero_op_models(tiny_artifacts: Path, tmp_path: Path, kind: str) -> None:
    src_path = tiny_artifacts / f"model_{kind}.tflite"
    src = read_tflite(src_path)
    cuts = cut_models(src_path, kind)
    full = _interp(src_path, preserve=True)
    x = _inputs(tiny_artifacts, full, 1)[0]
    full.set_tensor(full.get_input_details()[0]["index"], x)
    full.invoke()
    base = next(c for c in cuts if c.role == "base")
    assert parse_tflite(base.data).operators == []
    assert np.array_equal(_run(_interp(_write(tmp_path, base)), x), x)
    whole = next(c for c in cuts if c.role == "whole")
    assert whole.data == src_path.read_bytes()  # the deployed file itself, not a re-pack
    singles = {c.op_index: c for c in cuts if c.role == "op"}
    assert singles, "every op of this CNN has one image-like activation input"
    for k, cut in singles.items():
        op = src.operators[k]
        interp = _interp(_write(tmp_path, cut))
        act = [i for i in op.inputs if i >= 0 and not src.tensors[i].is_constant][0]
        got = _run(interp, full.get_tensor(act))
        assert np.array_equal(got, full.get_tensor(op.outputs[0])), (kind, k, op.name)


def test_cuts_keep_only_the_weights_their_ops_use(tiny_artifacts: Path) -> None:
    src_path = tiny_artifacts / "model_float32.tflite"
    src = read_tflite(src_path)
    for cut in cut_models(src_path, "float32"):
        if cut.role not in ("prefix", "op"):
            continue
        part = parse_tflite(cut.data)
        ops = range(cut.op_index + 1) if cut.role == "prefix" else [cut.op_index]
        used = {i for k in ops for i in src.operators[k].inputs
                if i >= 0 and src.tensors[i].is_constant}
        assert {t.index for t in part.tensors if t.is_constant} == used
    whole = src_path.stat().st_size
    first = next(c for c in cut_models(src_path, "float32") if c.role == "prefix")
    assert len(first.data) < whole / 10  # conv1's weights only, not the dense layers'


def test_layer_names_and_pairing(tiny_artifacts: Path) -> None:
    f32 = layer_names(tiny_artifacts / "model_float32.tflite")
    i8 = layer_names(tiny_artifacts / "model_int8.tflite")
    rows = pair_layers(f32, i8)
    assert rows == [(k, k) for k in range(len(f32))]  # the converter keeps names and order


# -- pure arithmetic (no TensorFlow, no model) ------------------------------------------------


def test_pairing_leaves_an_op_one_side_lacks_alone() -> None:
    f32 = [{"op": "CONV_2D", "tensor": "a"}, {"op": "SOFTMAX", "tensor": "b"}]
    i8 = [{"op": "QUANTIZE", "tensor": "q"}, {"op": "CONV_2D", "tensor": "a"},
          {"op": "SOFTMAX", "tensor": "b"}, {"op": "DEQUANTIZE", "tensor": "d"}]
    assert pair_layers(f32, i8) == [(None, 0), (0, 1), (1, 2), (None, 3)]


def _fake_cuts(n: int) -> list[CutModel]:
    cuts = [CutModel("int8", "whole", None, b"whole"), CutModel("int8", "base", None, b"base")]
    cuts += [CutModel("int8", "prefix", k, f"p{k}".encode()) for k in range(n)]
    cuts += [CutModel("int8", "op", k, f"o{k}".encode()) for k in range(n)]
    return cuts


def _result(ms: float, delegated: int, rounds: tuple[float, ...] = ()) -> dict[str, Any]:
    return {"latency_ms_p50": ms, "delegated_nodes": delegated, "total_nodes": 3,
            "latency_ms_round_p50": list(rounds or (ms,)), "runs": 100}


def test_differences_check_and_xnnpack_flags() -> None:
    cuts = _fake_cuts(3)
    ms = {"whole": 1.05, "base": 0.05, "p0": 0.35, "p1": 0.30, "p2": 1.02,
          "o0": 0.30, "o1": 0.10, "o2": 0.90}
    nodes = {"whole": 2, "base": 0, "p0": 1, "p1": 2, "p2": 2, "o0": 1, "o1": 1, "o2": 0}
    by_sha = {}
    for c in cuts:
        key = c.role if c.op_index is None else f"{c.role[0]}{c.op_index}"
        by_sha[c.sha256] = _result(ms[key], nodes[key], (1.0, 1.1) if key == "whole" else ())
    layers, totals = summarize_kind(cuts, by_sha)
    assert [round(v["ms"], 6) for v in layers.values()] == [0.30, -0.05, 0.72]  # not clamped
    assert [v["xnnpack"] for v in layers.values()] == [True, True, False]
    assert [v["xnnpack_isolated"] for v in layers.values()] == [True, True, False]
    assert totals["sum_layers_ms"] == pytest.approx(1.02 - 0.05)  # telescoped
    assert totals["whole_net_ms"] == pytest.approx(1.0)
    assert totals["tolerance_ms"] == pytest.approx(0.1)
    assert totals["within_tolerance"] is True
    assert totals["sum_isolated_ms"] == pytest.approx(0.25 + 0.05 + 0.85)
    assert totals["isolated_within_tolerance"] is False  # 1.15 vs 1.0: outside 0.1
    assert totals["xnnpack_nodes"] == 2 and totals["xnnpack_consistent"] is True
    assert totals["whole_round_spread_ms"] == pytest.approx(0.1)
    # a last prefix that costs more than the whole file fails the check
    by_sha[cuts[4].sha256]["latency_ms_p50"] = 1.30
    assert summarize_kind(cuts, by_sha)[1]["within_tolerance"] is False
