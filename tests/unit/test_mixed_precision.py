"""--float-fallback N and --activations int16 on the session's small real model: the declared
exceptions to full-integer are recorded and verified exactly, and the variants run in LiteRT
through the host evaluator (the board's runtime adapter), int16 I/O included."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from edgeq.host.tflite_file import declared_exception_problems, full_integer_problems, read_tflite

pytestmark = pytest.mark.slow  # converts real models (getfixturevalue hides it from conftest)


@pytest.fixture(scope="module")
def fallback(tiny_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from edgeq.host.quantize import quantize

    d = tmp_path_factory.mktemp("fb") / "fb2"
    return {"dir": d, "manifest": quantize(tiny_artifacts, out_dir=d, calibration_size=40,
                                           eval_limit=200, float_fallback=2)}


@pytest.fixture(scope="module")
def int16(tiny_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from edgeq.host.quantize import quantize

    d = tmp_path_factory.mktemp("a16") / "a16"
    return {"dir": d, "manifest": quantize(tiny_artifacts, out_dir=d, calibration_size=40,
                                           eval_limit=200, activations="int16")}


def test_float_fallback_keeps_exactly_the_declared_layers_in_float(fallback: dict) -> None:
    m = fallback["manifest"]
    layers = m["precision"]["float_layers"]
    assert len(layers) == 2 and m["precision"]["float_fallback"] == 2
    assert m["calibration"]["method"] == "aeq-minmax"  # minmax + fallback: ai-edge-quantizer
    f = read_tflite(fallback["dir"] / "model_int8.tflite")
    assert declared_exception_problems(f, float_layers=layers) == []
    # not full-integer, and the manifest says so
    assert full_integer_problems(f) and m["full_integer"]["ok"] is False
    # a declaration that leaves out one float layer is caught
    assert declared_exception_problems(f, float_layers=layers[:1])
    assert declared_exception_problems(f, float_layers=[])
    # the two layers are the ones with the largest recorded quantization error
    ranges = [r for r in m["calibration"]["ranges"] if not r["io"]]
    worst = sorted(ranges, key=lambda r: r["noise"], reverse=True)
    assert set(layers) <= {r["tensor"] for r in worst[:len(layers) + 2]}


def test_int16_is_16x8_with_int16_io(int16: dict) -> None:
    m = int16["manifest"]
    f = read_tflite(int16["dir"] / "model_int8.tflite")
    assert f.tensors[f.inputs[0]].dtype == "INT16" and f.tensors[f.outputs[0]].dtype == "INT16"
    assert declared_exception_problems(f, activations="int16") == []
    assert m["precision"]["activations"] == "int16"
    assert m["converter"]["inference_input_type"] == "int16"
    ws = _weights(f)
    assert ws and {w.values.dtype.name for w in ws} == {"int8"}


def test_the_exceptions_check_refuses_an_undeclared_int16_or_full_int8(
        int16: dict, tiny_artifacts: Path) -> None:
    f16 = read_tflite(int16["dir"] / "model_int8.tflite")
    assert declared_exception_problems(f16, activations="int8")
    f8 = read_tflite(tiny_artifacts / "model_int8.tflite")
    assert declared_exception_problems(f8, activations="int16")
    assert declared_exception_problems(f8, activations="int8") == []


@pytest.mark.parametrize("which", ["fallback", "int16"])
def test_variants_evaluate_with_litert(which: str, request: pytest.FixtureRequest) -> None:
    from edgeq.host.evaluate import evaluate

    v = request.getfixturevalue(which)
    result = evaluate(v["dir"], limit=200)
    assert result["models"]["int8"]["count"] == 200
    assert result["agreement"] > 0.8 and result["models"]["int8"]["top1"] > 0.5


def test_bad_mixed_precision_options(tiny_artifacts: Path, tmp_path: Path) -> None:
    from edgeq.host.quantize import QuantizeError, quantize

    with pytest.raises(QuantizeError, match="unknown activation type"):
        quantize(tiny_artifacts, out_dir=tmp_path / "x", activations="int4")
    with pytest.raises(QuantizeError, match="float-fallback"):
        quantize(tiny_artifacts, out_dir=tmp_path / "y", float_fallback=-1)
    with pytest.raises(QuantizeError, match="layers that can stay in float"):
        quantize(tiny_artifacts, out_dir=tmp_path / "z", calibration_size=10, eval_limit=20,
                 float_fallback=999)
    assert not (tmp_path / "z" / "manifest.json").exists()


def _weights(f: Any) -> list:
    from edgeq.host.tflite_file import weight_tensors

    return weight_tensors(f.path, f)
