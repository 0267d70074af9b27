"""What a person sees: native (C++) log lines of the converter and LiteRT stay out of the
terminal unless --debug is given, and text from outside prints intact (rich markup escaped).

The native-log tests run the real `edgeq` in a subprocess (the lines are written by C++
straight to file descriptor 2, so only a real process shows whether they get through) on the
session's real artifacts, without TF_CPP_MIN_LOG_LEVEL in the environment, as a user runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from edgeq.host.cli import main

CONVERTER_LINE = "fully_quantize: 0"
LITERT_LINE = "Created TensorFlow Lite XNNPACK delegate"


def _edgeq(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["COLUMNS"] = "200"
    return subprocess.run([sys.executable, "-m", "edgeq.host", *args], capture_output=True,
                          text=True, env=env, timeout=600)


def test_quantize_keeps_the_converter_log_out_unless_debug(tiny_artifacts: Path,
                                                           tmp_path: Path) -> None:
    argv = ["quantize", str(tiny_artifacts), "--out", str(tmp_path), "-n", "20",
            "--eval-limit", "10"]
    quiet = _edgeq(*argv)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "% of float32" in quiet.stdout
    assert CONVERTER_LINE not in quiet.stderr + quiet.stdout
    loud = _edgeq("--debug", *argv)
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert CONVERTER_LINE in loud.stderr


def test_evaluate_keeps_the_litert_log_out_unless_debug(tiny_artifacts: Path) -> None:
    quiet = _edgeq("evaluate", str(tiny_artifacts), "--limit", "100")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "agreement" in quiet.stdout
    assert LITERT_LINE not in quiet.stderr + quiet.stdout
    assert quiet.stderr.strip() == ""  # nothing else leaks either (no bar off a terminal)
    loud = _edgeq("--debug", "evaluate", str(tiny_artifacts), "--limit", "100")
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert LITERT_LINE in loud.stderr


def test_errors_print_outside_text_intact(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    odd = tmp_path / "[pi.local]:2222" / "[bold]model.tflite"
    with pytest.raises(SystemExit) as exc:
        main(["inspect", str(odd)])
    assert exc.value.code == 1
    err = capsys.readouterr().err.replace("\n", "")
    assert "[pi.local]:2222" in err and "[bold]model.tflite" in err


def test_render_escapes_host_names(capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeq.host.cli import render

    monkeypatch.setattr(render.console, "width", 250)  # no cell cut short

    rows = [{"run_id": 7, "time_utc": "2024-01-01T00:00:00Z", "host": "[pi.local]:2222",
             "model_name": "[red]m", "machine": "aarch64", "emulated": False,
             "float32_accuracy": 0.99, "int8_accuracy": 0.98, "agreement": 0.99,
             "float32_latency_ms_p50": 1.0, "int8_latency_ms_p50": 0.5, "threads": 1,
             "xnnpack": True}]
    render.history(rows, Path("/tmp/[h].db"))
    out = capsys.readouterr().out
    assert "[pi.local]:2222" in out and "[red]m" in out and "[h].db" in out


_FAKE_NATIVE = """
import os, sys
import edgeq.host.evaluate as library

def evaluate(*args, **kwargs):  # stands in for C++ code writing to fd 2, then failing or not
    os.write(2, b"native: hello from fd 2\\n")
    if sys.argv[1] == "fail":
        raise RuntimeError("the runtime fell over")
    return {"models": {}}

library.evaluate = evaluate
import edgeq.host.cli.render as render
render.evaluated = lambda result: print("rendered")
from edgeq.host.cli import main
main(sys.argv[2:] + ["evaluate", "unused-dir"])
"""


@pytest.mark.parametrize("debug", [False, True])
def test_fd2_text_is_captured_and_replayed_when_the_call_fails(debug: bool) -> None:
    flags = ["--debug"] if debug else []
    ok = subprocess.run([sys.executable, "-c", _FAKE_NATIVE, "ok", *flags],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "rendered" in ok.stdout, ok.stderr
    assert ("native: hello from fd 2" in ok.stderr) is debug
    bad = subprocess.run([sys.executable, "-c", _FAKE_NATIVE, "fail", *flags],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "the runtime fell over" in bad.stderr
    assert "native: hello from fd 2" in bad.stderr  # replayed (or, with --debug, never hidden)


def test_signed_points_never_show_minus_zero() -> None:
    from edgeq.host.cli.render import signed_points

    assert signed_points(-0.0) == "+0.00 points"
    assert signed_points(-0.001) == "+0.00 points"  # rounds to zero
    assert signed_points(0.25) == "+0.25 points" and signed_points(-1.5) == "-1.50 points"


def _fleet_doc() -> dict:
    def run(threads: int, xnnpack: bool, f32: float, i8: float, run_id: int) -> dict:
        models = {"float32": {"latency_ms_p50": f32, "accuracy": 0.99},
                  "int8": {"latency_ms_p50": i8, "accuracy": 0.985}}
        return {"cell": {"threads": threads, "xnnpack": xnnpack, "runtime": None},
                "run_id": run_id, "compare": {"models": models}, "error": None}

    cells = [{"threads": 2, "xnnpack": True, "runtime": None},
             {"threads": 1, "xnnpack": False, "runtime": None}]
    return {"schema": "edgeq.fleet/1", "fleet_id": 3, "created_utc": "2026-12-02T08:00:00Z",
            "artifacts": "/a", "seed": 5, "ok": False, "elapsed_s": 12.0,
            "matrix": {"threads": [1, 2], "xnnpack": [False, True], "runtime": [None]},
            "boards": [
                {"board": "[pi4]a", "target": "pi@10.0.0.5", "groups": ["pi4"], "ok": True,
                 "error": None, "elapsed_s": 11.0, "order": cells,
                 "runs": [run(2, True, 2.0, 1.0, 8), run(1, False, 3.0, 4.0, 9)]},
                {"board": "gone", "target": "192.0.2.1", "groups": [], "ok": False,
                 "elapsed_s": 3.0, "order": cells, "runs": [],
                 "error": {"code": "UnreachableHostError", "message": "no route to [gone]",
                           "hint": "is it on?"}}]}


def test_fleet_table_shows_board_by_setting(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeq.host.cli import render

    monkeypatch.setattr(render.console, "width", 200)
    monkeypatch.setattr(render.err_console, "width", 200)
    render.fleet(_fleet_doc())
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert "fleet run 3: 2 boards x 4 settings, seed 5" in captured.out
    first = next(ln for ln in lines if "1 thr no-xnnpack" in ln)
    second = next(ln for ln in lines if "2 thr xnnpack" in ln)
    assert "[pi4]a" in first and "0.75x" in first and "99.00/98.50" in first and " 9 " in first
    assert "2.00x" in second  # float32 p50 / int8 p50
    assert lines.index(first) < lines.index(second)  # rows in the matrix's order, not run order
    assert "gone" in captured.out and "failed" in captured.out
    assert "gone: no route to [gone] (hint: is it on?)" in captured.err
    assert "[pi4]a: 2 thr xnnpack > 1 thr no-xnnpack" in captured.err  # the recorded order


def test_fleet_list(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeq.host.cli import render

    monkeypatch.setattr(render.console, "width", 200)
    render.fleets([{"fleet_id": 4, "created_utc": "2026-12-02T08:00:00Z", "seed": 9,
                    "matrix": {"threads": [1, 4], "xnnpack": [True, False],
                               "runtime": ["ai-edge-litert", None]},
                    "ok": False, "boards": 3, "boards_ok": 2, "artifacts": "/a", "runs": 16}],
                  Path("/tmp/h.db"))
    out = capsys.readouterr().out
    assert "2026-12-02 08:00:00" in out and "2/3" in out and "1,4" in out
    assert "on,off" in out and "ai-edge-litert,default" in out and " 16 " in out


def test_history_fleet_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """history fleets / fleet / fleet-compare on a real history file, table and JSON."""
    import json

    from edgeq.host.history import History

    h = History(tmp_path / "h.sqlite3")
    doc = _fleet_doc()
    for board in doc["boards"]:
        for run in board["runs"]:
            compare = dict(run["compare"], schema="edgeq.compare/1", host=board["board"],
                           time_utc="2026-12-02T08:00:00Z", settings=run["cell"])
            run["run_id"] = h.add(compare)
    first, second = h.store_fleet(doc), h.store_fleet(doc)
    db = ["history", "--db", str(h.path)]
    main([*db, "fleets", "--json"])
    assert [r["fleet_id"] for r in json.loads(capsys.readouterr().out)] == [second, first]
    main([*db, "fleet", "latest", "--json"])
    assert json.loads(capsys.readouterr().out)["fleet_id"] == second
    main([*db, "fleet-compare", str(first), "latest", "--json"])
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert len(rows) == 2 and all(r["int8_p50_b_over_a"] == 1.0 for r in rows)
    main([*db, "fleet-compare", str(first), str(second)])
    out = capsys.readouterr().out
    assert f"fleet run {first} vs fleet run {second}" in out and "1.00x" in out
    with pytest.raises(SystemExit) as info:
        main([*db, "fleet", "nine"])
    assert info.value.code == 2 and "fleet must be a number or 'latest'" in \
        capsys.readouterr().err
