"""`edgeq report` on a fleet run (edgeq.fleet/1): real documents, read back out of the page.

The slow fixture measures for real: an Ansible inventory of two local boards (each its own
device directory and daemon) and a third board nobody listens for; `edgeq deploy --inventory`,
then `edgeq bench-remote --inventory --xnnpack on,off --json` prints the edgeq.fleet/1 document
(the third board fails alone with its one-line error). The report's table numbers are read
back with tests/report_html.py and compared with the compare documents; the heat map's grid
with speed-ups computed here from those documents; `edgeq profile` of board A gives the
per-layer figure. The fast tests use the committed example (docs/fleet-example/fleet.json
and profile.json, from a real run) the same way.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from edgeq.host import report_fleet
from report_html import html_resources, parse_html_metrics  # tests/report_html.py

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "fleet-example"
FAST = ("--eval-limit", "100", "--rounds", "2", "--runs-min", "10", "--run-s-min", "0.02")
LATENCIES = (("float32_latency_ms_p50", "float32", "latency_ms_p50"),
             ("float32_latency_ms_p90", "float32", "latency_ms_p90"),
             ("int8_latency_ms_p50", "int8", "latency_ms_p50"),
             ("int8_latency_ms_p90", "int8", "latency_ms_p90"))


def _edgeq(*args: str, env: dict[str, str], cwd: Path, ok: bool = True
           ) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "edgeq.host", *args], capture_output=True,
                         text=True, env=env, cwd=cwd, timeout=900)
    if ok:
        assert res.returncode == 0, f"edgeq {args[0]} failed:\n{res.stderr[-3000:]}"
    return res


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def fleet_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fleet's directory: device dirs, inventory and history.sqlite3."""
    return tmp_path_factory.mktemp("fleet")


@pytest.fixture(scope="module")
def real_fleet(tiny_artifacts: Path, fleet_base: Path) -> Iterator[dict[str, Any]]:
    """The edgeq.fleet/1 document `edgeq bench-remote --inventory` printed for an inventory of
    two local boards (own device dirs) and one unreachable board, x XNNPACK on/off."""
    base = fleet_base
    env = dict(os.environ, EDGEQ_HISTORY_DB=str(base / "history.sqlite3"), COLUMNS="160")
    homes = {name: base / name for name in ("board-a", "board-b")}
    inventory = base / "inventory.ini"
    inventory.write_text(
        "[lab]\n" + "".join(f"{n} ansible_connection=local edgeq_device_dir={h}\n"
                            for n, h in homes.items())
        + f"board-c ansible_host=127.0.0.1 ansible_port={_closed_port()} ansible_user=pi\n")
    try:
        deployed = _edgeq("deploy", str(tiny_artifacts), "--inventory", str(inventory),
                          env=env, cwd=base, ok=False)
        assert deployed.returncode == 1 and "1 of 3 boards failed" in deployed.stderr
        res = _edgeq("bench-remote", str(tiny_artifacts), "--inventory", str(inventory),
                     "--xnnpack", "on,off", "--seed", "3", *FAST, "--json", env=env, cwd=base,
                     ok=False)
        assert res.returncode == 1, res.stderr[-3000:]  # board-c failed, the others did not
        doc = json.loads(res.stdout)
        assert doc["schema"] == "edgeq.fleet/1" and doc["fleet_id"] is not None
        assert [b["ok"] for b in doc["boards"]] == [True, True, False]
        yield doc
    finally:
        for home in homes.values():
            subprocess.run([sys.executable, "-m", "edgeq.device", "--home", str(home), "stop"],
                           capture_output=True, timeout=120)


def _compares(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for board in doc["boards"]:
        for run in board["runs"]:
            if run.get("compare"):
                yield board["board"], report_fleet.cell_label(run["cell"]), run["compare"]


def check_report(doc: dict[str, Any], out: Path) -> None:
    """The written page's numbers are the documents' numbers; the heat map's cells are the
    speed-ups of the compare documents; a failed board shows its error."""
    paths = report_fleet.build_fleet_report(doc, out_dir=out)
    page = paths.html.read_text(encoding="utf-8")
    metrics = parse_html_metrics(page)
    seen = 0
    for board, setting, comp in _compares(doc):
        model = f"{board} / {setting}"
        m = comp["models"]
        for col, kind, key in LATENCIES:
            assert metrics[(f"fleet-table.{col}", model)] == m[kind][key]
        want = m["float32"]["latency_ms_p50"] / m["int8"]["latency_ms_p50"]
        assert want == pytest.approx(1.0 / comp["ratios"]["latency_ms_p50"])
        assert metrics[("fleet-table.int8_speedup_p50", model)] == pytest.approx(want)
        for kind in ("float32", "int8"):
            assert metrics[(f"fleet-table.{kind}_top1_pct", model)] == pytest.approx(
                100.0 * m[kind]["accuracy"])
        assert metrics[("fleet-table.run_id", model)] == comp["run_id"]
        seen += 1
    assert seen >= 2
    # the heat map's grid (embedded with the page) holds those same speed-ups
    data = json.loads(page.split('id="edgeq-report-data">', 1)[1].split("</script>", 1)[0])
    grid = data["grid"]
    assert grid["boards"] == [b["board"] for b in doc["boards"]]
    for board, setting, comp in _compares(doc):
        i, j = grid["boards"].index(board), grid["settings"].index(setting)
        m = comp["models"]
        assert grid["int8_speedup_p50"][i][j] == pytest.approx(
            m["float32"]["latency_ms_p50"] / m["int8"]["latency_ms_p50"])
        assert grid["int8_latency_ms_p50"][i][j] == m["int8"]["latency_ms_p50"]
    # a failed board: its row carries its one-line error, its grid row has no value
    for board in (b for b in doc["boards"] if not b["ok"]):
        i = grid["boards"].index(board["board"])
        assert grid["int8_speedup_p50"][i] == [None] * len(grid["settings"])
        row = next(r for r in data["rows"] if r["board"] == board["board"])
        assert board["error"]["message"] in row["error"] and "\n" not in row["error"]
        assert board["error"]["message"] in page and board["error"]["hint"] in page
        assert not any(model.startswith(board["board"] + " /") for _, model in metrics)
    # one self-contained page: the figure inline, nothing fetched
    imgs, urls = html_resources(page)
    assert imgs and all(s.startswith("data:image/png;base64,") for s in imgs)
    assert all(u.startswith("data:") for u in urls)
    assert [p.name for p in paths.figures] == ["fleet_heatmap.png"]
    assert paths.figures[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| board | setting |" in paths.markdown.read_text(encoding="utf-8")


# ------------------------------------------------------------------ real runs, measured here


def test_fleet_report_of_real_runs(real_fleet: dict[str, Any], tmp_path: Path) -> None:
    assert real_fleet["boards"][2]["error"]["code"] == "UnreachableHostError"
    check_report(real_fleet, tmp_path / "report")


def test_cli_fleet_result(real_fleet: dict[str, Any], tmp_path: Path) -> None:
    """`edgeq report --result FLEET.json` takes the fleet path; a failed board is no crash."""
    src = tmp_path / "fleet.json"
    src.write_text(json.dumps(real_fleet))
    env = dict(os.environ, EDGEQ_HISTORY_DB=str(tmp_path / "none.sqlite3"))
    res = _edgeq("report", "--result", str(src), "--out", str(tmp_path / "out"), "--json",
                 env=env, cwd=tmp_path)
    written = json.loads(res.stdout)
    page = Path(written["html"]).read_text(encoding="utf-8")
    assert "fleet-table" in page and "board-c" in page
    # --profile must be an edgeq.profile/1 document: one-line error, nothing written
    bad = _edgeq("report", "--result", str(src), "--profile", str(src), "--out",
                 str(tmp_path / "bad"), env=env, cwd=tmp_path, ok=False)
    assert bad.returncode == 1 and "not an edgeq.profile/1 document" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_cli_fleet_from_history(real_fleet: dict[str, Any], fleet_base: Path,
                                tmp_path: Path) -> None:
    """`edgeq report --fleet latest` / `--fleet ID` report the fleet run bench-remote stored."""
    from edgeq.host.history import History

    db = fleet_base / "history.sqlite3"
    fleet_id = real_fleet["fleet_id"]
    env = dict(os.environ, EDGEQ_HISTORY_DB=str(db))
    res = _edgeq("report", "--fleet", "latest", "--json", env=env, cwd=tmp_path)
    html_path = tmp_path / json.loads(res.stdout)["html"]  # default: reports/fleet-ID
    assert html_path.parent == tmp_path / "reports" / f"fleet-{fleet_id}"
    assert f"(fleet {fleet_id})" in html_path.read_text(encoding="utf-8")
    stored = History(db).get_fleet(fleet_id)
    check_report(stored, tmp_path / "again")
    _edgeq("report", "--fleet", str(fleet_id), "--out", str(tmp_path / "by-id"), env=env,
           cwd=tmp_path)
    assert (tmp_path / "by-id" / "report.html").is_file()
    none = _edgeq("report", "--fleet", "latest", env=dict(
        env, EDGEQ_HISTORY_DB=str(tmp_path / "empty.sqlite3")), cwd=tmp_path, ok=False)
    assert none.returncode == 2 and "no fleet runs yet" in none.stderr
    missing = _edgeq("report", "--fleet", str(fleet_id + 99), env=env, cwd=tmp_path, ok=False)
    assert missing.returncode == 1 and f"no fleet run {fleet_id + 99}" in missing.stderr


def test_profile_figure_in_the_fleet_report(real_fleet: dict[str, Any], tiny_artifacts: Path,
                                            tmp_path: Path) -> None:
    """--profile: a real `edgeq profile` document of board A; its figure (drawn by
    edgeq.host.profile) and its own check lines are in the page."""
    from edgeq.host import profile as prof_mod
    from edgeq.host.link import open_connection

    home = Path(real_fleet["boards"][0]["runs"][0]["compare"]["settings"]["device_dir"])
    with open_connection("local") as conn:
        prof = prof_mod.profile(conn, tiny_artifacts, device_dir=str(home), runs_min=20,
                                rounds=2)
    paths = report_fleet.build_fleet_report(real_fleet, out_dir=tmp_path / "r", profile=prof)
    page = paths.html.read_text(encoding="utf-8")
    assert [p.name for p in paths.figures] == ["fleet_heatmap.png", "profile.png"]
    assert 'id="fig-profile"' in page and 'id="fig-fleet_heatmap"' in page
    for line in prof_mod.check_lines(prof):
        assert line in paths.markdown.read_text(encoding="utf-8")
    with pytest.raises(report_fleet.FleetReportError, match="not an edgeq.profile/1"):
        report_fleet.build_fleet_report(real_fleet, out_dir=tmp_path / "bad", profile=real_fleet)
    assert not (tmp_path / "bad").exists()


# ------------------------------------------------------------------ the committed example


def test_example_report(tmp_path: Path) -> None:
    """docs/fleet-example/fleet.json (a real two-board run) reports its own numbers."""
    doc = json.loads((EXAMPLE / "fleet.json").read_text(encoding="utf-8"))
    check_report(doc, tmp_path / "example")


def test_example_profile_section(tmp_path: Path) -> None:
    """docs/fleet-example/profile.json (a real `edgeq profile`): H3's figure and check lines."""
    from edgeq.host.profile import check_lines

    doc = json.loads((EXAMPLE / "fleet.json").read_text(encoding="utf-8"))
    prof = json.loads((EXAMPLE / "profile.json").read_text(encoding="utf-8"))
    paths = report_fleet.build_fleet_report(doc, out_dir=tmp_path / "r", profile=prof)
    assert [p.name for p in paths.figures] == ["fleet_heatmap.png", "profile.png"]
    assert 'id="fig-profile"' in paths.html.read_text(encoding="utf-8")
    md = paths.markdown.read_text(encoding="utf-8")
    assert all(line in md for line in check_lines(prof))


def test_not_a_fleet_document() -> None:
    example = json.loads((EXAMPLE / "fleet.json").read_text(encoding="utf-8"))
    compare = example["boards"][0]["runs"][0]["compare"]
    with pytest.raises(report_fleet.FleetReportError, match="not a fleet run"):
        report_fleet.build_fleet_report(compare, out_dir=Path("unused"))
    with pytest.raises(report_fleet.FleetReportError, match="newer"):
        report_fleet.check_fleet(dict(example, schema="edgeq.fleet/2"))


def test_speedup_colours_are_centred_on_one() -> None:
    """The diverging map's limits are symmetric in the ratio, so 1.0x is its centre."""
    import numpy as np
    from edgeq.host.plots_fleet import speedup_limits

    example = json.loads((EXAMPLE / "fleet.json").read_text(encoding="utf-8"))
    values = report_fleet.fleet_grid(example).int8_speedup_p50
    lo, hi = speedup_limits(values)
    assert lo * hi == pytest.approx(1.0)
    finite = values[np.isfinite(values)]
    assert lo <= finite.min() and finite.max() <= hi


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="no chromium binary (Debian package `chromium`)")
def test_headless_chromium_renders_the_example(tmp_path: Path) -> None:
    """The committed example page renders offline: no console error, no fetch, not blank."""
    from matplotlib.image import imread

    shot = tmp_path / "shot.png"
    common = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
              "--disable-background-networking", "--disable-component-update",
              "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={tmp_path / 'p'}",
              "--enable-logging=stderr", "--v=0"]
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = subprocess.run(common + [f"--screenshot={shot}", "--window-size=1280,1600",
                                    (EXAMPLE / "report.html").resolve().as_uri()],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert "net::ERR" not in proc.stderr, "the page tried to load something"
    gray = imread(shot)[..., :3].mean(axis=2)
    assert gray.std() > 0.05 and (gray < 0.5).mean() > 0.005, "blank screenshot"


def test_emulated_boards_are_said_loudly(tmp_path: Path) -> None:
    """A board whose runs say `device.emulated` (QEMU in CI) gets the EMULATED banner."""
    doc = json.loads((EXAMPLE / "fleet.json").read_text(encoding="utf-8"))
    plain = report_fleet.build_fleet_report(doc, out_dir=tmp_path / "plain")
    assert 'id="emulated"' not in plain.html.read_text(encoding="utf-8")
    for run in doc["boards"][1]["runs"]:
        run["compare"]["device"].update(emulated=True, emulator="qemu-aarch64 (cortex-a72)")
    emu = report_fleet.build_fleet_report(doc, out_dir=tmp_path / "emu")
    page = emu.html.read_text(encoding="utf-8")
    assert 'id="emulated"' in page and f"EMULATED: {doc['boards'][1]['board']} ran" in page
    assert "EMULATED qemu-aarch64 (cortex-a72)" in page  # the boards table's column
